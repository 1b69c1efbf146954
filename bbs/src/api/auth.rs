//! Who is calling the public API and whether they may: the middleware on `/v1/*`.
//!
//! A request is made by one [`Caller`]:
//! - `Authorization: Bearer TOKEN`: an API token (`db::tokens`), with its role;
//! - HTTP Basic with the API's `--basic-auth` credential: an admin (old receptor
//!   clients, routers posting their access lines);
//! - HTTP Basic as [`TASK_CREDENTIAL_USER`]: a backup, restore or verify task, for the
//!   one blob and verb its own credential grants (`backup_tasks::grants`);
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

/// The caller, or the 401 (or 503) that answers the request.
async fn identify(s: &ApiState, req: &Asked) -> Result<Caller, Response> {
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
        return match s.db.token_by_secret(secret.trim()).await {
            Ok(Some(t)) => match t.api_role() {
                Some(role) => Ok(Caller {
                    name: t.name,
                    role: Some(role),
                }),
                None => Err(unauthorized(s, format!("token {} has no known role: revoke it and make another", t.name))),
            },
            Ok(None) => Err(unauthorized(
                s,
                "unknown or revoked token: ask an admin for a token (`ltc token create NAME --role ROLE`), then `ltc login --token TOKEN`",
            )),
            Err(e) => Err(ApiError::from_db(e, ErrorName::InvalidRequest).into_response()),
        };
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
        _ => Err(unauthorized(
            s,
            format!("wrong user or password: use the API's --basic-auth credential, or {HOW}"),
        )),
    }
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
        peer: peer.map(|p| p.0 .0),
    };
    let caller = match identify(&s, &asked).await {
        Ok(c) => c,
        Err(r) => return r,
    };
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
    let resp = next.run(req).await;
    if audit::is_change(&method, route.as_deref()) && resp.status().is_success() {
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
    use super::is_loopback;

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
