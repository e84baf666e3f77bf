//! `llmrl serve`: one limiter instance over HTTP, for services not written in Rust.
//!
//! A client acquires a lease for a job type (the request waits, up to the job type's wait
//! bounds, for capacity), calls the model the lease names, then releases the lease with what
//! the call used, optionally delegating to the next model. See `docs/openapi.yaml`.

mod api;
mod leases;
mod metrics;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use llmrl::{BackendConfig, Clock, Config, NamedLimiter, Timestamp};
use llmrl_redis::{RedisBackend, RedisConfig, WindowClock};
use tokio::sync::broadcast;

use crate::cli::ServeArgs;

pub(crate) fn main(args: ServeArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::from_path(&args.config)?;
    if let Some(id) = &args.instance_id {
        config = config.instance_id(id.clone());
    }
    let clock = match args.clock_scale {
        Some(factor) => {
            let anchor = args
                .clock_anchor
                .unwrap_or_else(|| Clock::system().now().as_millis());
            let start = args.clock_start.unwrap_or(anchor);
            Clock::scaled(
                Timestamp::from_millis(anchor),
                Timestamp::from_millis(start),
                factor,
            )
        }
        None => Clock::system(),
    };
    let (events, _) = broadcast::channel(4_096);
    let sender = events.clone();
    let slots_sender = events.clone();
    let mut builder = NamedLimiter::builder(config.clone())
        .clock(clock.clone())
        .on_event(move |event| {
            let _ = sender.send(serde_json::to_string(event).unwrap_or_default());
        })
        .on_available_slots_change(move |availability, reason, adjustment| {
            let line = serde_json::json!({
                "event": "slots_changed",
                "reason": reason,
                "slots": availability.slots,
                "adjustment": adjustment,
            });
            let _ = slots_sender.send(line.to_string());
        });
    let redis = match (&args.redis, config.backend_settings()) {
        (Some(url), settings) => {
            let prefix = args
                .prefix
                .clone()
                .or_else(|| settings.map(|s| s.prefix().to_owned()))
                .unwrap_or_else(|| "llmrl".into());
            let stale = settings.map_or(Duration::from_secs(15), BackendConfig::stale_after);
            Some(
                RedisConfig::new(url.clone())
                    .prefix(prefix)
                    .stale_after(stale),
            )
        }
        (None, Some(settings)) if settings.kind() == "redis" => {
            let redis = RedisConfig::from_backend_config(settings)?;
            Some(match &args.prefix {
                Some(prefix) => redis.prefix(prefix.clone()),
                None => redis,
            })
        }
        _ => None,
    };
    if let Some(redis) = redis {
        // A scaled clock is not Redis's: number windows by the instances' shared clock.
        let redis = if args.clock_scale.is_some() {
            redis.window_clock(WindowClock::Client)
        } else {
            redis
        };
        builder = builder.backend(RedisBackend::new(redis)?);
    }
    let limiter = builder.build().context("cannot start the limiter")?;
    limiter.ready().await;
    let state = Arc::new(api::State::new(
        limiter.clone(),
        clock,
        Duration::from_secs(args.lease_ttl),
        args.token.clone(),
        events,
    ));
    let expiry = tokio::spawn(leases::expire_periodically(state.clone()));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %args.listen, instance = %limiter.instance_id(), "serving");
    // The one line a person (or a test) starting the sidecar waits for.
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "llmrl serve: listening on http://{}",
            listener.local_addr()?
        );
    }
    let stopping = state.clone();
    let stopped = limiter.clone();
    axum::serve(listener, api::router(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Event streams never end by themselves: end them, or the shutdown waits forever.
            stopping.stopping.send_replace(true);
            // Pending acquisitions get 503 at once instead of running out their waits; the
            // instance leaves its fleet.
            stopped.stop(Duration::from_secs(10)).await;
        })
        .await?;
    expiry.abort();
    // Leases nobody released: their usage is unknown, their estimates stay counted.
    state.leases.clear();
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return interrupt.await.unwrap_or(()),
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
