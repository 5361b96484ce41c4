//! Prometheus metrics, in one struct, and the tiny HTTP endpoint that serves them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// provision | delete | resize
    pub operation: &'static str,
    /// success | error kind
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpKind {
    pub operation: &'static str,
}

pub struct Metrics {
    pub operations: Family<OpLabels, Counter>,
    pub duration: Family<OpKind, Histogram>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rbd_provisioner");
        let operations = Family::<OpLabels, Counter>::default();
        let duration = Family::<OpKind, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "operations",
            "Volume operations by outcome",
            operations.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "Duration of successful volume operations",
            duration.clone(),
        );
        Metrics {
            operations,
            duration,
            registry,
        }
    }
}

impl Metrics {
    pub fn record(&self, operation: &'static str, result: Result<Duration, &'static str>) {
        match result {
            Ok(d) => {
                self.operations
                    .get_or_create(&OpLabels {
                        operation,
                        result: "success",
                    })
                    .inc();
                self.duration
                    .get_or_create(&OpKind { operation })
                    .observe(d.as_secs_f64());
            }
            Err(kind) => {
                self.operations
                    .get_or_create(&OpLabels {
                        operation,
                        result: kind,
                    })
                    .inc();
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics` and `/healthz` over plain HTTP/1.1 (one request per connection).
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    loop {
        let (mut sock, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics.render(),
                ),
                "/healthz" | "/readyz" => ("200 OK", "text/plain", "ok\n".to_string()),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
