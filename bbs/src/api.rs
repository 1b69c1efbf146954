//! The public JSON API, on the wire as Lattice's receptor: `/v1/tasks`,
//! `/v1/desired_lrps`, `/v1/actual_lrps`, `/v1/cells`, `/v1/domains`,
//! `/v1/events` (server-sent events), `/v1/version`; plus `/metrics`.
//!
//! Rules: create → 201 and update/delete/cancel/domain → 204, both with an
//! empty body; GET → 200 with `application/json`; errors → status ≥ 400 with
//! `{"name", "message"}`. Bodies may be a literal `null` on any request.
//! With credentials configured, `/v1/*` requires HTTP Basic auth.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use futures::{Stream, StreamExt};
use lattice_specs::errors::ErrorName;
use lattice_specs::logs::{decode_ndjson, LogBuffer};
use lattice_specs::models::Domain;
use lattice_specs::receptor::{
    self, ActualLrpResponse, CellResponse, DesiredLrpResponse, EventPayload, TaskResponse,
};
use serde::de::DeserializeOwned;
use tokio_stream::wrappers::BroadcastStream;

use crate::db::{Db, DbError};
use crate::events::{event_name, EventHub};
use crate::store::StoreError;

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
    /// For fetching the cells' log lines.
    pub http: reqwest::Client,
    /// Where backup archives live (none: this BBS keeps no blobs).
    pub blobs: Option<crate::blobs::BlobStore>,
    /// This API's URL as cells reach it (backup tasks' archives go there).
    pub public_url: String,
}

impl ApiState {
    /// The URL a task's Upload/Download uses for blob `name` (with the API's
    /// credentials, when it has some).
    pub fn blob_url(&self, name: &str) -> String {
        let base = self.public_url.trim_end_matches('/');
        let base = match (&self.basic_auth, base.split_once("://")) {
            (Some(auth), Some((scheme, rest))) => {
                let (user, pass) = auth.split_once(':').unwrap_or((auth, ""));
                format!(
                    "{scheme}://{}:{}@{rest}",
                    lattice_specs::path_segment(user),
                    lattice_specs::path_segment(pass)
                )
            }
            _ => base.to_string(),
        };
        format!("{base}/v1/blobs/{}", lattice_specs::path_segment(name))
    }
}

/// An error as the receptor wrote it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    name: ErrorName,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, name: ErrorName, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            name,
            message: message.into(),
        }
    }

    pub(crate) fn unknown(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorName::Unknown,
            message,
        )
    }

    pub(crate) fn conflict(name: ErrorName, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, name, message)
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorName::InvalidRequest, message)
    }

    /// Map a BBS error; `invalid_name` is what validation failures are called
    /// here (the receptor said InvalidTask / InvalidLRP / InvalidRequest).
    pub(crate) fn from_db(e: DbError, invalid_name: ErrorName) -> ApiError {
        let msg = e.to_string();
        match &e {
            DbError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, invalid_name, msg),
            DbError::NotFound { name, .. } => ApiError::new(StatusCode::NOT_FOUND, *name, msg),
            DbError::AlreadyExists { name, .. } => ApiError::new(StatusCode::CONFLICT, *name, msg),
            DbError::Refused(m) => {
                let name = match m.name() {
                    ErrorName::TaskNotResolvable => ErrorName::TaskNotDeletable,
                    other => other,
                };
                ApiError::new(StatusCode::CONFLICT, name, msg)
            }
            DbError::Store(StoreError::Unavailable(_)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorName::StoreUnavailable,
                format!("{msg}; retry when the store is back"),
            ),
            DbError::Contended(_) => {
                ApiError::new(StatusCode::CONFLICT, ErrorName::ResourceConflict, msg)
            }
            DbError::Conflict { name, .. } => ApiError::new(StatusCode::CONFLICT, *name, msg),
            _ => ApiError::unknown(msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(receptor::Error {
                name: self.name.to_string(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Parse a JSON body ([`receptor::parse_request`]): empty or `null` gives the type's
/// default (which validation then refuses field by field, as the receptor did).
pub(crate) fn parse_body<T: DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    receptor::parse_request(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorName::InvalidJSON, e.message))
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

// ------------------------------------------------------------------ tasks

async fn create_task(State(s): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let req: receptor::TaskCreateRequest = parse_body(&body)?;
    let (guid, domain, def) = req.into_model();
    s.db.desire_task(&guid, &domain, def)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidTask))?;
    tracing::info!(task_guid = %guid, "task desired");
    Ok(created())
}

async fn list_tasks(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<TaskResponse>>> {
    let tasks =
        s.db.tasks(
            domain_filter(&q),
            q.get("cell_id").map(String::as_str).unwrap_or(""),
        )
        .await;
    Ok(Json(
        tasks
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?
            .into_iter()
            .map(TaskResponse::from)
            .collect(),
    ))
}

async fn get_task(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Json<TaskResponse>> {
    Ok(Json(
        s.db.task(&guid)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?
            .into(),
    ))
}

/// The receptor's delete: mark the completed task resolving, then remove it.
async fn delete_task(State(s): State<ApiState>, Path(guid): Path<String>) -> ApiResult<Response> {
    match s.db.resolving_task(&guid).await {
        Ok(_) => {}
        // Already resolving (a retried delete): go on and remove it.
        Err(DbError::Refused(_))
            if s.db
                .task(&guid)
                .await
                .is_ok_and(|t| t.state == lattice_specs::models::task::State::Resolving as i32) => {
        }
        Err(DbError::Refused(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorName::TaskNotDeletable,
                format!("task {guid} has not completed; cancel it or retry when it is COMPLETED"),
            ))
        }
        Err(e) => return Err(ApiError::from_db(e, ErrorName::InvalidRequest)),
    }
    s.db.delete_task(&guid)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(no_content())
}

async fn cancel_task(State(s): State<ApiState>, Path(guid): Path<String>) -> ApiResult<Response> {
    s.db.cancel_task(&guid)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(no_content())
}

// ----------------------------------------------------------- desired LRPs

async fn create_desired_lrp(State(s): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let req: receptor::DesiredLrpCreateRequest = parse_body(&body)?;
    let d = req.into_model();
    let guid = d.process_guid.clone();
    s.db.desire_lrp(d)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidLRP))?;
    tracing::info!(process_guid = %guid, "LRP desired");
    Ok(created())
}

async fn list_desired_lrps(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<DesiredLrpResponse>>> {
    let all =
        s.db.desired_lrps(domain_filter(&q))
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(Json(
        all.into_iter().map(DesiredLrpResponse::from).collect(),
    ))
}

async fn get_desired_lrp(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Json<DesiredLrpResponse>> {
    Ok(Json(
        s.db.desired_lrp(&guid)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?
            .into(),
    ))
}

async fn update_desired_lrp(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: receptor::DesiredLrpUpdateRequest = parse_body(&body)?;
    s.db.update_desired_lrp(&guid, req.into_model())
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidLRP))?;
    Ok(no_content())
}

async fn delete_desired_lrp(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Response> {
    s.db.remove_desired_lrp(&guid)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(no_content())
}

// ------------------------------------------------------------ actual LRPs

async fn list_actual_lrps(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<ActualLrpResponse>>> {
    let all =
        s.db.actual_lrps(domain_filter(&q), "", "", None)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(Json(all.into_iter().map(ActualLrpResponse::from).collect()))
}

async fn actual_lrps_by_guid(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Vec<ActualLrpResponse>>> {
    let all =
        s.db.actual_lrps("", "", &guid, None)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(Json(all.into_iter().map(ActualLrpResponse::from).collect()))
}

/// `GET /v1/actual_lrps/:process_guid/usage` (extension): memory, CPU time and disk
/// of each of the LRP's containers, from the cells that run them.
async fn actual_lrp_usage(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Json<Vec<receptor::ContainerUsage>>> {
    let invalid = |e| ApiError::from_db(e, ErrorName::InvalidRequest);
    let instances: HashMap<String, String> =
        s.db.actual_lrps("", "", &guid, None)
            .await
            .map_err(invalid)?
            .into_iter()
            .filter_map(|a| a.instance_key)
            .filter(|k| !k.cell_id.is_empty())
            .map(|k| (k.instance_guid, k.cell_id))
            .collect();
    let reps: HashMap<String, String> =
        s.db.cells()
            .await
            .map_err(invalid)?
            .into_iter()
            .map(|c| (c.cell_id, c.rep_address))
            .collect();
    Ok(Json(crate::usage::gather(&s.http, &reps, &instances).await))
}

fn parse_index(raw: &str) -> ApiResult<i32> {
    raw.parse::<i32>().ok().filter(|i| *i >= 0).ok_or_else(|| {
        ApiError::invalid_request(format!("index must be a non-negative integer, got {raw:?}"))
    })
}

async fn actual_lrp_by_index(
    State(s): State<ApiState>,
    Path((guid, index)): Path<(String, String)>,
) -> ApiResult<Json<ActualLrpResponse>> {
    let index = parse_index(&index)?;
    let all =
        s.db.actual_lrps("", "", &guid, Some(index))
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    // Prefer the ordinary record; an evacuating or suspect copy alone is still reported.
    let mut all: Vec<_> = all.into_iter().map(ActualLrpResponse::from).collect();
    all.sort_by_key(|a| a.presence != "ORDINARY");
    all.into_iter().next().map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorName::ActualLRPIndexNotFound,
            format!("actual LRP {guid} index {index} not found"),
        )
    })
}

/// Kill one instance: its record goes, the cell stops it, convergence restarts it.
async fn kill_actual_lrp(
    State(s): State<ApiState>,
    Path((guid, index)): Path<(String, String)>,
) -> ApiResult<Response> {
    let index = parse_index(&index)?;
    s.db.retire_actual_lrp(&guid, index)
        .await
        .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(no_content())
}

// ---------------------------------------------------- cells and domains

async fn list_cells(State(s): State<ApiState>) -> ApiResult<Json<Vec<CellResponse>>> {
    let cells =
        s.db.cells()
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(Json(cells.into_iter().map(CellResponse::from).collect()))
}

/// TTL from `Cache-Control: max-age=N`; none means fresh forever.
fn max_age(headers: &HeaderMap) -> ApiResult<i64> {
    let Some(v) = headers.get(header::CACHE_CONTROL) else {
        return Ok(0);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::invalid_request("Cache-Control must be ASCII"))?;
    for part in v.split(',') {
        if let Some(n) = part.trim().strip_prefix("max-age=") {
            return n
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    ApiError::invalid_request(format!(
                        "Cache-Control max-age must be a non-negative integer, got {n:?}"
                    ))
                });
        }
    }
    Ok(0)
}

async fn upsert_domain(
    State(s): State<ApiState>,
    Path(domain): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let ttl = max_age(&headers)?;
    s.db.upsert_domain(&Domain {
        name: domain,
        ttl_seconds: ttl,
    })
    .await
    .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(no_content())
}

async fn list_domains(State(s): State<ApiState>) -> ApiResult<Json<Vec<String>>> {
    let d =
        s.db.domains()
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(Json(d.into_iter().map(|d| d.name).collect()))
}

// ------------------------------------------------------ events, version

async fn events(
    State(s): State<ApiState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = BroadcastStream::new(s.hub.subscribe())
        // The BBS shutting down ends the stream.
        .take_until(s.hub.closing())
        // A subscriber that fell behind is cut off: it reconnects and resyncs.
        .take_while(|r| futures::future::ready(r.is_ok()))
        .filter_map(|r| async move {
            let e = r.ok()?;
            let payload = EventPayload::from_event(&e)?;
            let data = serde_json::to_string(&payload).ok()?;
            Some(Ok(SseEvent::default()
                .event(event_name(&e))
                .id(e.revision.to_string())
                .data(data)))
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[derive(serde::Deserialize)]
struct LogQuery {
    /// Keep the stream open for new lines (default true).
    follow: Option<bool>,
    /// Start with the recent history (default true).
    recent: Option<bool>,
}

/// `GET /v1/logs/LOG_GUID`: the log guid's lines from every cell and from the BBS's
/// own buffer, as newline-delimited JSON (an extension; the receptor had none).
async fn get_logs(
    State(s): State<ApiState>,
    Path(log_guid): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let reps: Vec<String> =
        s.db.cells()
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?
            .into_iter()
            .map(|c| c.rep_address)
            .collect();
    let db = s.db.clone();
    let more_cells: crate::logs::CellLister = std::sync::Arc::new(move || {
        let db = db.clone();
        Box::pin(async move {
            db.cells()
                .await
                .map(|cells| cells.into_iter().map(|c| c.rep_address).collect())
                .unwrap_or_default()
        })
    });
    let lines = crate::logs::gather(
        &s.http,
        &s.logs,
        reps,
        Some(more_cells),
        &log_guid,
        q.recent.unwrap_or(true),
        q.follow.unwrap_or(true),
    )
    .await
    // The BBS shutting down ends the stream.
    .take_until(s.hub.closing())
    .map(|m| Ok::<_, Infallible>(Bytes::from(m.to_ndjson())));
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}

/// Who may post log lines: with API credentials, whoever holds them (the basic-auth
/// layer checked them); without, only callers over loopback (a router beside the BBS;
/// `lattice up`'s components post in-process), never any client that reaches the API.
pub fn may_post_logs(has_credentials: bool, peer: Option<std::net::SocketAddr>) -> bool {
    has_credentials || peer.is_some_and(|p| p.ip().to_canonical().is_loopback())
}

/// `POST /v1/logs`: newline-delimited JSON log messages into the BBS's buffer (how a
/// router sends its access lines). At most [`MAX_LOG_POST_BYTES`] a request; only from
/// callers [`may_post_logs`] allows; a long message is cut and a line with an
/// oversized log guid or source dropped (see [`LogBuffer::offer`]).
async fn post_logs(
    State(s): State<ApiState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let peer = peer.map(|p| p.0 .0);
    if !may_post_logs(s.basic_auth.is_some(), peer) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorName::Forbidden,
            "without API credentials only callers over loopback may post log lines: give the API credentials (--basic-auth) and post with them",
        ));
    }
    let chunks = futures::stream::iter([Ok::<_, Infallible>(body)]);
    let mut lines = std::pin::pin!(decode_ndjson(chunks));
    let mut dropped = 0usize;
    while let Some(m) = lines.next().await {
        if !s.logs.offer(m) {
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "log lines with an oversized log guid, source or stream dropped"
        );
    }
    Ok(StatusCode::NO_CONTENT)
}

const CHECKSUM_HEADER: &str = "x-checksum-sha256";

pub(crate) fn blob_store(s: &ApiState) -> Result<&crate::blobs::BlobStore, ApiError> {
    s.blobs.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorName::BlobStoreUnavailable,
            "this BBS keeps no blobs: start it with --blob-dir DIR (lattice up always has one)",
        )
    })
}

fn blob_name(name: &str) -> Result<(), ApiError> {
    crate::blobs::check_name(name).map_err(ApiError::invalid_request)
}

fn blob_not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorName::BlobNotFound,
        format!("no blob {name}: GET /v1/blobs lists them"),
    )
}

/// `PUT /v1/blobs/NAME` (extension): 201 with the body's SHA-256 in `X-Checksum-Sha256`;
/// 422 `ChecksumMismatch` when the request's own `X-Checksum-Sha256` disagrees.
async fn put_blob(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    blob_name(&name)?;
    let store = blob_store(&s)?;
    let expected = headers
        .get(CHECKSUM_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let info = store
        .put(&name, body.into_data_stream(), expected.as_deref())
        .await
        .map_err(|e| match e {
            crate::blobs::PutError::ChecksumMismatch { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorName::ChecksumMismatch,
                e.to_string(),
            ),
            crate::blobs::PutError::Interrupted(_) => ApiError::invalid_request(e.to_string()),
            crate::blobs::PutError::Io(_) => ApiError::unknown(e.to_string()),
        })?;
    let mut r = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&info.sha256) {
        r.headers_mut().insert(CHECKSUM_HEADER, v);
    }
    Ok(r)
}

/// `GET /v1/blobs/NAME` (extension): the bytes, with `X-Checksum-Sha256`.
async fn get_blob(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    blob_name(&name)?;
    let store = blob_store(&s)?;
    let (info, path) = store.get(&name).ok_or_else(|| blob_not_found(&name))?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| blob_not_found(&name))?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    if let Ok(v) = HeaderValue::from_str(&info.sha256) {
        h.insert(CHECKSUM_HEADER, v);
    }
    Ok(r)
}

async fn delete_blob(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blob_name(&name)?;
    match blob_store(&s)?.delete(&name) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(blob_not_found(&name)),
        Err(e) => Err(ApiError::unknown(e.to_string())),
    }
}

async fn list_blobs(
    State(s): State<ApiState>,
) -> Result<Json<Vec<crate::blobs::BlobInfo>>, ApiError> {
    blob_store(&s)?
        .list()
        .map(Json)
        .map_err(|e| ApiError::unknown(e.to_string()))
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "version": VERSION, "api": "receptor/v1" }))
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

// ------------------------------------------------------------ middleware

async fn basic_auth(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    if let Some(expected) = &s.basic_auth {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            });
        if given.as_deref() != Some(expected.as_bytes()) {
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, ErrorName::Unauthorized, "missing or wrong credentials: use HTTP Basic auth (ltc target URL with user and password)")
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"lattice\""),
            );
            return r;
        }
    }
    next.run(req).await
}

/// The error name of an answer axum made itself (a body too large, a bad query…).
fn rejection_name(status: StatusCode) -> ErrorName {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorName::RequestEntityTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorName::UnsupportedMediaType,
        StatusCode::METHOD_NOT_ALLOWED => ErrorName::MethodNotAllowed,
        s if s.is_server_error() => ErrorName::Unknown,
        _ => ErrorName::InvalidRequest,
    }
}

/// Error answers that are not the receptor's JSON (axum's own rejections: plain text
/// or empty) become `{"name", "message"}` like every other error.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (status, text.is_empty()) {
        (StatusCode::PAYLOAD_TOO_LARGE, _) => format!(
            "request body too large: at most {MAX_BODY_BYTES} bytes for JSON calls, {MAX_LOG_POST_BYTES} for POST /v1/logs ({text})"
        ),
        (_, true) => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
        (_, false) => text,
    };
    let mut r = ApiError::new(status, rejection_name(status), message).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            r.headers_mut().insert(k.clone(), v.clone());
        }
    }
    r
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
        .layer(middleware::from_fn_with_state(state.clone(), basic_auth));
    Router::new()
        .merge(v1)
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, ErrorName::NotFound, "no such API path; see /v1/tasks, /v1/desired_lrps, /v1/actual_lrps, /v1/cells, /v1/domains, /v1/events") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::may_post_logs;

    #[test]
    fn without_credentials_only_this_host_posts_logs() {
        let at = |s: &str| Some(s.parse().unwrap());
        assert!(may_post_logs(false, at("127.0.0.1:9")));
        assert!(may_post_logs(false, at("[::1]:9")));
        assert!(
            may_post_logs(false, at("[::ffff:127.0.0.1]:9")),
            "v4-mapped loopback"
        );
        assert!(!may_post_logs(false, at("10.1.2.3:9")));
        assert!(!may_post_logs(false, at("[::ffff:10.1.2.3]:9")));
        assert!(!may_post_logs(false, None), "unknown callers are refused");
        assert!(
            may_post_logs(true, at("10.1.2.3:9")),
            "credentials were checked"
        );
    }
}
