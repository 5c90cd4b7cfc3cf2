//! Prometheus metrics of the operator, and the HTTP server for `/metrics`, `/healthz` and
//! `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::cloudflare::Observer;

type Labels = Vec<(&'static str, String)>;

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    /// Zone reconciles by result (ok, retry, error).
    pub reconciles: Family<Labels, Counter>,
    /// Cloudflare requests by operation and HTTP status.
    pub cloudflare_requests: Family<Labels, Counter>,
    /// Cloudflare request latency by operation.
    pub cloudflare_latency: Family<Labels, Histogram>,
    /// Retries of Cloudflare requests by operation.
    pub cloudflare_retries: Family<Labels, Counter>,
    /// Seconds spent waiting on the client-side rate limiter.
    pub rate_limit_wait_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Times a request waited on the rate limiter.
    pub rate_limit_waits: Counter,
    /// Mappings per zone by Ready status.
    pub mappings: Family<Labels, Gauge>,
    /// Writes to the Kubernetes API by kind (finalizer, status, event).
    pub kube_writes: Family<Labels, Counter>,
    /// 1 while this replica is the leader.
    pub leader: Gauge,
    /// Seconds between drift checks of a zone that the budget allows (at least the configured
    /// resync interval).
    pub resync_interval_effective: Gauge<f64, std::sync::atomic::AtomicU64>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `origin_region_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("origin_region_operator");
        let m = Metrics {
            reconciles: Family::default(),
            cloudflare_requests: Family::default(),
            cloudflare_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            cloudflare_retries: Family::default(),
            rate_limit_wait_seconds: Counter::default(),
            rate_limit_waits: Counter::default(),
            mappings: Family::default(),
            kube_writes: Family::default(),
            leader: Gauge::default(),
            resync_interval_effective: Gauge::default(),
            ready: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "zone_reconciles",
            "Zone reconciles by result",
            m.reconciles.clone(),
        );
        registry.register(
            "cloudflare_requests",
            "Cloudflare API requests by operation and HTTP status",
            m.cloudflare_requests.clone(),
        );
        registry.register(
            "cloudflare_request_duration_seconds",
            "Cloudflare API request latency by operation",
            m.cloudflare_latency.clone(),
        );
        registry.register(
            "cloudflare_retries",
            "Retried Cloudflare API requests by operation",
            m.cloudflare_retries.clone(),
        );
        registry.register(
            "cloudflare_rate_limit_wait_seconds",
            "Seconds spent waiting on the client-side Cloudflare rate limiter",
            m.rate_limit_wait_seconds.clone(),
        );
        registry.register(
            "cloudflare_rate_limit_waits",
            "Requests that waited on the client-side Cloudflare rate limiter",
            m.rate_limit_waits.clone(),
        );
        registry.register(
            "mappings",
            "OriginCloudRegionMapping objects per zone by Ready status",
            m.mappings.clone(),
        );
        registry.register(
            "kube_writes",
            "Writes to the Kubernetes API by kind (finalizer, status, event)",
            m.kube_writes.clone(),
        );
        registry.register("leader", "1 while this replica leads", m.leader.clone());
        registry.register(
            "resync_interval_effective_seconds",
            "Seconds between drift checks of a zone that the Cloudflare budget allows",
            m.resync_interval_effective.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one zone reconcile.
    pub fn reconcile(&self, result: &str) {
        self.reconciles
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// Counts one write to the Kubernetes API.
    pub fn kube_write(&self, kind: &'static str) {
        self.kube_writes
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    /// Sets the per-zone mapping gauges.
    pub fn set_zone_mappings(&self, zone: &str, ready: i64, not_ready: i64) {
        for (status, n) in [("true", ready), ("false", not_ready)] {
            self.mappings
                .get_or_create(&vec![
                    ("zone", zone.to_string()),
                    ("ready", status.to_string()),
                ])
                .set(n);
        }
    }

    /// Marks the operator ready (caches synced).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether caches are synced.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("encoding to a String cannot fail");
        out
    }
}

impl Observer for Metrics {
    fn request(&self, op: &'static str, status: &str, seconds: f64) {
        self.cloudflare_requests
            .get_or_create(&vec![
                ("operation", op.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        self.cloudflare_latency
            .get_or_create(&vec![("operation", op.to_string())])
            .observe(seconds);
    }

    fn rate_limit_wait(&self, seconds: f64) {
        self.rate_limit_wait_seconds.inc_by(seconds);
        self.rate_limit_waits.inc();
    }

    fn retry(&self, op: &'static str) {
        self.cloudflare_retries
            .get_or_create(&vec![("operation", op.to_string())])
            .inc();
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub async fn serve(addr: std::net::SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving metrics and health");
    axum::serve(listener, app).await
}

async fn render(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_recorded_series() {
        let m = Metrics::new();
        m.request("batch_put", "200", 0.01);
        m.kube_write("status");
        m.set_zone_mappings("z1", 3, 1);
        let text = m.render();
        assert!(text.contains(
            "origin_region_operator_cloudflare_requests_total{operation=\"batch_put\",status=\"200\"} 1"
        ), "{text}");
        assert!(
            text.contains("origin_region_operator_kube_writes_total{kind=\"status\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("origin_region_operator_mappings{zone=\"z1\",ready=\"true\"} 3"),
            "{text}"
        );
    }
}
