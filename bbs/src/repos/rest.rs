//! restic's REST protocol v2, as rest-server speaks it, at `/v1/repos/{repo}/`:
//! `POST /?create=true` (a new repository), `HEAD|GET|POST|DELETE /config`,
//! `GET /{type}/` (v1: names; v2, on `Accept: application/vnd.x.restic.rest.v2`:
//! `[{"name","size"}]`), `HEAD|GET|POST|DELETE /{type}/{name}` (GET with `Range`), and
//! `GET /password` (the cluster's backup key, text/plain). Bodies are streamed (at most
//! [`MAX_OBJECT_BYTES`] each); nothing is ever overwritten (an existing name: 403).
//!
//! Who may: the auth middleware puts the caller's [`RepoAccess`] in the request (an
//! admin: Prune on every repository; a backup task: its op's scope on its own one);
//! `rules::allows` decides each request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use futures::StreamExt;
use lattice_specs::errors::ErrorName;
use lattice_specs::repo::RepoScope;

use super::rules::{allows, check_name, check_repo, key, prefix, File, Kind, Verb};
use super::store::{ByteRange, Put, RepoStore};
use super::{store_error, BYTES, REQUESTS};
use crate::api::{ApiError, ApiState};

/// Largest file a request may store (restic's packs are tens of MiB at most).
pub const MAX_OBJECT_BYTES: u64 = 256 * 1024 * 1024;

const V2: &str = "application/vnd.x.restic.rest.v2";

/// What the caller may do to which repositories (set by the auth middleware).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoAccess {
    pub scope: RepoScope,
    /// None: every repository (an admin); Some: that one only.
    pub repo: Option<String>,
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/repos/{repo}/", post(create_repo))
        .route(
            "/v1/repos/{repo}/config",
            get(get_config)
                .head(head_config)
                .post(post_config)
                .delete(delete_config),
        )
        .route("/v1/repos/{repo}/password", get(password))
        .route("/v1/repos/{repo}/{kind}/", get(list))
        .route(
            "/v1/repos/{repo}/{kind}/{name}",
            get(get_file)
                .head(head_file)
                .post(post_file)
                .delete(delete_file),
        )
}

fn forbidden(why: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, ErrorName::Forbidden, why)
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorName::NotFound,
        format!("{what} does not exist"),
    )
}

/// Checks the request against the caller's access; the repository's store.
async fn open(
    s: &ApiState,
    access: Option<Extension<RepoAccess>>,
    repo: &str,
    verb: Verb,
    kind: Option<Kind>,
) -> Result<Arc<dyn RepoStore>, ApiError> {
    check_repo(repo).map_err(ApiError::invalid_request)?;
    let Some(Extension(access)) = access else {
        return Err(forbidden(
            "backup repositories take an admin's credential or a backup task's own".into(),
        ));
    };
    if access.repo.as_deref().is_some_and(|r| r != repo) {
        return Err(forbidden(format!(
            "this credential is for repository {}, not {repo}",
            access.repo.unwrap_or_default()
        )));
    }
    allows(access.scope, verb, kind).map_err(forbidden)?;
    store_of(s, repo).await
}

/// The store of `repo`: its volume's `backup_store`, the default store when there is
/// no such volume (any more).
async fn store_of(s: &ApiState, repo: &str) -> Result<Arc<dyn RepoStore>, ApiError> {
    let named = match s.db.volume(repo).await {
        Ok(v) => v.backup_store,
        Err(crate::db::DbError::NotFound { .. }) => String::new(),
        Err(e) => return Err(ApiError::from_db(e, ErrorName::InvalidRequest)),
    };
    s.stores.get(&named).cloned()
}

/// Counts the request by method, type and status.
fn counted(method: &Method, kind: &str, r: Result<Response, ApiError>) -> Response {
    let r = r.unwrap_or_else(IntoResponse::into_response);
    REQUESTS
        .with_label_values(&[method.as_str(), kind, r.status().as_str()])
        .inc();
    r
}

fn named(kind: &str, name: &str) -> Result<Kind, ApiError> {
    let k = Kind::parse(kind).ok_or_else(|| {
        ApiError::invalid_request(format!(
            "file type {kind:?}: one of data, keys, locks, snapshots, index"
        ))
    })?;
    check_name(name).map_err(ApiError::invalid_request)?;
    Ok(k)
}

/// `bytes=START-END` (END inclusive) or `bytes=START-`; None without a header.
pub fn parse_range(h: Option<&str>) -> Result<Option<ByteRange>, String> {
    let Some(h) = h else { return Ok(None) };
    let bad = || format!("Range {h:?}: only one range, bytes=START-END or bytes=START-");
    let spec = h.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let len = match b.trim() {
        "" => None,
        end => {
            let end: u64 = end.parse().map_err(|_| bad())?;
            if end < start {
                return Err(bad());
            }
            Some(end - start + 1)
        }
    };
    Ok(Some(ByteRange { start, len }))
}

async fn create_repo(
    State(s): State<ApiState>,
    access: Option<Extension<RepoAccess>>,
    Path(repo): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let r = async {
        if q.get("create").map(String::as_str) != Some("true") {
            return Err(ApiError::invalid_request(
                "POST /v1/repos/NAME/ makes a repository: add ?create=true",
            ));
        }
        let store = open(&s, access, &repo, Verb::Create, None).await?;
        store.create_repo(&repo).await.map_err(store_error)?;
        tracing::info!(%repo, store = %store.describe(), "repository created");
        Ok(StatusCode::OK.into_response())
    }
    .await;
    counted(&Method::POST, "repo", r)
}

async fn head(store: &dyn RepoStore, k: &str, what: &str) -> Result<Response, ApiError> {
    let size = store.head(k).await.map_err(store_error)?;
    let size = size.ok_or_else(|| not_found(what))?;
    let mut r = StatusCode::OK.into_response();
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(r)
}

async fn read(
    store: &dyn RepoStore,
    k: &str,
    what: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let range = parse_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()))
        .map_err(ApiError::invalid_request)?;
    let got = store.get(k, range).await.map_err(store_error)?;
    let got = got.ok_or_else(|| not_found(what))?;
    BYTES.with_label_values(&["out"]).inc_by(got.len);
    let mut r = Body::from_stream(got.body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(got.len));
    if range.is_some() {
        if got.len == 0 && got.size > 0 {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorName::InvalidRequest,
                format!("{what} has {} bytes: the range starts after them", got.size),
            ));
        }
        let last = (got.start + got.len).saturating_sub(1);
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{last}/{}", got.start, got.size)) {
            h.insert(header::CONTENT_RANGE, v);
        }
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(r)
}

async fn write(
    store: &dyn RepoStore,
    k: &str,
    what: &str,
    body: Body,
) -> Result<Response, ApiError> {
    let mut seen = 0u64;
    let stream = body
        .into_data_stream()
        .map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            seen += chunk.len() as u64;
            if seen > MAX_OBJECT_BYTES {
                return Err(std::io::Error::other(format!(
                    "a repository file is at most {MAX_OBJECT_BYTES} bytes"
                )));
            }
            BYTES.with_label_values(&["in"]).inc_by(chunk.len() as u64);
            Ok(chunk)
        })
        .boxed();
    match store.put_new(k, stream).await.map_err(store_error)? {
        Put::Created => Ok(StatusCode::OK.into_response()),
        Put::Existed => Err(forbidden(format!(
            "{what} exists already: repository files are never overwritten"
        ))),
    }
}

async fn remove(store: &dyn RepoStore, k: &str, what: &str) -> Result<Response, ApiError> {
    match store.delete(k).await.map_err(store_error)? {
        true => Ok(StatusCode::OK.into_response()),
        false => Err(not_found(what)),
    }
}

async fn config_call(
    s: ApiState,
    access: Option<Extension<RepoAccess>>,
    repo: String,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let verb = Verb::of(&method).ok_or_else(|| ApiError::invalid_request("no such call"))?;
        let store = open(&s, access, &repo, verb, None).await?;
        let (k, what) = (key(&repo, File::Config), format!("the config of {repo}"));
        match method {
            Method::HEAD => head(&*store, &k, &what).await,
            Method::GET => read(&*store, &k, &what, &headers).await,
            Method::POST => write(&*store, &k, &what, body).await,
            _ => remove(&*store, &k, &what).await,
        }
    }
    .await;
    counted(&method, "config", r)
}

async fn get_config(
    State(s): State<ApiState>,
    access: Option<Extension<RepoAccess>>,
    Path(repo): Path<String>,
    headers: HeaderMap,
) -> Response {
    config_call(s, access, repo, Method::GET, headers, Body::empty()).await
}

async fn head_config(
    State(s): State<ApiState>,
    access: Option<Extension<RepoAccess>>,
    Path(repo): Path<String>,
) -> Response {
    config_call(
        s,
        access,
        repo,
        Method::HEAD,
        HeaderMap::new(),
        Body::empty(),
    )
    .await
}

async fn post_config(
    State(s): State<ApiState>,
    access: Option<Extension<RepoAccess>>,
    Path(repo): Path<String>,
    body: Body,
) -> Response {
    config_call(s, access, repo, Method::POST, HeaderMap::new(), body).await
}

async fn delete_config(
    State(s): State<ApiState>,
    access: Option<Extension<RepoAccess>>,
    Path(repo): Path<String>,
) -> Response {
    config_call(
        s,
        access,
        repo,
        Method::DELETE,
        HeaderMap::new(),
        Body::empty(),
    )
    .await
}

async fn file_call(
    s: ApiState,
    access: Option<Extension<RepoAccess>>,
    (repo, kind, name): (String, String, String),
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let k = named(&kind, &name)?;
        let verb = Verb::of(&method).ok_or_else(|| ApiError::invalid_request("no such call"))?;
        let store = open(&s, access, &repo, verb, Some(k)).await?;
        let (at, what) = (
            key(&repo, File::Named(k, &name)),
            format!("{kind}/{name} of {repo}"),
        );
        match method {
            Method::HEAD => head(&*store, &at, &what).await,
            Method::GET => read(&*store, &at, &what, &headers).await,
            Method::POST => write(&*store, &at, &what, body).await,
            _ => remove(&*store, &at, &what).await,
        }
    }
    .await;
    let label = Kind::parse(&kind).map(Kind::as_str).unwrap_or("unknown");
    counted(&method, label, r)
}

async fn get_file(
    State(s): State<ApiState>,
    access: Option<Extension<RepoAccess>>,
    Path(p): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    file_call(s, access, p, Method::GET, headers, Body::empty()).await
}

async fn head_file(
    State(s): State<ApiState>,
    access: Option<Extension<RepoAccess>>,
    Path(p): Path<(String, String, String)>,
) -> Response {
    file_call(s, access, p, Method::HEAD, HeaderMap::new(), Body::empty()).await
}

async fn post_file(
    State(s): State<ApiState>,
    access: Option<Extension<RepoAccess>>,
    Path(p): Path<(String, String, String)>,
    body: Body,
) -> Response {
    file_call(s, access, p, Method::POST, HeaderMap::new(), body).await
}

async fn delete_file(
    State(s): State<ApiState>,
    access: Option<Extension<RepoAccess>>,
    Path(p): Path<(String, String, String)>,
) -> Response {
    file_call(
        s,
        access,
        p,
        Method::DELETE,
        HeaderMap::new(),
        Body::empty(),
    )
    .await
}

async fn list(
    State(s): State<ApiState>,
    access: Option<Extension<RepoAccess>>,
    Path((repo, kind)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let k = Kind::parse(&kind).ok_or_else(|| {
            ApiError::invalid_request(format!(
                "file type {kind:?}: one of data, keys, locks, snapshots, index"
            ))
        })?;
        let store = open(&s, access, &repo, Verb::Read, Some(k)).await?;
        let mut files = store.list(&prefix(&repo, k)).await.map_err(store_error)?;
        files.retain(|(n, _)| check_name(n).is_ok());
        files.sort();
        let v2 = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains(V2));
        let (body, ctype) = if v2 {
            let items: Vec<_> = files
                .iter()
                .map(|(name, size)| serde_json::json!({ "name": name, "size": size }))
                .collect();
            (serde_json::to_vec(&items), V2)
        } else {
            let names: Vec<_> = files.iter().map(|(n, _)| n).collect();
            (
                serde_json::to_vec(&names),
                "application/vnd.x.restic.rest.v1",
            )
        };
        let body = body.map_err(|e| ApiError::unknown(e.to_string()))?;
        Ok(([(header::CONTENT_TYPE, ctype)], body).into_response())
    }
    .await;
    counted(&Method::GET, "list", r)
}

/// `GET /v1/repos/{repo}/password`: the cluster's backup key, to a credential that may
/// read the repository.
async fn password(
    State(s): State<ApiState>,
    access: Option<Extension<RepoAccess>>,
    Path(repo): Path<String>,
) -> Response {
    let r = async {
        open(&s, access, &repo, Verb::Read, None).await?;
        let key = s.backup_key.as_ref().ok_or_else(no_key)?;
        Ok((
            [(header::CONTENT_TYPE, "text/plain")],
            key.password().to_string(),
        )
            .into_response())
    }
    .await;
    counted(&Method::GET, "password", r)
}

/// Why a BBS without a backup key cannot serve repositories' passwords.
pub fn no_key() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorName::BackupStoreUnavailable,
        "this BBS has no backup key: start it with --backup-key-file PATH (made when missing; give every BBS of the cluster the same file)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_restic_asks_them() {
        assert_eq!(parse_range(None), Ok(None));
        assert_eq!(
            parse_range(Some("bytes=10-19")),
            Ok(Some(ByteRange {
                start: 10,
                len: Some(10)
            }))
        );
        assert_eq!(
            parse_range(Some("bytes=5-")),
            Ok(Some(ByteRange {
                start: 5,
                len: None
            }))
        );
        for bad in ["bytes=9-1", "items=1-2", "bytes=1-2,4-5", "bytes=-5"] {
            assert!(parse_range(Some(bad)).is_err(), "{bad}");
        }
    }
}
