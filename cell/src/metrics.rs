//! The cell's Prometheus metrics: containers by state, starts, crashes, the time from
//! receiving work to RUNNING, each container's memory and CPU, the volumes, and the
//! connections logged egress rules allowed, the DNS server's answers, the calls
//! refused to their caller's identity.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// One rep's metrics (a registry per rep, so several cells in one process stay apart).
pub struct Metrics {
    registry: Registry,
    pub containers: IntGaugeVec,
    pub starts: IntCounter,
    /// Work a Perform asked for that the BBS does not store as sent.
    pub refused: IntCounter,
    pub crashes: IntCounter,
    pub start_latency: Histogram,
    pub memory: GaugeVec,
    pub cpu: GaugeVec,
    /// The volume pool: bytes by kind (size, used, max).
    pub volume_pool: IntGaugeVec,
    /// The volume pool's growths at its watermark, by result (grown, failed).
    pub volume_pool_growths: IntCounterVec,
    /// Each volume's bytes by kind (size, used).
    pub volumes: IntGaugeVec,
    /// Connections allowed by egress rules with `log: true`.
    pub logged_connections: IntCounter,
    /// Queries to the cell's DNS server, by answer (see [`crate::dns::AnswerKind`]).
    pub dns_queries: IntCounterVec,
    /// Other cells whose subnets the overlay forwards to.
    pub overlay_peers: prometheus::IntGauge,
    /// Calls to the rep refused to the caller's identity, by its role and call.
    pub authz_refused: IntCounterVec,
    /// Exec and port-forward sessions (`ltc ssh`) by kind and outcome.
    pub sessions: IntCounterVec,
    /// Sessions open now, by kind.
    pub sessions_open: IntGaugeVec,
    /// Containers stopped because the cell's presence lapsed while they mounted a
    /// failover volume (the self-fence).
    pub self_fenced: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let containers = IntGaugeVec::new(
            Opts::new("cell_containers", "Containers on this cell, by state."),
            &["state"],
        )
        .unwrap();
        let starts = IntCounter::new("cell_container_starts_total", "Containers created.").unwrap();
        let refused = IntCounter::new(
            "cell_refused_work_total",
            "Work a Perform asked for whose definition the BBS does not store as sent.",
        )
        .unwrap();
        let crashes = IntCounter::new(
            "cell_container_crashes_total",
            "LRP instances reported crashed (exit, failed health check, OOM).",
        )
        .unwrap();
        let start_latency = Histogram::with_opts(
            HistogramOpts::new(
                "cell_start_latency_seconds",
                "From the rep receiving work to the instance being RUNNING.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .unwrap();
        let memory = GaugeVec::new(
            Opts::new(
                "cell_container_memory_bytes",
                "Memory in use, per container.",
            ),
            &["handle", "source"],
        )
        .unwrap();
        let cpu = GaugeVec::new(
            Opts::new(
                "cell_container_cpu_seconds",
                "CPU time used, per container.",
            ),
            &["handle", "source"],
        )
        .unwrap();
        let volume_pool = IntGaugeVec::new(
            Opts::new(
                "cell_volume_pool_bytes",
                "The local volume driver's pool, by kind (size, used, max); past 80% used it grows up to max, at max the cell warns.",
            ),
            &["kind"],
        )
        .unwrap();
        let volume_pool_growths = IntCounterVec::new(
            Opts::new(
                "cell_volume_pool_growths_total",
                "Growths of the local volume driver's pool at its watermark, by result (grown, failed).",
            ),
            &["result"],
        )
        .unwrap();
        let volumes = IntGaugeVec::new(
            Opts::new("cell_volume_bytes", "Each volume's size and use."),
            &["volume", "kind"],
        )
        .unwrap();
        let logged_connections = IntCounter::new(
            "cell_logged_egress_connections_total",
            "Connections containers opened that egress rules with log: true allowed (each a line in the app's log).",
        )
        .unwrap();
        let self_fenced = IntCounter::new(
            "cell_self_fenced_containers_total",
            "Containers stopped because the cell's presence lapsed while they mounted a failover volume.",
        )
        .unwrap();
        let dns_queries = crate::dns::queries_metric();
        let (sessions, sessions_open) = session_metrics();
        let overlay_peers = prometheus::IntGauge::new(
            "cell_overlay_peers",
            "Other cells whose container subnets this cell's overlay forwards to.",
        )
        .unwrap();
        let authz_refused = IntCounterVec::new(
            Opts::new(
                "cell_authz_refused_total",
                "Calls to the rep refused to the caller's identity (Perform not from a brain…), by its role and call.",
            ),
            &["role", "call"],
        )
        .unwrap();
        for c in [
            Box::new(containers.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(authz_refused.clone()),
            Box::new(sessions.clone()),
            Box::new(sessions_open.clone()),
            Box::new(logged_connections.clone()),
            Box::new(self_fenced.clone()),
            Box::new(dns_queries.clone()),
            Box::new(overlay_peers.clone()),
            Box::new(volume_pool.clone()),
            Box::new(volume_pool_growths.clone()),
            Box::new(volumes.clone()),
            Box::new(starts.clone()),
            Box::new(refused.clone()),
            Box::new(crashes.clone()),
            Box::new(start_latency.clone()),
            Box::new(memory.clone()),
            Box::new(cpu.clone()),
        ] {
            registry.register(c).unwrap();
        }
        Metrics {
            registry,
            overlay_peers,
            containers,
            starts,
            refused,
            crashes,
            start_latency,
            memory,
            cpu,
            volume_pool,
            volume_pool_growths,
            volumes,
            logged_connections,
            dns_queries,
            authz_refused,
            sessions,
            sessions_open,
            self_fenced,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }
}

/// `cell_exec_sessions_total{kind,outcome}` and `cell_exec_sessions_open{kind}`
/// (`kind`: `exec` or `forward`).
fn session_metrics() -> (IntCounterVec, IntGaugeVec) {
    let total = IntCounterVec::new(
        Opts::new(
            "cell_exec_sessions_total",
            "Exec and port-forward sessions (ltc ssh) into containers, by kind (exec, forward) and outcome (exited, error, closed, refused).",
        ),
        &["kind", "outcome"],
    )
    .unwrap();
    let open = IntGaugeVec::new(
        Opts::new(
            "cell_exec_sessions_open",
            "Exec and port-forward sessions open now, by kind.",
        ),
        &["kind"],
    )
    .unwrap();
    (total, open)
}
