//! AUTH and TLS (SPEC §7.5): a backend with the right password works, a wrong or missing one
//! fails with an error that never holds the password; `rediss://` works against a TLS-only
//! redis-server with a self-signed certificate (with `#insecure`, and only with it).
//!
//! TLS needs a redis-server built with TLS and `openssl` to make the certificate; without
//! either, the TLS test says so and passes without checking.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use llmrl::{
    Config, JobContext, JobRequest, JobResult, JobTypeConfig, ModelConfig, NamedLimiter, Pricing,
    Usage,
};
use llmrl_redis::test_support::RedisServer;
use llmrl_redis::{RedisBackend, RedisConfig};

const PASSWORD: &str = "s3cret-Pa55word";
const WRONG: &str = "wrong-Pa55word";

/// Connects to `url`; on failure, the error's text (display and debug), which must hold
/// neither password.
async fn connect(url: &str) -> Result<RedisBackend, String> {
    // A fleet of its own for every backend.
    static FLEETS: AtomicU64 = AtomicU64::new(0);
    let fleet = FLEETS.fetch_add(1, Ordering::Relaxed);
    let config = RedisConfig::new(url).prefix(format!("security-{fleet}"));
    assert!(!format!("{config:?}").contains(PASSWORD));
    assert!(!format!("{config:?}").contains(WRONG));
    match RedisBackend::connect(config).await {
        Ok(backend) => {
            let debug = format!("{backend:?}");
            assert!(
                !debug.contains(PASSWORD) && !debug.contains(WRONG),
                "{debug}"
            );
            Ok(backend)
        }
        Err(error) => {
            let text = format!("{error} / {error:?}");
            assert!(
                !text.contains(PASSWORD) && !text.contains(WRONG),
                "an error shows a password: {text}"
            );
            Err(text)
        }
    }
}

/// A limiter on `backend` runs one job through the fleet and sees itself registered.
async fn runs_a_job(backend: RedisBackend) {
    let config = Config::new()
        .model(
            "m",
            ModelConfig::new(Pricing::new(0.0, 0.0, 0.0))
                .tokens_per_minute(10_000)
                .max_concurrent_requests(2),
        )
        .job_type("j", JobTypeConfig::new().estimated_tokens(100));
    let limiter = NamedLimiter::builder(config)
        .backend(backend)
        .build()
        .unwrap();
    limiter.ready().await;
    let handle = limiter
        .queue_job(JobRequest::new(
            "secure",
            "j",
            |_: JobContext<Arc<str>>| async {
                JobResult::<(), ()>::done((), Usage::new().input_tokens(80))
            },
        ))
        .unwrap();
    handle.await.unwrap();
    let a = limiter.availability();
    assert_eq!(a.instances, 1);
    assert_eq!(a.models[0].tokens_per_minute.unwrap().used, 80);
    limiter.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_redis_needs_the_password_and_errors_never_show_it() {
    let server = RedisServer::start_with(
        &["--requirepass", PASSWORD],
        &format!("redis://:{PASSWORD}@127.0.0.1:{{port}}"),
    )
    .expect("redis-server must be installed");
    let port = server.port();

    runs_a_job(
        connect(&format!("redis://:{PASSWORD}@127.0.0.1:{port}"))
            .await
            .unwrap(),
    )
    .await;
    // The ACL form, with the default user.
    runs_a_job(
        connect(&format!("redis://default:{PASSWORD}@127.0.0.1:{port}"))
            .await
            .unwrap(),
    )
    .await;

    let wrong = connect(&format!("redis://:{WRONG}@127.0.0.1:{port}"))
        .await
        .unwrap_err();
    eprintln!("wrong password: {wrong}");
    let wrong_user = connect(&format!("redis://someone:{PASSWORD}@127.0.0.1:{port}"))
        .await
        .unwrap_err();
    eprintln!("wrong user: {wrong_user}");
    let missing = connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    eprintln!("no password: {missing}");
    assert!(
        missing.contains("NOAUTH") || missing.contains("uthentication"),
        "{missing}"
    );
    // Nobody listening: the error names the address, never the password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = connect(&format!("redis://:{PASSWORD}@127.0.0.1:{closed}"))
        .await
        .unwrap_err();
    eprintln!("unreachable: {unreachable}");
}

/// A self-signed certificate for 127.0.0.1 in `dir`: (certificate, key), or `None` without
/// `openssl`.
fn certificate(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then_some((cert, key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_reaches_a_tls_only_server_with_and_without_a_password() {
    /// Removes the certificate's directory however the test ends.
    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = TempDir(std::env::temp_dir().join(format!("llmrl-tls-{}", std::process::id())));
    let dir = &dir.0;
    std::fs::create_dir_all(dir).unwrap();
    let Some((cert, key)) = certificate(dir) else {
        eprintln!("SKIPPED: openssl is not available to make a test certificate");
        return;
    };
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let tls = [
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &cert,
        "--tls-auth-clients",
        "no",
    ];
    let server = match RedisServer::start_with(&tls, "rediss://127.0.0.1:{port}/#insecure") {
        Ok(server) => server,
        Err(error) => {
            eprintln!("SKIPPED: this redis-server does not serve TLS ({error})");
            return;
        }
    };
    let port = server.port();
    runs_a_job(
        connect(&format!("rediss://127.0.0.1:{port}/#insecure"))
            .await
            .unwrap(),
    )
    .await;
    // Certificates are verified unless told otherwise: a self-signed one is refused.
    let verified = connect(&format!("rediss://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    eprintln!("verified: {verified}");
    // Plain text to a TLS port fails too.
    assert!(connect(&format!("redis://127.0.0.1:{port}")).await.is_err());
    drop(server);

    let mut with_password = tls.to_vec();
    with_password.extend(["--requirepass", PASSWORD]);
    let server = RedisServer::start_with(
        &with_password,
        &format!("rediss://:{PASSWORD}@127.0.0.1:{{port}}/#insecure"),
    )
    .unwrap();
    let port = server.port();
    runs_a_job(
        connect(&format!("rediss://:{PASSWORD}@127.0.0.1:{port}/#insecure"))
            .await
            .unwrap(),
    )
    .await;
    let wrong = connect(&format!("rediss://:{WRONG}@127.0.0.1:{port}/#insecure"))
        .await
        .unwrap_err();
    eprintln!("TLS, wrong password: {wrong}");
    drop(server);
}
