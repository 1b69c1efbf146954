//! Who is calling the public API and whether they may: the middleware on `/v1/*`.
//!
//! A request is made by one [`Caller`]:
//! - `Authorization: Bearer TOKEN`: an API token (`db::tokens`), with its role;
//! - HTTP Basic with the API's `--basic-auth` credential: an admin (old receptor
//!   clients, routers posting their access lines);
//! - HTTP Basic as [`TASK_CREDENTIAL_USER`]: a backup, restore or verify task, for the
//!   one blob and verb its own credential grants (`backup_tasks::grants`), or for its
//!   own backup repository (`/v1/repos/NAME/…`) with its op's scope
//!   (`repos::grant::task_scope`);
//! - on `/v1/repos/…` only, HTTP Basic whose password is an API token (what restic
//!   sends for `rest:https://USER:TOKEN@…`): that token, as with Bearer (an admin's
//!   gets the Prune scope on every repository; other roles are refused by `authz`);
//! - nothing, over loopback, when the API has no `--basic-auth`: the local trusted
//!   caller, an admin (single-machine `lattice up`, tests and benches). Without a
//!   credential from anywhere else: 401.
//!
//! A credential that is given is always checked (a wrong or revoked one is a 401 even
//! over loopback). What the caller's role may do is `authz`'s decision (403 naming the
//! role), and so is whether a developer owns the object it acts on (403 naming the
//! owner, looked up by `owners`); a viewer's answers are redacted (`redact`), and so are
//! a developer's about apps and tasks it does not own; every change is audited (`audit`).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, RequestExt};
use base64::Engine;
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::ApiRole;

use super::authz::{api_authz, object_of, verb_of, Decision};
use super::{audit, owners, redact, ApiError, ApiState};
use crate::backup_tasks::{credential_task, grants, BlobVerb, TASK_CREDENTIAL_USER};
use crate::repos::grant::task_scope;
use crate::repos::RepoAccess;
use lattice_specs::repo::RepoScope;

/// Who made a request (in the request's extensions for the handlers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, `basic:USER`, `task:GUID` or `local`.
    pub name: String,
    /// None: a task's blob credential (it may only do what its task does).
    pub role: Option<ApiRole>,
}

impl Caller {
    /// The role as metrics and audit lines name it.
    pub fn label(&self) -> &'static str {
        self.role.map(ApiRole::as_str).unwrap_or("task")
    }

    pub fn is_viewer(&self) -> bool {
        self.role == Some(ApiRole::Viewer)
    }
}

/// Whether `peer` is this host (IPv4-mapped loopback included); an unknown peer is not.
pub fn is_loopback(peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|p| p.ip().to_canonical().is_loopback())
}

/// The caller's address: the connection's peer, except that a peer on this host
/// relaying for another (a router beside the API sending it `receptor.DOMAIN` and
/// `doppler.DOMAIN`, which appends its client to `X-Forwarded-For`) stands for the
/// last address it names. An unreadable one is unknown: not trusted.
pub fn caller_address(
    peer: Option<SocketAddr>,
    forwarded_for: Option<&[u8]>,
) -> Option<SocketAddr> {
    let Some(forwarded) = forwarded_for.filter(|_| is_loopback(peer)) else {
        return peer;
    };
    let last = std::str::from_utf8(forwarded)
        .ok()?
        .rsplit(',')
        .next()?
        .trim();
    let ip: std::net::IpAddr = last.parse().ok()?;
    Some(SocketAddr::new(ip, 0))
}

fn unauthorized(s: &ApiState, message: impl Into<String>) -> Response {
    let mut r =
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorName::Unauthorized, message).into_response();
    let challenge = if s.basic_auth.is_some() {
        "Basic realm=\"lattice\""
    } else {
        "Bearer realm=\"lattice\""
    };
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

const HOW: &str = "send `Authorization: Bearer TOKEN` (`ltc login --token TOKEN`; an admin makes tokens with `ltc token create NAME --role ROLE`)";

/// What of a request says who makes it and what it does to which path.
struct Asked {
    authorization: Option<String>,
    method: Method,
    path: String,
    peer: Option<SocketAddr>,
}

/// The caller (with a task's access to its repository), or the 401 (or 503) that
/// answers the request.
async fn identify(s: &ApiState, req: &Asked) -> Result<(Caller, Option<RepoAccess>), Response> {
    if let Some(access) = req
        .authorization
        .as_deref()
        .and_then(|a| a.trim().strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|d| {
            d.strip_prefix(TASK_CREDENTIAL_USER)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(str::to_string)
        })
        .filter(|_| repo_of(&req.path).is_some())
    {
        return repo_task_caller(s, req, &access)
            .await
            .map(|(c, a)| (c, Some(a)));
    }
    identify_caller(s, req).await.map(|c| (c, None))
}

/// Who calls (anything but a task on its repository).
async fn identify_caller(s: &ApiState, req: &Asked) -> Result<Caller, Response> {
    let peer = req.peer;
    let Some(given) = req.authorization.as_deref().map(str::trim) else {
        if s.basic_auth.is_none() && is_loopback(peer) {
            return Ok(Caller {
                name: "local".into(),
                role: Some(ApiRole::Admin),
            });
        }
        return Err(unauthorized(s, format!("missing credentials: {HOW}")));
    };
    if let Some(secret) = given.strip_prefix("Bearer ") {
        return token_caller(s, secret.trim()).await;
    }
    let decoded = given
        .strip_prefix("Basic ")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let Some(decoded) = decoded else {
        return Err(unauthorized(
            s,
            format!("unreadable Authorization header: {HOW}"),
        ));
    };
    if s.basic_auth.as_deref() == Some(decoded.as_str()) {
        let user = decoded.split(':').next().unwrap_or_default();
        return Ok(Caller {
            name: format!("basic:{user}"),
            role: Some(ApiRole::Admin),
        });
    }
    match decoded.split_once(':') {
        Some((TASK_CREDENTIAL_USER, password)) => task_caller(s, req, password).await,
        Some((_, token)) if repo_of(&req.path).is_some() => token_caller(s, token).await,
        _ => Err(unauthorized(
            s,
            format!("wrong user or password: use the API's --basic-auth credential, or {HOW}"),
        )),
    }
}

/// Who calls with `authorization` (an `Authorization` header's value, or none) from
/// `peer`, as this middleware would identify a `GET path`: for the front doors
/// outside the HTTP API (the ssh proxy, the WebDAV blob store). Err: the 401 (or 503)
/// the API would answer, as its error name and message.
pub(crate) async fn caller_of(
    s: &ApiState,
    authorization: Option<&str>,
    path: &str,
    peer: Option<SocketAddr>,
) -> Result<Caller, ApiError> {
    let asked = Asked {
        authorization: authorization.map(str::to_string),
        method: Method::GET,
        path: path.to_string(),
        peer,
    };
    match identify_caller(s, &asked).await {
        Ok(c) => Ok(c),
        Err(resp) => Err(ApiError::from_response(resp).await),
    }
}

/// The caller an API token's secret names.
async fn token_caller(s: &ApiState, secret: &str) -> Result<Caller, Response> {
    match s.db.token_by_secret(secret).await {
        Ok(Some(t)) => match t.api_role() {
            Some(role) => Ok(Caller {
                name: t.name,
                role: Some(role),
            }),
            None => Err(unauthorized(
                s,
                format!(
                    "token {} has no known role: revoke it and make another",
                    t.name
                ),
            )),
        },
        Ok(None) => Err(unauthorized(
            s,
            "unknown or revoked token: ask an admin for a token (`ltc token create NAME --role ROLE`), then `ltc login --token TOKEN`",
        )),
        Err(e) => Err(ApiError::from_db(e, ErrorName::InvalidRequest).into_response()),
    }
}

/// The repository a `/v1/repos/NAME/…` path names.
fn repo_of(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/repos/")?
        .split_once('/')
        .map(|(repo, _)| repo)
        .filter(|r| !r.is_empty())
}

/// A task's credential on its repository: its op's scope there, checked against its
/// task (found by the guid the credential names).
async fn repo_task_caller(
    s: &ApiState,
    req: &Asked,
    password: &str,
) -> Result<(Caller, RepoAccess), Response> {
    let refused = || {
        unauthorized(
            s,
            "this task credential does not allow this request: it only opens its own running backup task's repository",
        )
    };
    let (Some(guid), Some(repo)) = (credential_task(password), repo_of(&req.path)) else {
        return Err(refused());
    };
    let task = match s.db.task(guid).await {
        Ok(t) => t,
        Err(crate::db::DbError::NotFound { .. }) => return Err(refused()),
        Err(e) => return Err(ApiError::from_db(e, ErrorName::InvalidRequest).into_response()),
    };
    let scope = task_scope(&task, repo, password).ok_or_else(refused)?;
    Ok((
        Caller {
            name: format!("task:{guid}"),
            role: None,
        },
        RepoAccess {
            scope,
            repo: Some(repo.to_string()),
        },
    ))
}

/// A task's blob credential, checked against its task and this request.
async fn task_caller(s: &ApiState, req: &Asked, password: &str) -> Result<Caller, Response> {
    let refused = || {
        unauthorized(
            s,
            "this task credential does not allow this request: it only lets its own running backup, restore or verify task upload or download its one blob",
        )
    };
    let Some(guid) = credential_task(password) else {
        return Err(refused());
    };
    let Some(verb) = BlobVerb::of(&req.method) else {
        return Err(refused());
    };
    let task = match s.db.task(guid).await {
        Ok(t) => t,
        Err(crate::db::DbError::NotFound { .. }) => return Err(refused()),
        Err(e) => return Err(ApiError::from_db(e, ErrorName::InvalidRequest).into_response()),
    };
    if !grants(&task, verb, &req.path, password) {
        return Err(refused());
    }
    Ok(Caller {
        name: format!("task:{guid}"),
        role: None,
    })
}

fn forbidden(why: String) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, ErrorName::Forbidden, why).into_response()
}

/// The route's path parameters (percent-decoded), by name.
async fn path_params(req: &mut Request) -> HashMap<String, String> {
    match req.extract_parts::<RawPathParams>().await {
        Ok(p) => p
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        // Unreadable parameters: the handler's own extractor refuses the request.
        Err(_) => HashMap::new(),
    }
}

/// The middleware on `/v1/*`: identify, authorize (role, then owner), answer (redacted
/// for viewers, and for developers reading what they do not own), audit.
pub(super) async fn authenticate(
    State(s): State<ApiState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let asked = Asked {
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default().to_string()),
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        peer: caller_address(
            peer.map(|p| p.0 .0),
            req.headers()
                .get("x-forwarded-for")
                .map(HeaderValue::as_bytes),
        ),
    };
    let (caller, mut repo_access) = match identify(&s, &asked).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if caller.role == Some(ApiRole::Admin) && repo_of(&asked.path).is_some() {
        repo_access = Some(RepoAccess {
            scope: RepoScope::Prune,
            repo: None,
        });
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    if let Some(role) = caller.role {
        if let Decision::Deny(why) = api_authz(role, req.method(), route.as_deref()) {
            crate::metrics::API_REFUSED
                .with_label_values(&[role.as_str()])
                .inc();
            return forbidden(why);
        }
    }
    let params = path_params(&mut req).await;
    if let Some(route) = route.as_deref() {
        if let Some(object) = object_of(req.method(), route, &params) {
            let verb = verb_of(req.method(), route);
            if let Err(e) = owners::ensure_may_act(&s, &caller, verb, &object).await {
                return e.into_response();
            }
        }
    }
    let Asked {
        method,
        path: object,
        ..
    } = asked;
    req.extensions_mut().insert(caller.clone());
    if let Some(access) = repo_access {
        req.extensions_mut().insert(access);
    }
    let resp = next.run(req).await;
    // A backup task's every file in its repository is not worth an audit line each
    // (its task is the record).
    let task_on_repo = caller.role.is_none() && repo_of(&object).is_some();
    if audit::is_change(&method, route.as_deref()) && resp.status().is_success() && !task_on_repo {
        audit::record(&s.logs, &caller, &method, &object);
    }
    if caller.is_viewer() {
        return redact::response(resp).await;
    }
    match route {
        Some(route)
            if caller.role == Some(ApiRole::Developer) && super::authz::is_read(&method) =>
        {
            owners::redact_unowned(&s, &caller, &route, &params, resp).await
        }
        _ => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::{caller_address, is_loopback};

    #[test]
    fn a_local_relay_stands_for_the_client_it_names_last() {
        let at = |s: &str| Some(s.parse().unwrap());
        let local = at("127.0.0.1:5000");
        assert_eq!(caller_address(local, None), local);
        assert!(is_loopback(caller_address(local, Some(b"127.0.0.1"))));
        // A client far away, however it fills the header itself.
        for far in [
            &b"10.1.2.3"[..],
            b"127.0.0.1, 10.1.2.3",
            b"::1,2001:db8::1",
            b"not an address",
            b"",
        ] {
            assert!(!is_loopback(caller_address(local, Some(far))), "{far:?}");
        }
        // Only a relay on this host is believed.
        let far = at("10.9.9.9:7");
        assert_eq!(caller_address(far, Some(b"127.0.0.1")), far);
    }

    #[test]
    fn only_this_host_is_loopback() {
        let at = |s: &str| Some(s.parse().unwrap());
        assert!(is_loopback(at("127.0.0.1:9")));
        assert!(is_loopback(at("[::1]:9")));
        assert!(
            is_loopback(at("[::ffff:127.0.0.1]:9")),
            "v4-mapped loopback"
        );
        assert!(!is_loopback(at("10.1.2.3:9")));
        assert!(!is_loopback(at("[::ffff:10.1.2.3]:9")));
        assert!(!is_loopback(None), "an unknown caller is not trusted");
    }
}
