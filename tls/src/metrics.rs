//! Prometheus metrics of the TLS layer; a component adds them to its registry with
//! [`register`].

use std::sync::LazyLock;

use prometheus::{IntCounterVec, Opts, Registry};

/// TLS handshakes that failed on a listener, by reason (a short word from rustls's
/// error: `certificate`, `timeout`, `protocol`, `io`).
pub static HANDSHAKE_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "tls_handshake_failures_total",
            "TLS handshakes refused or failed on a listener, by reason.",
        ),
        &["reason"],
    )
    .unwrap()
});

/// Certificates reloaded from disk (renewals picked up), by outcome (`ok`, `invalid`).
pub static CERT_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "tls_cert_reloads_total",
            "Certificate files changed on disk and reloaded, by outcome.",
        ),
        &["outcome"],
    )
    .unwrap()
});

/// Adds the TLS metrics to `registry` (once per registry).
pub fn register(registry: &Registry) {
    for c in [&*HANDSHAKE_FAILURES, &*CERT_RELOADS] {
        if let Err(e) = registry.register(Box::new(c.clone())) {
            tracing::debug!(error = %e, "tls metrics already registered");
        }
    }
}
