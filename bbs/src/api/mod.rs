//! The public JSON API, on the wire as Lattice's receptor: `/v1/tasks`,
//! `/v1/desired_lrps`, `/v1/actual_lrps`, `/v1/cells`, `/v1/domains`,
//! `/v1/events` (server-sent events), `/v1/version`; plus `/metrics` and `/readyz`
//! (200 when the store answers, 503 with the reason otherwise; no auth, for probes).
//! Schedules (`/v1/schedules`, `/v1/backup_schedules`) are `crate::schedules`'.
//!
//! Rules: create → 201 and update/delete/cancel/domain → 204, both with an
//! empty body; GET → 200 with `application/json`; errors → status ≥ 400 with
//! `{"name", "message"}`. Bodies may be a literal `null` on any request.
//! `/v1/*` takes API tokens with roles, HTTP Basic and backup tasks' own blob
//! credentials (see `auth`).
//!
//! One file per resource (`tasks`, `lrps`, `rollout` (an app's generations,
//! rollback and promotion), `cells` with domains and events,
//! `logs`, `blobs`, `tokens`, `exec` (`ltc ssh`: sessions inside instances and
//! Tasks, over WebSockets), `doppler` (loggregator's read side for the original
//! `ltc`: `/apps/GUID/stream|recentlogs|containermetrics`); backups live in
//! `crate::backups`), `errors` for how
//! the API says no; `auth` (who calls), `authz` (what each role may do, and on whose
//! objects), `owners` (who owns what), `redact` (what a viewer does not see) and
//! `audit` (the line every change leaves); this
//! module holds the shared state, the router and the metrics middleware.

pub(crate) mod audit;
mod auth;
pub mod authz;
mod backup_key;
mod blobs;
mod cells;
mod doppler;
mod errors;
pub(crate) mod exec;
mod logs;
mod lrps;
pub mod owners;
pub mod redact;
mod rollout;
mod tasks;
mod tokens;

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use lattice_specs::errors::ErrorName;
use lattice_specs::logs::LogBuffer;

use crate::db::Db;
use crate::events::EventHub;
use auth::authenticate;
pub(crate) use auth::caller_of;
pub use auth::Caller;
pub(crate) use blobs::blob_store;
use blobs::{delete_blob, get_blob, list_blobs, put_blob};
use cells::{events, list_cells, list_domains, upsert_domain};
use errors::json_errors;
pub use errors::ApiError;
pub(crate) use errors::{parse_body, ApiResult};
use logs::{get_logs, post_logs};
use lrps::{
    actual_lrp_by_index, actual_lrp_usage, actual_lrps_by_guid, create_desired_lrp,
    delete_desired_lrp, get_desired_lrp, kill_actual_lrp, list_actual_lrps, list_desired_lrps,
    update_desired_lrp,
};
use tasks::{cancel_task, create_task, delete_task, get_task, list_tasks};
pub use tokens::{bootstrap_admin_token, BOOTSTRAP_TOKEN};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest request body the JSON calls take (blobs are streamed, without this limit).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Largest `POST /v1/logs` body (a router ships its access lines in batches of at
/// most 1,000 lines, a few hundred KiB).
pub const MAX_LOG_POST_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub db: Db,
    pub hub: EventHub,
    /// `user:password` required on /v1/* when set.
    pub basic_auth: Option<String>,
    /// Lines pushed to the BBS (router access lines, components' debug logs).
    pub logs: LogBuffer,
    /// For asking the cells (their log lines, their containers' usage).
    pub cells: crate::cell_client::CellClient,
    /// Where backup archives live (none: this BBS keeps no blobs).
    pub blobs: Option<crate::blobs::BlobStore>,
    /// This API's URL as cells reach it (backup tasks' archives go there).
    pub public_url: String,
    /// The backup stores repositories live in (`crate::repos`).
    pub stores: crate::repos::Stores,
    /// Every repository's password (none: this BBS serves no repository's password).
    pub backup_key: Option<crate::repos::BackupKey>,
    /// `/v1/version`'s `lattice_release` (what `ltc target` compares with its own).
    pub lattice_release: String,
    /// The containers' last CPU samples, for doppler's container metrics.
    pub cpu_samples: crate::doppler::CpuSamples,
}

impl ApiState {
    /// The URL of blob `name`, without credentials (a task's own goes in with
    /// `backup_tasks::credential_url`).
    pub fn blob_url(&self, name: &str) -> String {
        let base = self.public_url.trim_end_matches('/');
        format!("{base}/v1/blobs/{}", lattice_specs::path_segment(name))
    }

    /// The `rest:` URL of `volume`'s repository carrying a fresh credential of task
    /// `task_guid`, which grants that task (while it is pending or running, in the
    /// backup domain, with a RepositoryAction of `op` on exactly this URL) `op`'s
    /// scope on that repository and its password. BackupStoreNotFound when the BBS
    /// has no store for the volume; BackupStoreUnavailable when it has no backup key.
    pub fn repo_url(
        &self,
        volume: &str,
        task_guid: &str,
        op: lattice_specs::repo::RepoOp,
    ) -> Result<String, ApiError> {
        crate::repos::rules::check_repo(volume).map_err(ApiError::invalid_request)?;
        self.stores.get("")?;
        if self.backup_key.is_none() {
            return Err(crate::repos::no_key());
        }
        crate::repos::CREDENTIALS
            .with_label_values(&[op.as_str()])
            .inc();
        Ok(crate::repos::grant::credential_repo_url(
            &self.public_url,
            volume,
            task_guid,
        ))
    }
}

fn created() -> Response {
    StatusCode::CREATED.into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn domain_filter(q: &HashMap<String, String>) -> &str {
    q.get("domain").map(String::as_str).unwrap_or("")
}

/// What the original `ltc version` shows as `Server:` (`lattice_release`) and the
/// releases under it; the ones Lattice-rs has no counterpart of say so.
async fn version(
    axum::extract::State(s): axum::extract::State<ApiState>,
) -> Json<serde_json::Value> {
    const NONE: &str = "n/a (lattice-rs)";
    Json(serde_json::json!({
        "version": VERSION,
        "api": "receptor/v1",
        "lattice_release": s.lattice_release,
        "lattice_release_image": NONE,
        "cf_release": NONE,
        "diego_release": format!("n/a (lattice-rs {VERSION}: Diego's model in Rust)"),
        "garden_linux_release": "n/a (lattice-rs: youki's libcontainer)",
        "cf_routing_release": format!("n/a (lattice-rs {VERSION} router)"),
        "receptor": format!("lattice-rs {VERSION}"),
        "ltc": "n/a (lattice-rs: no ltc sync)",
    }))
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

/// How long `/readyz` waits for the store.
const READYZ_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Ready when the store answers (its revision, the cheapest read) within
/// [`READYZ_STORE_TIMEOUT`]; otherwise 503 StoreUnavailable saying why.
async fn readyz(axum::extract::State(state): axum::extract::State<ApiState>) -> Response {
    let unavailable = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorName::StoreUnavailable,
            format!("not ready: {why}"),
        )
        .into_response()
    };
    match tokio::time::timeout(READYZ_STORE_TIMEOUT, state.db.store().revision()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => unavailable(format!("the store does not answer: {e}")),
        Err(_) => unavailable(format!(
            "the store did not answer within {READYZ_STORE_TIMEOUT:?}"
        )),
    }
}

async fn observe(req: Request, next: Next) -> Response {
    let call = match req.extensions().get::<MatchedPath>() {
        Some(p) => format!("{} {}", req.method(), p.as_str()),
        None => "unmatched".to_string(),
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    crate::metrics::REQUESTS
        .with_label_values(&["http", &call])
        .inc();
    crate::metrics::LATENCY
        .with_label_values(&["http", &call])
        .observe(start.elapsed().as_secs_f64());
    if resp.status().as_u16() >= 400 {
        crate::metrics::ERRORS
            .with_label_values(&["http", &call, resp.status().as_str()])
            .inc();
    }
    resp
}

pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/tasks", post(create_task).get(list_tasks))
        .route("/v1/tasks/{task_guid}", get(get_task).delete(delete_task))
        .route("/v1/tasks/{task_guid}/cancel", post(cancel_task))
        .route(lattice_specs::exec::API_TASK_EXEC, get(exec::task_exec))
        .route(
            lattice_specs::exec::API_TASK_FORWARD,
            get(exec::task_forward),
        )
        .route(lattice_specs::exec::API_LRP_EXEC, get(exec::lrp_exec))
        .route(lattice_specs::exec::API_LRP_FORWARD, get(exec::lrp_forward))
        .route(
            "/v1/desired_lrps",
            post(create_desired_lrp).get(list_desired_lrps),
        )
        .route(
            "/v1/desired_lrps/{process_guid}",
            get(get_desired_lrp)
                .put(update_desired_lrp)
                .delete(delete_desired_lrp),
        )
        .route(
            "/v1/desired_lrps/{process_guid}/generations",
            post(rollout::create_generation).get(rollout::list_generations),
        )
        .route(
            "/v1/desired_lrps/{process_guid}/rollback",
            post(rollout::rollback),
        )
        .route(
            "/v1/desired_lrps/{process_guid}/promote",
            post(rollout::promote),
        )
        .route("/v1/actual_lrps", get(list_actual_lrps))
        .route("/v1/actual_lrps/{process_guid}", get(actual_lrps_by_guid))
        .route(
            "/v1/actual_lrps/{process_guid}/usage",
            get(actual_lrp_usage),
        )
        .route(
            "/v1/actual_lrps/{process_guid}/index/{index}",
            get(actual_lrp_by_index).delete(kill_actual_lrp),
        )
        .route("/v1/cells", get(list_cells))
        .route("/v1/domains", get(list_domains))
        .route("/v1/domains/{domain}", put(upsert_domain))
        .route("/v1/events", get(events))
        .route("/v1/version", get(version))
        .route(
            "/v1/logs",
            post(post_logs).layer(DefaultBodyLimit::max(MAX_LOG_POST_BYTES)),
        )
        .route("/v1/blobs", get(list_blobs))
        .route("/v1/backup_key", get(backup_key::get_backup_key))
        .route(
            "/v1/blobs/{name}",
            // POST too: Diego's Upload action posts its file.
            put(put_blob)
                .post(put_blob)
                .get(get_blob)
                .delete(delete_blob),
        )
        .route("/v1/logs/{log_guid}", get(get_logs))
        .merge(crate::backups::routes())
        .merge(crate::schedules::routes())
        .merge(tokens::routes())
        .merge(crate::repos::routes())
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(v1)
        .merge(doppler::routes(state.clone()))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, ErrorName::NotFound, "no such API path; see /v1/tasks, /v1/desired_lrps, /v1/actual_lrps, /v1/cells, /v1/domains, /v1/events") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lattice_specs::repo::{RepoOp, RepoScope};

    use super::*;
    use crate::repos::{BackupKey, MemStore, Stores};

    async fn state(stores: Stores, key: Option<BackupKey>) -> (ApiState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn crate::store::Store> =
            Arc::new(crate::store::embedded::EmbeddedStore::open(dir.path().join("db")).unwrap());
        let db = Db::new(store.clone());
        let s = ApiState {
            db: db.clone(),
            hub: EventHub::start(store).await,
            basic_auth: None,
            logs: Default::default(),
            cells: crate::cell_client::CellClient::new(None, Arc::new(db)).unwrap(),
            blobs: None,
            public_url: "https://10.0.0.1:8888/".into(),
            stores,
            backup_key: key,
            lattice_release: VERSION.into(),
            cpu_samples: Default::default(),
        };
        (s, dir)
    }

    #[tokio::test]
    async fn repo_url_gives_a_task_its_own_credential_on_the_volumes_repository() {
        let (s, _d) = state(Stores::default(), None).await;
        let e = s.repo_url("pg", "backup-pg-1", RepoOp::Backup).unwrap_err();
        assert!(format!("{e:?}").contains("BackupStoreNotFound"), "{e:?}");

        let mem: Arc<dyn crate::repos::RepoStore> = Arc::new(MemStore::default());
        let stores = Stores::from_stores(vec![("default".into(), mem)]);
        let (s, dir) = state(stores.clone(), None).await;
        let e = s.repo_url("pg", "backup-pg-1", RepoOp::Backup).unwrap_err();
        assert!(format!("{e:?}").contains("--backup-key-file"), "{e:?}");

        let key = BackupKey::load_or_create(&dir.path().join("k")).unwrap();
        let (s, _d) = state(stores, Some(key)).await;
        let url = s.repo_url("pg", "forget-pg-1", RepoOp::Forget).unwrap();
        assert!(url.starts_with("rest:https://lattice-task:"), "{url}");
        assert!(url.ends_with("@10.0.0.1:8888/v1/repos/pg/"), "{url}");
        assert_ne!(
            url,
            s.repo_url("pg", "forget-pg-1", RepoOp::Forget).unwrap()
        );
        assert!(s.repo_url("../x", "t", RepoOp::Backup).is_err());
        let task = lattice_specs::models::Task {
            task_guid: "forget-pg-1".into(),
            domain: lattice_specs::backup::DOMAIN.into(),
            state: lattice_specs::models::task::State::Running as i32,
            definition: Some(lattice_specs::models::TaskDefinition {
                action: Some(lattice_specs::models::Action {
                    action: Some(lattice_specs::models::action::Action::Repository(
                        lattice_specs::models::RepositoryAction {
                            op: "forget".into(),
                            repository: url.clone(),
                            ..Default::default()
                        },
                    )),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let password = reqwest::Url::parse(url.strip_prefix("rest:").unwrap())
            .unwrap()
            .password()
            .unwrap()
            .to_string();
        assert_eq!(
            crate::repos::grant::task_scope(&task, "pg", &password),
            Some(RepoScope::Prune)
        );
    }
}
