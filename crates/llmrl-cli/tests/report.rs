//! `llmrl simulate --report`: the page is self-contained, has a chart (with data, axes and a
//! legend) for each view, and headless Chromium renders it (DOM dump and screenshot).
//!
//! Needs Chromium at /usr/bin/chromium (`apt-get install -y chromium`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";
/// Chromium is killed after this long: the test never hangs on it.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// A fresh directory under the system's temporary directory, removed when the test passes
/// (kept for a look when it fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "llmrl-report-{name}-{}-{nanos}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("cannot create a temporary directory");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs the real binary on a generated workload; returns the report's path and the summary.
fn simulate(dir: &Path) -> (PathBuf, Value) {
    let report = dir.join("report.html");
    let output = Command::new(env!("CARGO_BIN_EXE_llmrl"))
        .args(["simulate", "--generate", "--jobs", "2000", "--minutes", "5"])
        .arg("--json")
        .arg("--report")
        .arg(&report)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run llmrl");
    assert!(
        output.status.success(),
        "llmrl simulate failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value =
        serde_json::from_slice(&output.stdout).expect("--json prints the summary as JSON");
    assert!(report.is_file(), "no report at {}", report.display());
    (report, summary)
}

/// The models of the summary, by name.
fn models(summary: &Value) -> Vec<String> {
    summary["models"]
        .as_array()
        .expect("the summary lists the models")
        .iter()
        .map(|m| m["model"].as_str().expect("a model's name").to_owned())
        .collect()
}

/// The charts every report has for this workload (the bundled configuration's models all have
/// token and request limits, and no concurrency limit).
fn expected_charts(summary: &Value) -> Vec<String> {
    let mut names: Vec<String> = ["jobs", "waits", "escalations", "slots", "ratios"]
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    for model in models(summary) {
        names.push(format!("tokens-per-minute:{model}"));
        names.push(format!("requests-per-minute:{model}"));
    }
    names
}

/// Each `<svg …>…</svg>` of the page, by its `data-chart`.
fn charts(html: &str) -> Vec<(String, &str)> {
    let mut charts = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..]
            .find("</svg>")
            .map(|e| start + e + "</svg>".len())
            .expect("an <svg> is closed");
        let svg = &rest[start..end];
        let open = &svg[..svg.find('>').expect("an <svg> tag ends")];
        let name = attribute(open, "data-chart").unwrap_or_default();
        charts.push((name.to_owned(), svg));
        rest = &rest[end..];
    }
    charts
}

/// The value of `name="…"` in `tag`.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

/// Each element `<tag class="class" …>` of `svg`: its opening tag.
fn elements<'a>(svg: &'a str, tag: &str, class: &str) -> Vec<&'a str> {
    let key = format!("<{tag} class=\"{class}\"");
    svg.match_indices(&key)
        .map(|(i, _)| &svg[i..i + svg[i..].find('>').unwrap_or(0)])
        .collect()
}

/// Bars with a height.
fn bars(svg: &str) -> usize {
    elements(svg, "rect", "bar")
        .iter()
        .filter(|r| {
            attribute(r, "height")
                .and_then(|h| h.parse::<f64>().ok())
                .is_some_and(|h| h > 0.0)
        })
        .count()
}

/// Lines with at least one segment.
fn lines(svg: &str) -> usize {
    elements(svg, "path", "line")
        .iter()
        .filter(|p| attribute(p, "d").is_some_and(|d| d.matches(['L', 'H', 'V']).count() >= 1))
        .count()
}

/// `n` as the report writes it (thousands separated by commas).
fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("the summary has {key}"))
}

/// Nothing the page loads comes from elsewhere: no `src`/`href` to a URL, no `url(…)` to one,
/// no `@import`, no external script or stylesheet.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for attr in ["src=", "href=", "xlink:href=", "srcset=", "action="] {
        for (i, _) in lower.match_indices(attr) {
            let value = lower[i + attr.len()..].trim_start_matches(['"', '\'', ' ']);
            assert!(
                !(value.starts_with("http:")
                    || value.starts_with("https:")
                    || value.starts_with("//")
                    || value.starts_with("ftp:")),
                "external reference: {}",
                &html[i..(i + 80).min(html.len())]
            );
        }
    }
    for needle in [
        "url(http",
        "url(//",
        "url(\"http",
        "url('http",
        "@import",
        "<link",
        "<script src",
        "<iframe",
        "<img",
    ] {
        assert!(!lower.contains(needle), "the page contains {needle}");
    }
}

#[test]
fn the_report_is_one_self_contained_page_with_every_chart() {
    let dir = TempDir::new("page");
    let (report, summary) = simulate(dir.path());
    let html = std::fs::read_to_string(&report).expect("cannot read the report");

    assert!(html.starts_with("<!doctype html>"), "not an HTML page");
    assert!(
        html.trim_end().ends_with("</html>"),
        "the page is cut short"
    );
    assert!(
        html.len() < MAX_PAGE_BYTES,
        "the page is {} bytes, over {MAX_PAGE_BYTES}",
        html.len()
    );
    assert_self_contained(&html);

    // The header's figures agree with the summary.
    for (figure, value) in [
        ("jobs", int(count(&summary, "jobs"))),
        ("completed", int(count(&summary, "completed"))),
        ("escalations", int(count(&summary, "escalations"))),
        ("delegations", int(count(&summary, "delegations"))),
        (
            "cost",
            format!(
                "${:.2}",
                summary["total_cost"].as_f64().expect("a total cost")
            ),
        ),
    ] {
        let key = format!("data-figure=\"{figure}\"");
        let at = html
            .find(&key)
            .unwrap_or_else(|| panic!("no {figure} figure"));
        let card = &html[at..at + html[at..].find("</div></div>").unwrap_or(0)];
        assert!(
            card.contains(&format!("<div class=\"value\">{value}")),
            "the {figure} figure is not {value}: {card}"
        );
    }
    assert_eq!(count(&summary, "jobs"), 2_000);

    let charts = charts(&html);
    let expected = expected_charts(&summary);
    for name in &expected {
        let found: Vec<&str> = charts
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, svg)| *svg)
            .collect();
        assert_eq!(found.len(), 1, "one chart named {name}");
    }
    for (name, svg) in &charts {
        assert!(!name.is_empty(), "a chart without data-chart");
        assert!(svg.contains("<title>"), "{name}: no <title>");
        assert_eq!(
            svg.matches("class=\"axis-label\"").count(),
            2,
            "{name}: two axis labels"
        );
        assert!(
            svg.contains("<g class=\"legend\"><"),
            "{name}: an empty legend"
        );
        assert!(bars(svg) + lines(svg) > 0, "{name}: no data drawn");
    }
    let chart = |name: &str| {
        charts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, svg)| *svg)
            .unwrap_or_default()
    };
    for model in models(&summary) {
        for metric in ["tokens-per-minute", "requests-per-minute"] {
            let svg = chart(&format!("{metric}:{model}"));
            assert!(bars(svg) >= 3, "{metric}:{model}: a bar per busy minute");
            assert_eq!(lines(svg), 1, "{metric}:{model}: the per-second counter");
            assert_eq!(
                elements(svg, "line", "limit").len(),
                1,
                "{metric}:{model}: the limit"
            );
        }
    }
    assert!(bars(chart("waits")) >= 5, "a histogram of the waits");
    assert_eq!(
        elements(chart("waits"), "line", "marker").len(),
        3,
        "p50, p95 and p99"
    );
    assert!(bars(chart("jobs")) >= 3, "jobs ending per minute");
    assert_eq!(lines(chart("jobs")), 1, "arrivals per minute");
    if count(&summary, "escalations") > 0 {
        assert!(bars(chart("escalations")) > 0, "escalations per minute");
    }
    assert_eq!(lines(chart("slots")), 5, "a line per bounded job type");
    assert_eq!(lines(chart("ratios")), 5, "a line per job type");
}

#[test]
fn chromium_renders_the_report() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "headless Chromium is needed to render the report and {CHROMIUM} is missing: install it \
         with `apt-get install -y chromium`"
    );
    let dir = TempDir::new("chromium");
    let (report, summary) = simulate(dir.path());
    let url = format!(
        "file://{}",
        report
            .canonicalize()
            .expect("the report has a path")
            .display()
    );

    // The DOM, as Chromium parsed it.
    let dom_path = dir.path().join("dom.html");
    let status = chromium(
        dir.path(),
        "dump",
        &["--dump-dom".to_owned(), url.clone()],
        &dom_path,
    );
    let dom = std::fs::read_to_string(&dom_path).expect("cannot read the dumped DOM");
    assert!(
        status.success(),
        "chromium --dump-dom failed ({status}): {}",
        stderr(dir.path(), "dump")
    );
    assert!(
        dom.contains("<title>llmrl simulate report</title>"),
        "not the report: {}",
        &dom[..dom.len().min(500)]
    );
    for name in expected_charts(&summary) {
        assert!(
            dom.contains(&format!("data-chart=\"{name}\"")),
            "the DOM has no {name} chart"
        );
    }
    let html = std::fs::read_to_string(&report).expect("cannot read the report");
    assert_eq!(
        dom.matches("<svg").count(),
        html.matches("<svg").count(),
        "every chart parsed"
    );
    assert_eq!(
        dom.matches("<rect class=\"bar\"").count(),
        html.matches("<rect class=\"bar\"").count(),
        "every bar parsed"
    );
    for (figure, value) in [
        ("jobs", int(count(&summary, "jobs"))),
        ("completed", int(count(&summary, "completed"))),
        ("escalations", int(count(&summary, "escalations"))),
    ] {
        let at = dom
            .find(&format!("data-figure=\"{figure}\""))
            .unwrap_or_else(|| panic!("the DOM has no {figure} figure"));
        assert!(
            dom[at..].contains(&format!("<div class=\"value\">{value}</div>")),
            "the {figure} figure is not {value}"
        );
    }

    // A screenshot of the whole page.
    let shot = dir.path().join("shot.png");
    let status = chromium(
        dir.path(),
        "shot",
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1400,3000".to_owned(),
            url,
        ],
        &dir.path().join("shot.out"),
    );
    assert!(
        status.success(),
        "chromium --screenshot failed ({status}): {}",
        stderr(dir.path(), "shot")
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    assert_eq!(&png[12..16], b"IHDR", "a PNG starts with its header");
    assert_eq!((be(16), be(20)), (1400, 3000), "the window's size");
    // A blank page of that size compresses to a few kilobytes; charts and text do not.
    assert!(
        png.len() > 50_000,
        "the screenshot is only {} bytes: is the page blank?",
        png.len()
    );
}

/// Runs headless Chromium with a fresh profile, `args` last, stdout to `stdout`; kills it (and
/// its helpers, in its process group) after [`CHROMIUM_TIMEOUT`].
fn chromium(dir: &Path, name: &str, args: &[String], stdout: &Path) -> ExitStatus {
    use std::os::unix::process::CommandExt;

    let profile = dir.join(format!("profile-{name}"));
    std::fs::create_dir_all(&profile).expect("cannot create Chromium's profile directory");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(stdout).expect("cannot create Chromium's output file"))
        .stderr(
            File::create(dir.join(format!("{name}.err")))
                .expect("cannot create Chromium's error file"),
        )
        .process_group(0)
        .spawn()
        .expect("cannot start Chromium");
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("cannot wait for Chromium") {
            return status;
        }
        if Instant::now() >= deadline {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "Chromium did not finish within {CHROMIUM_TIMEOUT:?} ({name}); killed it: {}",
                stderr(dir, name)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The end of what Chromium wrote to stderr.
fn stderr(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{name}.err"))).unwrap_or_default();
    let start = text.len().saturating_sub(2_000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}
