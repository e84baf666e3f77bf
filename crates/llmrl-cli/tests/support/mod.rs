//! Helpers shared by the CLI's integration tests: `llmrl serve` started on a free loopback port
//! (killed when the guard drops, also on panic), and a tiny HTTP/1.1 client over a plain
//! `TcpStream` (one connection per request, `Connection: close`) with an incremental
//! Server-Sent Events reader. No dependency beyond the crate's own (tokio, serde_json).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::print_stderr,
    missing_docs
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::net::TcpStream;

pub mod fleet;
pub mod flexible;

/// How long the binary may take to print its "listening on" line.
const STARTUP: Duration = Duration::from_secs(20);
/// The longest any single request may take (long polls in the tests wait a few seconds).
const REQUEST: Duration = Duration::from_secs(30);

/// Milliseconds since the Unix epoch, on the wall clock (the one the server uses).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Writes all of `bytes` (tokio's `io-util` is not among the crate's features: no `write_all`).
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Reads what is there (0: the end of the stream).
async fn read(stream: &TcpStream, buffer: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buffer) {
            Ok(n) => return Ok(n),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
}

/// Reads to the end of the stream.
async fn read_to_end(stream: &TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        let n = read(stream, &mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        out.extend_from_slice(&buffer[..n]);
    }
}

/// A unique file in the temporary directory (removed by its owner).
fn temp_file(stem: &str, extension: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "llmrl-{stem}-{}-{}-{n}.{extension}",
        std::process::id(),
        now_ms()
    ))
}

/// A running `llmrl serve`, killed (and its config file removed) on drop.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    token: Option<String>,
    config: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

/// Options for [`Server::spawn`].
#[derive(Default)]
pub struct Options<'a> {
    /// Extra command-line arguments after `serve --config F --listen A`.
    pub args: &'a [&'a str],
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
}

impl Server {
    /// Starts `llmrl serve` on `config` (TOML) with no extra options.
    pub fn start(config: &str) -> Self {
        Self::spawn(config, Options::default())
    }

    /// Starts `llmrl serve` on `config` (TOML) with extra arguments.
    pub fn start_with(config: &str, args: &[&str]) -> Self {
        Self::spawn(config, Options { args, env: &[] })
    }

    /// Starts `llmrl serve` on `config` on `127.0.0.1:0` (the system picks a free port, read back
    /// from the "listening on" line on stderr, so parallel tests never race for a port).
    pub fn spawn(config: &str, options: Options<'_>) -> Self {
        let path = temp_file("serve", "toml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_llmrl"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .args(options.args)
            .env_remove("LLMRL_TOKEN")
            .env("LLMRL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in options.env {
            command.env(key, value);
        }
        let token = options
            .args
            .windows(2)
            .find(|pair| pair[0] == "--token")
            .map(|pair| pair[1].to_owned())
            .or_else(|| {
                options
                    .env
                    .iter()
                    .find(|(key, _)| *key == "LLMRL_TOKEN")
                    .map(|(_, value)| (*value).to_owned())
            })
            .filter(|token| !token.is_empty());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, address) = mpsc::channel();
        {
            let log = log.clone();
            // Drains stderr for the server's whole life, so that its logging never blocks.
            std::thread::spawn(move || {
                let mut found = Some(found);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        if let (Some(sender), Ok(addr)) = (found.take(), rest.trim().parse()) {
                            let _ = sender.send(addr);
                        }
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token,
            config: path,
            log,
        };
        match address.recv_timeout(STARTUP) {
            Ok(addr) => server.addr = addr,
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                panic!(
                    "llmrl serve did not start (exit status {status:?}); stderr:\n{}",
                    server.log()
                );
            }
        }
        server
    }

    /// The address it listens on.
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Panics if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("llmrl serve exited with {status}; stderr:\n{}", self.log());
        }
    }

    /// The process id (e.g. to send it a signal).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit; its status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a request with exactly these headers (no token added).
    pub async fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        let raw = tokio::time::timeout(REQUEST, self.exchange(&bytes))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within {REQUEST:?}"))
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        Response::parse(&raw).unwrap_or_else(|| {
            panic!(
                "{method} {path}: unparsable answer {:?}",
                String::from_utf8_lossy(&raw)
            )
        })
    }

    /// Sends a request, with the bearer token if the server has one.
    pub async fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        self.request_with(method, path, &headers, body).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Response {
        self.request("GET", path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, Some(body.to_string().as_bytes()))
            .await
    }

    /// `POST path` with raw body bytes.
    pub async fn post_raw(&self, path: &str, body: &[u8]) -> Response {
        self.request("POST", path, Some(body)).await
    }

    /// `GET path`, expecting 200 and a JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status, 200, "GET {path}: {}", response.text());
        response.json()
    }

    /// `/v1/stats`.
    pub async fn stats(&self) -> Value {
        self.get_json("/v1/stats").await
    }

    /// `/v1/availability`.
    pub async fn availability(&self) -> Value {
        self.get_json("/v1/availability").await
    }

    /// Acquires a lease for `job_type`: the answer, whatever its status.
    pub async fn acquire(&self, job_type: &str, job_id: Option<&str>) -> Response {
        let mut body = serde_json::json!({ "job_type": job_type });
        if let Some(id) = job_id {
            body["job_id"] = Value::from(id);
        }
        self.post("/v1/leases", &body).await
    }

    /// Acquires a lease, expecting one; its JSON.
    pub async fn lease(&self, job_type: &str, job_id: Option<&str>) -> Value {
        let response = self.acquire(job_type, job_id).await;
        assert_eq!(response.status, 200, "acquire: {}", response.text());
        response.json()
    }

    /// Releases lease `id` with `body`: the answer, whatever its status.
    pub async fn release(&self, id: &str, body: &Value) -> Response {
        self.post(&format!("/v1/leases/{id}/release"), body).await
    }

    /// Writes `bytes` as they are on a new connection; the answer if one came within `limit`
    /// (garbage may just get the connection closed).
    pub async fn raw(&self, bytes: &[u8], limit: Duration) -> Option<Response> {
        let raw = tokio::time::timeout(limit, self.exchange(bytes))
            .await
            .ok()?
            .ok()?;
        Response::parse(&raw)
    }

    async fn exchange(&self, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let stream = TcpStream::connect(self.addr).await?;
        // A server that answers before reading everything (413) may reset the connection while
        // we still write: keep what it said.
        let written = write_all(&stream, bytes).await;
        let mut raw = Vec::new();
        let read = read_to_end(&stream, &mut raw).await;
        if raw.is_empty() {
            written?;
            read?;
        }
        Ok(raw)
    }

    /// Subscribes to `/v1/events`.
    pub async fn events(&self) -> EventStream {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let mut head = format!(
            "GET /v1/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
            self.addr
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        write_all(&stream, head.as_bytes()).await.unwrap();
        let mut events = EventStream {
            stream,
            raw: Vec::new(),
            body: Vec::new(),
            chunked: false,
            status: 0,
            headers: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = find(&events.raw, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&events.raw[..end]).into_owned();
                let (status, headers) = parse_head(&head).unwrap();
                events.status = status;
                events.chunked = headers.iter().any(|(name, value)| {
                    name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked")
                });
                events.headers = headers;
                events.raw.drain(..end + 4);
                break;
            }
            assert!(events.fill(deadline).await, "no answer from /v1/events");
        }
        events
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        if std::thread::panicking() {
            eprintln!(
                "--- llmrl serve on {} (stderr) ---\n{}",
                self.addr,
                self.log()
            );
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The status and the headers (names in lower case) of a response head.
fn parse_head(head: &str) -> Option<(u16, Vec<(String, String)>)> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Some((status, headers))
}

/// Decodes as much of a chunked body as `raw` holds; moves the decoded bytes to `out`. Returns
/// `true` once the last chunk was seen.
fn dechunk(raw: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    loop {
        let Some(line_end) = find(raw, b"\r\n") else {
            return false;
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            // Not chunked after all: hand the rest over as it is.
            out.append(raw);
            return false;
        };
        if size == 0 {
            raw.clear();
            return true;
        }
        let start = line_end + 2;
        if raw.len() < start + size + 2 {
            return false;
        }
        out.extend_from_slice(&raw[start..start + size]);
        raw.drain(..start + size + 2);
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Option<Self> {
        let end = find(raw, b"\r\n\r\n")?;
        let (status, headers) = parse_head(&String::from_utf8_lossy(&raw[..end]))?;
        let mut body = raw[end + 4..].to_vec();
        let chunked = headers.iter().any(|(name, value)| {
            name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked")
        });
        if chunked {
            let mut decoded = Vec::new();
            dechunk(&mut body, &mut decoded);
            body = decoded;
        }
        Some(Self {
            status,
            headers,
            body,
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics, showing the body, if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "status {}: body is not JSON ({error}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts an API error: `status`, a JSON `{error, field}` body with a non-empty message and
    /// the given field (`None`: `field` is null). Returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, field: Option<&str>) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "error without a JSON content type: {:?}",
            self.headers
        );
        let body = self.json();
        let error = body["error"].as_str().unwrap_or_default().to_owned();
        assert!(!error.is_empty(), "no error message: {body}");
        assert!(body.get("field").is_some(), "no `field` key: {body}");
        assert_eq!(body["field"].as_str(), field, "wrong field in {body}");
        error
    }
}

/// A subscription to `/v1/events`, read incrementally.
pub struct EventStream {
    stream: TcpStream,
    /// Bytes read and not decoded yet.
    raw: Vec<u8>,
    /// The decoded body not yet split into events.
    body: Vec<u8>,
    chunked: bool,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl EventStream {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads more bytes; `false` at the end of the stream or at the deadline.
    async fn fill(&mut self, deadline: Instant) -> bool {
        let mut buffer = [0_u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, read(&self.stream, &mut buffer)).await {
            Ok(Ok(n)) if n > 0 => {
                self.raw.extend_from_slice(&buffer[..n]);
                true
            }
            _ => false,
        }
    }

    /// The `data` of the next event that has one (comments and keep-alives are skipped), or
    /// `None` if none came within `limit`.
    pub async fn next_data(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if self.chunked {
                dechunk(&mut self.raw, &mut self.body);
            } else {
                self.body.append(&mut self.raw);
            }
            // Events end with a blank line (the server writes `\n`).
            while let Some(end) = find(&self.body, b"\n\n") {
                let event: Vec<u8> = self.body.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event).replace('\r', "");
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(|data| data.strip_prefix(' ').unwrap_or(data))
                    .collect();
                if !data.is_empty() {
                    return Some(data.join("\n"));
                }
            }
            if !self.fill(deadline).await {
                return None;
            }
        }
    }

    /// The next event whose JSON data satisfies `wanted`, skipping others; `None` after `limit`.
    pub async fn next_matching(
        &mut self,
        limit: Duration,
        mut wanted: impl FnMut(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let data = self.next_data(left).await?;
            let event: Value = serde_json::from_str(&data)
                .unwrap_or_else(|error| panic!("event data is not JSON ({error}): {data:?}"));
            if wanted(&event) {
                return Some(event);
            }
        }
    }
}

// --- Config presets and availability snapshots (for the e2e slot suites) ---

/// The config preset `tests/presets/<name>.toml`: each test starts its instances with the
/// preset it needs.
pub fn preset(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("presets")
        .join(format!("{name}.toml"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read preset {}: {error}", path.display()))
}

impl Server {
    /// Polls `/v1/availability` until `done` holds for it; that snapshot. Panics with the last
    /// one after `limit`.
    pub async fn availability_until(
        &self,
        limit: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let availability = self.availability().await;
            if done(&availability) {
                return availability;
            }
            assert!(
                Instant::now() < deadline,
                "availability of {} never got there within {limit:?}: {availability}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Server {
    /// Polls `/v1/availability` until the fleet-wide `used` of one limit of one model is
    /// `used` (so the snapshot reflects the admissions and settlements made so far); that
    /// snapshot. Panics after `limit`.
    pub async fn availability_at_used(
        &self,
        model: &str,
        window_limit: &str,
        used: u64,
        limit: Duration,
    ) -> Value {
        self.availability_until(limit, |a| {
            a["models"]
                .as_array()
                .and_then(|models| models.iter().find(|m| m["model"] == model))
                .and_then(|m| m[window_limit]["used"].as_u64())
                == Some(used)
        })
        .await
    }

    /// Acquires leases of `job_type` until one is refused (429; with `max_wait` 0 at once);
    /// appends the ids of those it got to `ids`, naming the jobs `{job_type}-{n}`.
    pub async fn acquire_until_refused(&self, job_type: &str, ids: &mut Vec<String>) {
        loop {
            let job = format!("{job_type}-{}", ids.len());
            let answer = self.acquire(job_type, Some(&job)).await;
            if answer.status == 429 {
                return;
            }
            assert_eq!(answer.status, 200, "acquire {job}: {}", answer.text());
            ids.push(answer.json()["lease_id"].as_str().unwrap().to_owned());
        }
    }
}

/// One job type's entry (`job_types[]`) in an availability snapshot.
pub fn job_type_entry<'a>(availability: &'a Value, job_type: &str) -> &'a Value {
    availability["job_types"]
        .as_array()
        .and_then(|types| types.iter().find(|t| t["job_type"] == job_type))
        .unwrap_or_else(|| panic!("no job type {job_type} in {availability}"))
}

/// One model's entry (`models[]`) in an availability snapshot.
pub fn model_entry<'a>(availability: &'a Value, model: &str) -> &'a Value {
    availability["models"]
        .as_array()
        .and_then(|models| models.iter().find(|m| m["model"] == model))
        .unwrap_or_else(|| panic!("no model {model} in {availability}"))
}

/// A job type's slots over all models (panics if unbounded).
pub fn slots_of(availability: &Value, job_type: &str) -> u64 {
    job_type_entry(availability, job_type)["slots"]
        .as_u64()
        .unwrap_or_else(|| panic!("no bounded slots for {job_type} in {availability}"))
}

/// A job type's slots on one model (panics if unbounded).
pub fn slots_on(availability: &Value, job_type: &str, model: &str) -> u64 {
    job_type_entry(availability, job_type)["models"]
        .as_array()
        .and_then(|models| models.iter().find(|m| m["model"] == model))
        .and_then(|m| m["slots"].as_u64())
        .unwrap_or_else(|| panic!("no bounded slots for {job_type} on {model} in {availability}"))
}

/// A job type's current ratio.
pub fn ratio_of(availability: &Value, job_type: &str) -> f64 {
    job_type_entry(availability, job_type)["ratio"]
        .as_f64()
        .unwrap_or_else(|| panic!("no ratio for {job_type} in {availability}"))
}

/// A figure (`limit`, `used`, `remaining`, `available`, `share`, `own`) of one limit
/// (`tokens_per_minute`, `concurrent_requests`, ...) of one model.
pub fn limit_figure(availability: &Value, model: &str, limit: &str, figure: &str) -> u64 {
    model_entry(availability, model)[limit][figure]
        .as_u64()
        .unwrap_or_else(|| panic!("no {limit}.{figure} for {model} in {availability}"))
}

/// The instance count an availability snapshot reports.
pub fn instances_of(availability: &Value) -> u64 {
    availability["instances"]
        .as_u64()
        .unwrap_or_else(|| panic!("no instance count in {availability}"))
}
