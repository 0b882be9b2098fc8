//! Operations: a binary's HTTP endpoint, off unless an address is given: `/metrics` (the
//! registry in the OpenMetrics text format Prometheus scrapes), `/healthz` (the main loop is
//! alive: it beat recently) and `/readyz` (every readiness check passes), the last two
//! with a small JSON body saying why not.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Whether the binary is alive and ready, as its main loop reports it.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds from `started` to the last beat.
    beat_ms: AtomicU64,
    /// Longest time between two beats of a loop that is alive.
    stall_after: Duration,
    /// The readiness checks that fail now, and why.
    not_ready: Mutex<BTreeMap<&'static str, String>>,
}

impl Health {
    /// A loop that beats at least every `stall_after` while alive.
    pub fn new(stall_after: Duration) -> Arc<Health> {
        Arc::new(Health {
            started: Instant::now(),
            beat_ms: AtomicU64::new(0),
            stall_after,
            not_ready: Mutex::new(BTreeMap::new()),
        })
    }

    /// The main loop is alive.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.beat_ms.store(ms, Ordering::Relaxed);
    }

    /// Sets readiness check `check`: `None` passes, `Some(why)` fails.
    pub fn set(&self, check: &'static str, problem: Option<String>) {
        let mut map = self
            .not_ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match problem {
            Some(why) => map.insert(check, why),
            None => map.remove(check),
        };
    }

    fn since_beat(&self) -> Duration {
        let beat = Duration::from_millis(self.beat_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(beat)
    }

    fn problems(&self) -> BTreeMap<&'static str, String> {
        self.not_ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[derive(Clone)]
struct Shared {
    registry: Arc<Registry>,
    health: Arc<Health>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `stop` is cancelled;
/// returns the address bound (port 0 picks a free one).
///
/// The server runs on a thread and runtime of its own: the sink's loop runs on a
/// single-threaded runtime and sometimes blocks it (a seek, a watermark query, up to a
/// few seconds), which must not delay a probe or a scrape.
///
/// # Errors
/// The address cannot be bound (in use, not local), in words naming the setting.
pub async fn serve(
    addr: SocketAddr,
    setting: &str,
    registry: Arc<Registry>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> Result<SocketAddr, crate::secret::ConfigError> {
    let cannot = |e: std::io::Error| {
        crate::secret::ConfigError(format!(
            "cannot serve metrics on {addr} ({e}): choose a free address in {setting}"
        ))
    };
    let listener = std::net::TcpListener::bind(addr).map_err(cannot)?;
    listener.set_nonblocking(true).map_err(cannot)?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Shared { registry, health });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(cannot)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(async move { stop.cancelled().await })
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::warn!(error = %e, "the metrics endpoint stopped");
                }
            });
        })
        .map_err(cannot)?;
    tracing::info!(event = "metrics", addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

async fn healthz(State(s): State<Shared>) -> impl IntoResponse {
    let since = s.health.since_beat();
    let alive = since <= s.health.stall_after;
    let body = serde_json::json!({
        "status": if alive { "ok" } else { "stalled" },
        "last_beat_secs_ago": since.as_secs_f64(),
    });
    let code = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    let problems = s.health.problems();
    let ready = problems.is_empty();
    let body = serde_json::json!({ "ready": ready, "not_ready": problems });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
