//! Router metrics: requests by app and status, latency, backend errors, routes,
//! HTTPS handshakes, TCP routes' listeners and connections.

use std::sync::{LazyLock, Mutex};

use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn reg<T: prometheus::core::Collector + Clone + 'static>(c: T) -> T {
    REGISTRY.register(Box::new(c.clone())).unwrap();
    c
}

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "router_requests_total",
            "Requests by app (process guid, or - when unrouted) and status.",
        ),
        &["app", "status"],
    )
    .unwrap())
});
pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    reg(HistogramVec::new(
        HistogramOpts::new(
            "router_request_duration_seconds",
            "Time to the response headers, by app.",
        )
        .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18).unwrap()),
        &["app"],
    )
    .unwrap())
});
/// One app's share of REQUESTS (status 200) and LATENCY, buffered for one event
/// loop (each loop's view of the routes has its own) and added to the shared
/// metrics by [`AppMetrics::flush`], which the loop calls every tick, and on drop:
/// the loops do not write the same atomics on every request.
#[derive(Debug)]
pub struct AppMetrics {
    local: Mutex<(LocalIntCounter, LocalHistogram)>,
}

impl AppMetrics {
    pub fn new(app: &str) -> AppMetrics {
        AppMetrics {
            local: Mutex::new((
                REQUESTS.with_label_values(&[app, "200"]).local(),
                LATENCY.with_label_values(&[app]).local(),
            )),
        }
    }

    /// A request answered with `ok` (200) or not, after `secs`.
    pub fn observe(&self, ok: bool, secs: f64) {
        let local = self.local.lock().unwrap();
        if ok {
            local.0.inc();
        }
        local.1.observe(secs);
    }

    pub fn flush(&self) {
        let local = self.local.lock().unwrap();
        local.0.flush();
        local.1.flush();
    }
}

impl Drop for AppMetrics {
    fn drop(&mut self) {
        self.flush();
    }
}

pub static BACKEND_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "router_backend_errors_total",
            "Failed attempts to reach an instance, by kind (connect/timeout/other).",
        ),
        &["kind"],
    )
    .unwrap())
});
pub static ROUTES: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new("router_routes", "Routes (host, instance) in the table.").unwrap())
});
pub static BBS_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "router_bbs_errors_total",
        "Times the router lost the BBS and reconnected.",
    )
    .unwrap())
});

pub static ACCESS_LINES_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "router_access_lines_dropped_total",
        "Access lines not sent to the apps' logs because the queue was full.",
    )
    .unwrap())
});

pub static TLS_CONNECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "router_tls_connections_total",
            "HTTPS connections whose handshake completed, by protocol chosen by ALPN (h2/http/1.1).",
        ),
        &["protocol"],
    )
    .unwrap())
});
pub static TLS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "router_tls_refused_total",
            "TLS handshakes that did not complete, by reason (unknown_name: no certificate for the name asked; no_name: no SNI; timeout; handshake: anything else).",
        ),
        &["reason"],
    )
    .unwrap())
});

pub static TCP_CONNECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "router_tcp_connections_total",
            "TCP route connections by external port and result (forwarded; no_instance: none RUNNING; unreachable: every instance refused; refused_full: past --tcp-max-connections).",
        ),
        &["port", "result"],
    )
    .unwrap())
});
pub static TCP_ACTIVE: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "router_tcp_active_connections",
        "TCP route connections open now.",
    )
    .unwrap())
});
pub static TCP_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "router_tcp_bytes_total",
            "Bytes forwarded by TCP routes' finished connections, by direction (up: to the instance).",
        ),
        &["direction"],
    )
    .unwrap())
});
pub static TCP_LISTENERS: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "router_tcp_listeners",
        "External ports listened on for TCP routes.",
    )
    .unwrap())
});
pub static TCP_LISTEN_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    reg(IntCounter::new(
        "router_tcp_listen_errors_total",
        "Failed attempts to listen on a TCP route's external port (in use by another program; retried).",
    )
    .unwrap())
});
pub static TCP_PORT_CONFLICTS: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "router_tcp_port_conflicts",
        "External ports asked for by more than one app (the first by name is served).",
    )
    .unwrap())
});

pub fn render() -> String {
    let _ = (
        &*REQUESTS,
        &*LATENCY,
        &*BACKEND_ERRORS,
        &*ROUTES,
        &*BBS_ERRORS,
        &*ACCESS_LINES_DROPPED,
        &*TLS_CONNECTIONS,
        &*TLS_REFUSED,
        &*TCP_CONNECTIONS,
        &*TCP_ACTIVE,
        &*TCP_BYTES,
        &*TCP_LISTENERS,
        &*TCP_LISTEN_ERRORS,
        &*TCP_PORT_CONFLICTS,
    );
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut buf)
        .unwrap();
    String::from_utf8(buf).unwrap()
}
