//! Redis errors as backend errors, without secrets.

use llmrl::backend::BackendError;
use redis::RedisError;

/// Maps a Redis error, scrubbing `secret` (the URL's password) from its message.
pub(crate) fn from_redis(error: &RedisError, secret: Option<&str>) -> BackendError {
    let mut message = error.to_string();
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        message = message.replace(secret, "***");
    }
    if error.is_timeout() {
        BackendError::Unreachable(format!("timed out: {message}"))
    } else if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
    {
        BackendError::Unreachable(message)
    } else {
        BackendError::Protocol(message)
    }
}
