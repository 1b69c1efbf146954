//! The WebDAV face of the blob store on port 8444, where Lattice kept droplets
//! (lighttpd's mod_webdav) and where the original `ltc target` checks for a droplet
//! store: `PROPFIND /blobs/` and `/blobs` (207 multistatus: href,
//! `getlastmodified` in RFC 1123, `getcontentlength`), `PUT /blobs/NAME` (201),
//! `GET|HEAD /blobs/NAME` (200), `DELETE /blobs/NAME` (204), over the same blob
//! store as `/v1/blobs` (`crate::blobs`; uploads streamed to disk as there).
//!
//! Callers are the API's: its Basic credentials or a token (`api::caller_of`), with
//! the same role and ownership rules as the matching `/v1/blobs` route; every change
//! is audited. The original `ltc` always sends Basic, `Og==` (`:`) when its target has
//! no credentials: that counts as no credentials, which the API takes only when it
//! has none and only over loopback. Served with the API's limits (`serve`).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::authz::{api_authz, object_of, verb_of, Decision};
use crate::api::{audit, caller_of, owners, ApiState, Caller};
use crate::blobs::BlobInfo;

/// `Basic` of an empty user and password: what the original `ltc` sends for a target
/// without credentials.
const EMPTY_BASIC: &str = "Basic Og==";

/// The credential a DAV request carries, as the API would take it: `Basic Og==` is
/// no credential at all.
pub fn credential(authorization: Option<&str>) -> Option<&str> {
    authorization
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != EMPTY_BASIC)
}

/// The `/v1/blobs` route a DAV request is checked as: (method, route, path params).
pub fn api_route(method: &Method, name: Option<&str>) -> (Method, &'static str) {
    match (method.as_str(), name) {
        ("PROPFIND", _) | (_, None) => (Method::GET, "/v1/blobs"),
        ("HEAD", Some(_)) => (Method::GET, "/v1/blobs/{name}"),
        (_, Some(_)) => (method.clone(), "/v1/blobs/{name}"),
    }
}

/// A time as HTTP and WebDAV write it (RFC 1123, GMT).
pub fn http_date(unix_nanos: i64) -> String {
    let t =
        chrono::DateTime::<chrono::Utc>::from_timestamp(unix_nanos.div_euclid(1_000_000_000), 0)
            .unwrap_or_default();
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The 207 body of a PROPFIND on the collection: the collection itself, then (at
/// depth 1) every blob. Blob names are file-safe (`blobs::check_name`): nothing to
/// escape.
pub fn multistatus(blobs: &[BlobInfo], depth_one: bool, now_nanos: i64) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">\n",
    );
    let entry = |out: &mut String, href: &str, props: &str| {
        out.push_str(&format!(
            "<D:response><D:href>{href}</D:href><D:propstat><D:prop>{props}</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>\n"
        ));
    };
    entry(
        &mut out,
        "/blobs",
        &format!(
            "<D:resourcetype><D:collection/></D:resourcetype><D:getlastmodified>{}</D:getlastmodified>",
            http_date(now_nanos)
        ),
    );
    if depth_one {
        for b in blobs {
            entry(
                &mut out,
                &format!("/blobs/{}", b.name),
                &format!(
                    "<D:resourcetype/><D:getlastmodified>{}</D:getlastmodified><D:getcontentlength>{}</D:getcontentlength>",
                    http_date(b.created_at),
                    b.size
                ),
            );
        }
    }
    out.push_str("</D:multistatus>\n");
    out
}

/// A refusal: its status and why (answered as plain text).
struct Refusal(StatusCode, String);

impl Refusal {
    fn new(status: StatusCode, why: impl Into<String>) -> Refusal {
        Refusal(status, why.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        plain(self.0, self.1)
    }
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    let mut r = (status, format!("{}\n", text.into())).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"blob\""),
        );
    }
    r
}

/// Identifies and authorizes the caller of `method` on the collection or blob `name`
/// as the API would its `/v1/blobs` route.
async fn authorize(
    s: &ApiState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    method: &Method,
    name: Option<&str>,
) -> Result<Caller, Refusal> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (api_method, route) = api_route(method, name);
    let path = match name {
        Some(n) => format!("/v1/blobs/{n}"),
        None => "/v1/blobs".to_string(),
    };
    let caller = caller_of(s, credential(given), &path, peer)
        .await
        .map_err(|e| Refusal::new(e.status(), e.message()))?;
    let Some(role) = caller.role else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "a task's credential does not open the WebDAV blob store",
        ));
    };
    if let Decision::Deny(why) = api_authz(role, &api_method, Some(route)) {
        return Err(Refusal::new(StatusCode::FORBIDDEN, why));
    }
    let params = name
        .map(|n| [("name".to_string(), n.to_string())].into_iter().collect())
        .unwrap_or_default();
    if let Some(object) = object_of(&api_method, route, &params) {
        let verb = verb_of(&api_method, route);
        owners::ensure_may_act(s, &caller, verb, &object)
            .await
            .map_err(|e| Refusal::new(e.status(), e.message()))?;
    }
    Ok(caller)
}

fn store(s: &ApiState) -> Result<&crate::blobs::BlobStore, Refusal> {
    crate::api::blob_store(s).map_err(|e| Refusal::new(e.status(), e.message()))
}

async fn collection(
    State(s): State<ApiState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    req: Request,
) -> Response {
    let method = req.method().clone();
    let r = match authorize(&s, req.headers(), peer.map(|p| p.0 .0), &method, None).await {
        Err(r) => r.into_response(),
        Ok(_) => match method.as_str() {
            "PROPFIND" => propfind(&s, req.headers()),
            "OPTIONS" => options(),
            _ => plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "the collection /blobs takes PROPFIND (and OPTIONS)",
            ),
        },
    };
    counted(&method, r)
}

fn propfind(s: &ApiState, headers: &HeaderMap) -> Response {
    let store = match store(s) {
        Ok(st) => st,
        Err(r) => return r.into_response(),
    };
    let depth_one = headers
        .get("depth")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|d| d.trim() != "0");
    let blobs = match store.list() {
        Ok(b) => b,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let body = multistatus(&blobs, depth_one, lattice_specs::now_nanos());
    (
        StatusCode::MULTI_STATUS,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn options() -> Response {
    let mut r = StatusCode::OK.into_response();
    let h = r.headers_mut();
    h.insert("dav", HeaderValue::from_static("1"));
    h.insert(
        header::ALLOW,
        HeaderValue::from_static("OPTIONS, PROPFIND, GET, HEAD, PUT, DELETE"),
    );
    r
}

async fn blob(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    req: Request,
) -> Response {
    let method = req.method().clone();
    if let Err(why) = crate::blobs::check_name(&name) {
        return counted(&method, plain(StatusCode::BAD_REQUEST, why));
    }
    let caller = match authorize(
        &s,
        req.headers(),
        peer.map(|p| p.0 .0),
        &method,
        Some(&name),
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return counted(&method, r.into_response()),
    };
    let r = match store(&s) {
        Err(r) => r.into_response(),
        Ok(st) => match method.as_str() {
            "GET" | "HEAD" => get(st, &name, method == Method::HEAD).await,
            "PUT" => put(st, &name, req.into_body()).await,
            "DELETE" => match st.delete(&name) {
                Ok(true) => StatusCode::NO_CONTENT.into_response(),
                Ok(false) => plain(StatusCode::NOT_FOUND, format!("no blob {name}")),
                Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            },
            "PROPFIND" => match st.info(&name) {
                Some(info) => (
                    StatusCode::MULTI_STATUS,
                    [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                    multistatus(
                        std::slice::from_ref(&info),
                        true,
                        lattice_specs::now_nanos(),
                    ),
                )
                    .into_response(),
                None => plain(StatusCode::NOT_FOUND, format!("no blob {name}")),
            },
            "OPTIONS" => options(),
            _ => plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "a blob takes GET, HEAD, PUT, DELETE and PROPFIND",
            ),
        },
    };
    if r.status().is_success() && matches!(method.as_str(), "PUT" | "DELETE") {
        audit::record(&s.logs, &caller, &method, &format!("/blobs/{name}"));
    }
    counted(&method, r)
}

async fn get(st: &crate::blobs::BlobStore, name: &str, head: bool) -> Response {
    let Some((info, path)) = st.get(name) else {
        return plain(StatusCode::NOT_FOUND, format!("no blob {name}"));
    };
    let body = if head {
        Body::empty()
    } else {
        match tokio::fs::File::open(&path).await {
            Ok(f) => Body::from_stream(tokio_util::io::ReaderStream::new(f)),
            Err(_) => return plain(StatusCode::NOT_FOUND, format!("no blob {name}")),
        }
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    if let Ok(v) = HeaderValue::from_str(&http_date(info.created_at)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    r
}

async fn put(st: &crate::blobs::BlobStore, name: &str, body: Body) -> Response {
    match st.put(name, body.into_data_stream(), None).await {
        Ok(_) => StatusCode::CREATED.into_response(),
        Err(e @ crate::blobs::PutError::Interrupted(_)) => {
            plain(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn counted(method: &Method, r: Response) -> Response {
    crate::metrics::DAV_REQUESTS
        .with_label_values(&[method.as_str(), r.status().as_str()])
        .inc();
    r
}

/// The WebDAV routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/blobs", any(collection))
        .route("/blobs/", any(collection))
        .route("/blobs/{name}", any(blob))
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "the WebDAV blob store is /blobs/") })
        .with_state(state)
}

/// Binds the WebDAV blob store on `listen` and serves it (with the API's limits)
/// until `stopped` turns true.
pub async fn start(
    state: ApiState,
    listen: SocketAddr,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding the WebDAV listener {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(crate::serve::serve(
        listener,
        app,
        Default::default(),
        None,
        stopped,
    ));
    tracing::info!(%addr, "WebDAV blob store serving");
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_basic_is_no_credential() {
        assert_eq!(credential(Some("Basic Og==")), None);
        assert_eq!(credential(Some("  ")), None);
        assert_eq!(credential(None), None);
        assert_eq!(
            credential(Some("Basic YWRtaW46czNjcmV0")),
            Some("Basic YWRtaW46czNjcmV0")
        );
        assert_eq!(credential(Some("Bearer t")), Some("Bearer t"));
    }

    #[test]
    fn dav_methods_are_checked_as_the_blob_routes() {
        let propfind = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(api_route(&propfind, None), (Method::GET, "/v1/blobs"));
        assert_eq!(
            api_route(&propfind, Some("x")),
            (Method::GET, "/v1/blobs"),
            "a PROPFIND reads facts, not the archive"
        );
        assert_eq!(
            api_route(&Method::HEAD, Some("x")),
            (Method::GET, "/v1/blobs/{name}")
        );
        assert_eq!(
            api_route(&Method::DELETE, Some("x")),
            (Method::DELETE, "/v1/blobs/{name}")
        );
    }

    #[test]
    fn dates_are_rfc_1123() {
        // 2006-01-02T15:04:05Z, Go's reference time.
        assert_eq!(
            http_date(1_136_214_245_000_000_000),
            "Mon, 02 Jan 2006 15:04:05 GMT"
        );
    }

    #[test]
    fn a_multistatus_lists_the_collection_then_each_blob() {
        let blobs = [BlobInfo {
            name: "app-droplet.tgz".into(),
            size: 42,
            sha256: "x".into(),
            created_at: 1_136_214_245_000_000_000,
        }];
        let xml = multistatus(&blobs, true, 0);
        assert!(xml.starts_with("<?xml"), "{xml}");
        assert!(xml.contains("<D:href>/blobs</D:href>"), "{xml}");
        assert!(
            xml.contains("<D:href>/blobs/app-droplet.tgz</D:href>"),
            "{xml}"
        );
        assert!(
            xml.contains("<D:getlastmodified>Mon, 02 Jan 2006 15:04:05 GMT</D:getlastmodified><D:getcontentlength>42</D:getcontentlength>"),
            "{xml}"
        );
        let shallow = multistatus(&blobs, false, 0);
        assert!(!shallow.contains("app-droplet"), "depth 0: {shallow}");
    }
}
