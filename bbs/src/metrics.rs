//! Prometheus metrics of the BBS, served at `/metrics` on the API listener.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{Encoder, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::db::DbError;
use crate::store::StoreError;

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap();
    REGISTRY.register(Box::new(c.clone())).unwrap();
    c
}

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_requests_total",
        "Requests handled, by API (grpc/http) and call.",
        &["api", "call"],
    )
});
pub static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_request_errors_total",
        "Requests that failed, by API, call and error name.",
        &["api", "call", "error"],
    )
});
pub static DOCKER_V1_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_docker_v1_requests_total",
        "Requests to the Docker v1 registry face (`docker_v1`), by request (ping, images, tags, tag, json, ancestry, layer, unsupported, v2) and HTTP status.",
        &["request", "status"],
    )
});
pub static API_CHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_api_changes_total",
        "Changes made through the public API (each has its audit line), by the caller's role and HTTP verb.",
        &["role", "verb"],
    )
});
pub static API_NOT_OWNER: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_api_not_owner_total",
        "Public API requests refused (403) because a developer token does not own the object, by kind (app, task, volume, backup).",
        &["kind"],
    )
});
pub static API_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_api_refused_total",
        "Public API requests refused (403) because the caller's role may not make them, by role.",
        &["role"],
    )
});
pub static API_EXEC_SESSIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_api_exec_sessions_total",
        "Sessions inside instances and Tasks (`ltc ssh`) through the public API, by kind (exec, forward) and outcome (closed_by_client, closed_by_rep, rep_broke, bad_request, shutdown; not opened: refused, unreachable, not_websocket).",
        &["kind", "outcome"],
    )
});
pub static SSH_LOGINS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_ssh_logins_total",
        "Logins at the ssh proxy (Diego's, port 2222), by outcome (accepted, refused).",
        &["outcome"],
    )
});
pub static SSH_SESSIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_ssh_sessions_total",
        "Channels through the ssh proxy, by kind (session, direct_tcpip over the exec path; relayed_session, relayed_direct_tcpip through the instance's own sshd) and outcome (exited, failed, closed_by_client, rep_broke, closed, closed_by_instance, instance_broke; not opened: refused, unsupported).",
        &["kind", "outcome"],
    )
});
pub static DAV_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_dav_requests_total",
        "Requests to the WebDAV blob store (port 8444), by method and status.",
        &["method", "status"],
    )
});
pub static API_EXEC_OPEN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let g = IntGaugeVec::new(
        Opts::new(
            "bbs_api_exec_sessions_open",
            "Sessions inside instances and Tasks open now through the public API, by kind (exec, forward).",
        ),
        &["kind"],
    )
    .unwrap();
    REGISTRY.register(Box::new(g.clone())).unwrap();
    g
});
pub static DOPPLER_STREAMS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_doppler_streams_total",
        "Doppler log streams (`ltc logs`, `ltc debug-logs` of the original ltc) ended, by how (closed_by_client, slow_client: a send waited too long and the client was dropped, ended: the BBS stops).",
        &["outcome"],
    )
});
pub static DOPPLER_STREAMS_OPEN: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    let g = prometheus::IntGauge::new("bbs_doppler_streams_open", "Doppler log streams open now.")
        .unwrap();
    REGISTRY.register(Box::new(g.clone())).unwrap();
    g
});
pub static ROLLOUTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_rollout_changes_total",
        "Rolling-update changes recorded, by change (generation, promote, rollback, rollback_failed, replace, surge, drain, remove_replaced, restore).",
        &["change"],
    )
});
pub static BACKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_backups_total",
        "Backups finished, by outcome (COMPLETED/FAILED).",
        &["state"],
    )
});
pub static BACKUP_ALERTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_backup_alerts_total",
        "Backups that failed or earned a warning (far smaller or faster than the previous one), by volume and kind.",
        &["volume", "kind"],
    )
});
pub static BACKUP_HOOKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_backup_hooks_total",
        "Backup hooks run in app instances, by hook (pre/post) and outcome (ok/failed/skipped).",
        &["hook", "outcome"],
    )
});
pub static BACKUP_VERIFICATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_backup_verifications_total",
        "Backup verifications finished (restored into scratch space and checked), by verdict (ok/failed).",
        &["verdict"],
    )
});
pub static BACKUP_VERIFIED_AGE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let g = IntGaugeVec::new(
        Opts::new(
            "bbs_backup_newest_verified_age_seconds",
            "Age of each volume's newest backup a verification found good (volumes with one).",
        ),
        &["volume"],
    )
    .unwrap();
    REGISTRY.register(Box::new(g.clone())).unwrap();
    g
});
pub static BACKUP_FORGETS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_backup_forgets_total",
        "Retention's removals from repositories: forget tasks started (started), backups forgotten (forgotten), forget tasks failed and retried later (failed), no store or key for the volume (refused).",
        &["outcome"],
    )
});
pub static FAILOVERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_volume_failovers_total",
        "Volumes moved off a lost cell to be refilled from their backup, by volume.",
        &["volume"],
    )
});
pub static STANDBY: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_volume_standby_total",
        "Standby copies placed on a cell, refreshed from a backup, or whose refresh failed.",
        &["event"],
    )
});
pub static CERTIFICATES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_certificates_issued_total",
        "Certificates issued to joining or renewing machines, by role and kind (join/renew).",
        &["role", "kind"],
    )
});
pub static STORE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_store_errors_total",
        "Store failures seen by requests, by kind.",
        &["kind"],
    )
});
pub static API_TLS_HANDSHAKE_FAILURES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    let c = prometheus::IntCounter::new(
        "bbs_api_tls_handshake_failures_total",
        "Connections to the public API dropped in their TLS handshake (wrong protocol, unknown CA at the client, too slow).",
    )
    .unwrap();
    REGISTRY.register(Box::new(c.clone())).unwrap();
    c
});
pub static AUTHZ_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_authz_refused_total",
        "Internal calls refused to the caller's identity, by its role (or anonymous) and call.",
        &["role", "call"],
    )
});
pub static TASK_CALLBACKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bbs_task_callbacks_total",
        "Task completion callbacks finished, by outcome (delivered: 2xx; refused: 4xx, not retried; failed: no success before the retry window closed).",
        &["outcome"],
    )
});
pub static TASK_CALLBACK_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    let h = HistogramVec::new(
        prometheus::HistogramOpts::new(
            "bbs_task_callback_duration_seconds",
            "Time of each completion callback POST, by answer (2xx…5xx, unreachable, timeout).",
        )
        .buckets(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]),
        &["answer"],
    )
    .unwrap();
    REGISTRY.register(Box::new(h.clone())).unwrap();
    h
});
pub static EVENTS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter("bbs_events_total", "Events published, by type.", &["event"]));
pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    let h = HistogramVec::new(
        prometheus::HistogramOpts::new(
            "bbs_request_duration_seconds",
            "Request latency, by API and call.",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0,
        ]),
        &["api", "call"],
    )
    .unwrap();
    REGISTRY.register(Box::new(h.clone())).unwrap();
    h
});

/// Count, time and classify one request.
pub async fn observe<T>(
    api: &str,
    call: &str,
    f: impl Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    let start = Instant::now();
    let r = f.await;
    REQUESTS.with_label_values(&[api, call]).inc();
    LATENCY
        .with_label_values(&[api, call])
        .observe(start.elapsed().as_secs_f64());
    if let Err(e) = &r {
        ERRORS
            .with_label_values(&[api, call, e.name().as_str()])
            .inc();
        if let DbError::Store(se) = e {
            let kind = match se {
                StoreError::Unavailable(_) => "unavailable",
                StoreError::LeaseNotFound(_) => "lease_not_found",
                StoreError::WatchLost(_) => "watch_lost",
                StoreError::TooManyOps(_) => "too_many_ops",
                StoreError::Internal(_) => "internal",
            };
            STORE_ERRORS.with_label_values(&[kind]).inc();
        }
    }
    r
}

/// The text exposition of every metric.
pub fn render() -> String {
    // Touch the lazies so every family is listed even before its first use.
    let _ = (
        &*REQUESTS,
        &*ERRORS,
        &*STORE_ERRORS,
        &*AUTHZ_REFUSED,
        &*EVENTS,
        &*LATENCY,
        &*TASK_CALLBACKS,
        &*TASK_CALLBACK_SECONDS,
    );
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut buf)
        .unwrap();
    String::from_utf8(buf).unwrap()
}
