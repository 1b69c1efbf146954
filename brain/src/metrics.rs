//! The numbers Diego alerts on: auctions started/failed, batch sizes and
//! durations, cell state fetches, and what each convergence found.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn reg<T: prometheus::core::Collector + Clone + 'static>(c: T) -> T {
    REGISTRY.register(Box::new(c.clone())).unwrap();
    c
}

fn counter(name: &str, help: &str) -> IntCounter {
    reg(IntCounter::new(name, help).unwrap())
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    reg(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).unwrap())
}

pub static LRP_AUCTIONS_STARTED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "brain_lrp_auctions_started_total",
        "LRP instances sent to cells by an auction.",
    )
});
pub static LRP_AUCTIONS_FAILED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "brain_lrp_auctions_failed_total",
        "LRP instances no cell could take (placement error recorded).",
    )
});
pub static TASK_AUCTIONS_STARTED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "brain_task_auctions_started_total",
        "Tasks sent to cells by an auction.",
    )
});
pub static TASK_AUCTIONS_FAILED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "brain_task_auctions_failed_total",
        "Tasks no cell could take (rejected).",
    )
});
pub static SCHEDULED_RUNS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "brain_scheduled_runs_total",
            "Schedule steps, by kind of schedule (task/backup) and outcome (started/skipped/failed/pruned/refused).",
        ),
        &["kind", "outcome"],
    )
    .unwrap())
});
pub static VOLUME_FAILOVERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "brain_volume_failovers_total",
            "Failover steps for volumes of lost cells, by outcome (moved/stuck/refused).",
        ),
        &["outcome"],
    )
    .unwrap())
});
pub static AUCTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "brain_auctions_total",
            "Auction rounds, by outcome (succeeded/failed).",
        ),
        &["outcome"],
    )
    .unwrap())
});
pub static BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "brain_auction_batch_size",
        "Work items per auction round.",
        prometheus::exponential_buckets(1.0, 4.0, 10).unwrap(),
    )
});
pub static AUCTION_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "brain_auction_duration_seconds",
        "Duration of an auction round.",
        prometheus::exponential_buckets(0.0005, 2.5, 14).unwrap(),
    )
});
pub static DECISION_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "brain_auction_decision_seconds",
        "Time the placement core took to decide an auction round.",
        prometheus::exponential_buckets(0.00005, 2.0, 20).unwrap(),
    )
});
pub static CELLS_FETCHED: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "brain_cells_fetched",
        "Cells whose state the last auction got.",
    )
    .unwrap())
});
pub static CELL_FETCH_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "brain_cell_state_fetch_failures_total",
        "Cell state fetches that failed or timed out.",
    )
});
pub static FETCH_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "brain_cell_state_fetch_duration_seconds",
        "Time to fetch every cell's state.",
        prometheus::exponential_buckets(0.0005, 2.5, 14).unwrap(),
    )
});
pub static CONVERGENCE_FOUND: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    reg(IntGaugeVec::new(
        Opts::new(
            "brain_convergence_lrps",
            "LRP instances the last convergence found, by kind (missing/extra/crashed/lost/stale).",
        ),
        &["kind"],
    )
    .unwrap())
});
pub static CONVERGENCE_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "brain_convergence_duration_seconds",
        "Duration of a convergence pass.",
        prometheus::exponential_buckets(0.001, 2.5, 14).unwrap(),
    )
});
pub static IS_LEADER: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "brain_is_leader",
        "1 while this brain holds the lock and acts.",
    )
    .unwrap())
});

pub static DEPLOYMENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "brain_deployments_total",
            "Rolling updates that ended, by result (succeeded/failed/rolled_back).",
        ),
        &["result"],
    )
    .unwrap())
});
pub static ROLLOUT_STEPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    reg(IntCounterVec::new(
        Opts::new(
            "brain_rollout_steps_total",
            "Rolling-update steps made, by step (replace/replace_surge/drain/remove_replaced/restore/fail/progress).",
        ),
        &["step"],
    )
    .unwrap())
});
pub static DEPLOYMENTS_IN_PROGRESS: LazyLock<IntGauge> = LazyLock::new(|| {
    reg(IntGauge::new(
        "brain_deployments_in_progress",
        "Apps whose rolling update the active brain is moving.",
    )
    .unwrap())
});

pub fn render() -> String {
    let _ = (
        &*LRP_AUCTIONS_STARTED,
        &*LRP_AUCTIONS_FAILED,
        &*TASK_AUCTIONS_STARTED,
        &*TASK_AUCTIONS_FAILED,
        &*AUCTIONS,
    );
    let _ = (
        &*BATCH_SIZE,
        &*AUCTION_DURATION,
        &*CELLS_FETCHED,
        &*CELL_FETCH_FAILURES,
        &*FETCH_DURATION,
    );
    let _ = (&*CONVERGENCE_FOUND, &*CONVERGENCE_DURATION, &*IS_LEADER);
    let _ = (&*DEPLOYMENTS, &*ROLLOUT_STEPS, &*DEPLOYMENTS_IN_PROGRESS);
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut buf)
        .unwrap();
    String::from_utf8(buf).unwrap()
}
