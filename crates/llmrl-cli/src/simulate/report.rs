//! The HTML report (`--report`): one self-contained page with charts.

use super::record::{Log, ModelLimits, Summary};

/// A self-contained HTML page describing the run.
pub(crate) fn html(
    summary: &Summary,
    _log: &Log,
    _models: &[ModelLimits],
    _job_types: &[String],
) -> String {
    let json = serde_json::to_string_pretty(summary).unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>llmrl simulate</title></head>\
         <body><h1>llmrl simulate</h1><pre id=\"summary\">{}</pre></body></html>",
        json.replace('&', "&amp;").replace('<', "&lt;")
    )
}
