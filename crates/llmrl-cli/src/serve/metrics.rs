//! `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::api::State;

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) fn render(state: &State) -> String {
    let availability = state.limiter.availability();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP llmrl_instances Live instances sharing the models' limits."
    );
    let _ = writeln!(out, "# TYPE llmrl_instances gauge");
    let _ = writeln!(out, "llmrl_instances {}", availability.instances);
    let _ = writeln!(
        out,
        "# HELP llmrl_slots Jobs of a type this instance can start now."
    );
    let _ = writeln!(out, "# TYPE llmrl_slots gauge");
    for t in &availability.job_types {
        if let Some(slots) = t.slots {
            let _ = writeln!(
                out,
                "llmrl_slots{{job_type=\"{}\"}} {slots}",
                label(&t.job_type)
            );
        }
    }
    let _ = writeln!(out, "# HELP llmrl_ratio A job type's current ratio.");
    let _ = writeln!(out, "# TYPE llmrl_ratio gauge");
    for t in &availability.job_types {
        let _ = writeln!(
            out,
            "llmrl_ratio{{job_type=\"{}\"}} {}",
            label(&t.job_type),
            t.ratio
        );
    }
    let _ = writeln!(
        out,
        "# HELP llmrl_limit A model's limit; llmrl_used what the fleet used of it."
    );
    let _ = writeln!(out, "# TYPE llmrl_limit gauge");
    let _ = writeln!(out, "# TYPE llmrl_used gauge");
    let _ = writeln!(out, "# TYPE llmrl_available gauge");
    for m in &availability.models {
        let limits = [
            ("tokens_per_minute", m.tokens_per_minute),
            ("tokens_per_day", m.tokens_per_day),
            ("requests_per_minute", m.requests_per_minute),
            ("requests_per_day", m.requests_per_day),
            ("concurrent_requests", m.concurrent_requests),
        ];
        for (name, remaining) in limits {
            let Some(r) = remaining else { continue };
            let labels = format!("model=\"{}\",limit=\"{name}\"", label(&m.model));
            let _ = writeln!(out, "llmrl_limit{{{labels}}} {}", r.limit);
            let _ = writeln!(out, "llmrl_used{{{labels}}} {}", r.used);
            let _ = writeln!(out, "llmrl_available{{{labels}}} {}", r.available);
        }
    }
    let s = &state.stats;
    for (name, counter, help) in [
        ("llmrl_leases_acquired_total", &s.acquired, "Leases given."),
        (
            "llmrl_leases_released_total",
            &s.released,
            "Leases released by clients.",
        ),
        (
            "llmrl_leases_delegated_total",
            &s.delegated,
            "Releases that asked for the next model.",
        ),
        (
            "llmrl_leases_exhausted_total",
            &s.exhausted,
            "Acquisitions that found no capacity in time.",
        ),
        (
            "llmrl_leases_expired_total",
            &s.expired,
            "Leases dropped because never released.",
        ),
        (
            "llmrl_bad_requests_total",
            &s.bad_requests,
            "Requests rejected as malformed.",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
    }
    let _ = writeln!(
        out,
        "# HELP llmrl_leases_active Leases given and not yet released."
    );
    let _ = writeln!(out, "# TYPE llmrl_leases_active gauge");
    let _ = writeln!(out, "llmrl_leases_active {}", state.leases.len());
    out
}
