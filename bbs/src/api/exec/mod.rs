//! `ltc ssh` at the public API: the exec and port-forward routes of
//! `lattice_specs::exec` (an app's instance, or a running Task), GETs upgraded to
//! WebSockets. Who may is `authz`'s decision (never a viewer; a developer on what it
//! owns). Before upgrading, the target is checked (`target`: the app, the index, the
//! instance or Task running) and the rep of its cell is reached over the BBS's cell
//! client (`crate::cell_client`: mutual TLS, that cell's identity exactly), so every
//! refusal is a receptor error without an upgrade. Then `relay` carries the messages,
//! with `who` set from the caller. Each session is audited (verb `EXEC` or `FORWARD`)
//! and counted in `bbs_api_exec_sessions_total{kind,outcome}`.

mod relay;
pub(crate) mod target;

use std::collections::HashMap;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use lattice_specs::errors::ErrorName;
use lattice_specs::exec::{ForwardQuery, REP_EXEC, REP_FORWARD};
use tracing::Instrument;

use super::{audit, ApiError, ApiResult, ApiState, Caller};
use crate::cell_client::RepSocketError;
pub(crate) use relay::Kind;
pub(crate) use target::{NoTarget, Target};

/// Who opens a session, as the rep's log line says it: the token's name, the Basic
/// user, or `local` (the loopback caller without credentials).
pub(crate) fn who(caller: &Caller) -> String {
    caller
        .name
        .strip_prefix("basic:")
        .unwrap_or(&caller.name)
        .to_string()
}

/// Counts a session refused before it opened (`outcome`: `refused`, `unreachable`).
fn not_opened(kind: Kind, outcome: &str, e: ApiError) -> ApiError {
    crate::metrics::API_EXEC_SESSIONS
        .with_label_values(&[kind.as_str(), outcome])
        .inc();
    e
}

fn refused(kind: Kind, t: NoTarget) -> ApiError {
    let status = match t.name {
        ErrorName::InstanceNotRunning => StatusCode::CONFLICT,
        _ => StatusCode::NOT_FOUND,
    };
    not_opened(kind, "refused", ApiError::new(status, t.name, t.message))
}

/// The running instance `index` of app `guid`.
async fn lrp_target(s: &ApiState, kind: Kind, guid: &str, index: &str) -> ApiResult<Target> {
    let index = super::lrps::parse_index(index)?;
    lrp_target_at(s, kind, guid, index).await
}

/// The running instance `index` of app `guid` (for the front doors besides the
/// HTTP API: the ssh proxy).
pub(crate) async fn lrp_target_at(
    s: &ApiState,
    kind: Kind,
    guid: &str,
    index: i32,
) -> ApiResult<Target> {
    let invalid = |e| ApiError::from_db(e, ErrorName::InvalidRequest);
    let desired = s.db.desired_lrp(guid).await.map_err(invalid)?;
    let records =
        s.db.actual_lrps("", "", guid, Some(index))
            .await
            .map_err(invalid)?;
    target::lrp_target(guid, index, desired.instances, &records).map_err(|t| refused(kind, t))
}

/// The running Task `guid`.
async fn task_target(s: &ApiState, kind: Kind, guid: &str) -> ApiResult<Target> {
    let t =
        s.db.task(guid)
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    target::task_target(&t).map_err(|t| refused(kind, t))
}

/// The forward query from the client's: `port` (required) and `host` (empty,
/// `localhost` or an IP address); `who` is the caller, whatever the client said.
fn forward_query(q: &HashMap<String, String>, who: &str) -> ApiResult<ForwardQuery> {
    let raw = q.get("port").map(String::as_str).unwrap_or_default();
    let port = raw.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
        ApiError::invalid_request(format!(
            "port must be the TCP port to connect to inside the instance (1-65535), got {raw:?}"
        ))
    })?;
    let host = q.get("host").cloned().unwrap_or_default();
    if !(host.is_empty() || host == "localhost" || host.parse::<std::net::IpAddr>().is_ok()) {
        return Err(ApiError::invalid_request(format!(
            "host must be an IP address inside the instance (or localhost, the default), got {host:?}: names are not resolved"
        )));
    }
    Ok(ForwardQuery {
        port,
        host,
        who: who.to_string(),
    })
}

/// The rep's URL for `kind` on `target` (`query` for a forward), or why there is none.
async fn rep_url(
    s: &ApiState,
    target: &Target,
    kind: Kind,
    query: Option<&ForwardQuery>,
) -> ApiResult<String> {
    let cells =
        s.db.cells()
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    let gone = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorName::CellNotFound,
            format!(
                "the cell of {} ({}) is not present (restarting or gone); try again",
                target.label, target.cell_id
            ),
        )
    };
    let cell = cells
        .iter()
        .find(|c| c.cell_id == target.cell_id)
        .ok_or_else(gone)?;
    let base = s
        .cells
        .base_url(&cell.cell_id, &cell.rep_address)
        .ok_or_else(gone)?;
    let route = match kind {
        Kind::Exec => REP_EXEC,
        Kind::Forward => REP_FORWARD,
    };
    let path = route.replace("{handle}", &lattice_specs::path_segment(&target.handle));
    let mut url = reqwest::Url::parse(&format!("{base}{path}"))
        .map_err(|e| ApiError::unknown(format!("the rep URL of cell {}: {e}", cell.cell_id)))?;
    if let Some(q) = query {
        url.query_pairs_mut()
            .append_pair("port", &q.port.to_string())
            .append_pair("host", &q.host)
            .append_pair("who", &q.who);
    }
    Ok(url.to_string())
}

/// What a rep that did not open the session means for the client: its own named
/// 4xx (e.g. the container just stopped), else a 502 saying what happened.
fn rep_refusal(target: &Target, e: RepSocketError) -> (ApiError, &'static str) {
    match e {
        RepSocketError::Refused {
            status,
            name: Some(name),
            message,
        } if (400..500).contains(&status) => (
            ApiError::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT),
                name,
                message,
            ),
            "refused",
        ),
        e => (
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorName::Unknown,
                format!(
                    "cannot open a session on {} at cell {}: {e}",
                    target.label, target.cell_id
                ),
            ),
            "unreachable",
        ),
    }
}

/// The rep's end of a session of `kind` on `target` (`forward` for a port forward),
/// opened; Err: the receptor error that says why not (counted as the API counts its
/// own).
pub(crate) async fn open_rep(
    s: &ApiState,
    kind: Kind,
    target: &Target,
    forward: Option<&ForwardQuery>,
) -> ApiResult<crate::cell_client::RepSocket> {
    let url = rep_url(s, target, kind, forward)
        .await
        .map_err(|e| not_opened(kind, "unreachable", e))?;
    s.cells.websocket(&url).await.map_err(|e| {
        tracing::warn!(target = %target.label, cell = %target.cell_id, error = %e, "the rep did not open a session");
        let (e, outcome) = rep_refusal(target, e);
        not_opened(kind, outcome, e)
    })
}

/// One session about to open.
struct Opening {
    kind: Kind,
    target: Target,
    caller: Caller,
    /// The request's path, for the audit line.
    path: String,
    forward: Option<ForwardQuery>,
}

impl Opening {
    fn new(
        kind: Kind,
        target: Target,
        caller: Caller,
        uri: &axum::http::Uri,
        forward: Option<ForwardQuery>,
    ) -> Opening {
        Opening {
            kind,
            target,
            caller,
            path: uri.path().to_string(),
            forward,
        }
    }
}

/// Reaches the rep, then upgrades the client and relays until either side closes.
async fn open(
    s: ApiState,
    o: Opening,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let kind = o.kind;
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            crate::metrics::API_EXEC_SESSIONS
                .with_label_values(&[kind.as_str(), "not_websocket"])
                .inc();
            return Ok(rejection.into_response());
        }
    };
    let url = rep_url(&s, &o.target, kind, o.forward.as_ref())
        .await
        .map_err(|e| not_opened(kind, "unreachable", e))?;
    let rep = match s.cells.websocket(&url).await {
        Ok(rep) => rep,
        Err(e) => {
            tracing::warn!(target = %o.target.label, cell = %o.target.cell_id, error = %e, "the rep did not open a session");
            let (e, outcome) = rep_refusal(&o.target, e);
            return Err(not_opened(kind, outcome, e));
        }
    };
    let verb = match kind {
        Kind::Exec => "EXEC",
        Kind::Forward => "FORWARD",
    };
    let verb = Method::from_bytes(verb.as_bytes()).expect("a valid method token");
    let object = match &o.forward {
        Some(q) => format!("{}?port={}&host={}", o.path, q.port, q.host),
        None => o.path.clone(),
    };
    audit::record(&s.logs, &o.caller, &verb, &object);
    let span = tracing::info_span!(
        "session",
        kind = kind.as_str(),
        target = %o.target.label,
        cell = %o.target.cell_id,
        caller = %o.caller.name
    );
    span.in_scope(|| tracing::info!("session opened"));
    let closing = s.hub.closing();
    let who = who(&o.caller);
    Ok(ws
        .on_failed_upgrade(|e| tracing::info!(error = %e, "the client's WebSocket upgrade failed"))
        .on_upgrade(move |socket| relay::run(socket, rep, kind, who, closing).instrument(span)))
}

/// `GET /v1/actual_lrps/{process_guid}/index/{index}/exec`.
pub(super) async fn lrp_exec(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((guid, index)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let target = lrp_target(&s, Kind::Exec, &guid, &index).await?;
    let o = Opening::new(Kind::Exec, target, caller, &uri, None);
    open(s, o, ws).await
}

/// `GET /v1/tasks/{task_guid}/exec`.
pub(super) async fn task_exec(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(guid): Path<String>,
    OriginalUri(uri): OriginalUri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let target = task_target(&s, Kind::Exec, &guid).await?;
    let o = Opening::new(Kind::Exec, target, caller, &uri, None);
    open(s, o, ws).await
}

/// `GET /v1/actual_lrps/{process_guid}/index/{index}/forward?port=PORT[&host=HOST]`.
pub(super) async fn lrp_forward(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((guid, index)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    OriginalUri(uri): OriginalUri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let forward = forward_query(&q, &who(&caller))?;
    let target = lrp_target(&s, Kind::Forward, &guid, &index).await?;
    let o = Opening::new(Kind::Forward, target, caller, &uri, Some(forward));
    open(s, o, ws).await
}

/// `GET /v1/tasks/{task_guid}/forward?port=PORT[&host=HOST]`.
pub(super) async fn task_forward(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(guid): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    OriginalUri(uri): OriginalUri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let forward = forward_query(&q, &who(&caller))?;
    let target = task_target(&s, Kind::Forward, &guid).await?;
    let o = Opening::new(Kind::Forward, target, caller, &uri, Some(forward));
    open(s, o, ws).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_forward_query_names_a_port_and_an_address_and_says_who() {
        let q = forward_query(&query(&[("port", "8080"), ("who", "admin")]), "dev-a").unwrap();
        assert_eq!(
            q,
            ForwardQuery {
                port: 8080,
                host: String::new(),
                who: "dev-a".into()
            }
        );
        for host in ["localhost", "10.0.0.5", "::1"] {
            let q = forward_query(&query(&[("port", "1"), ("host", host)]), "x").unwrap();
            assert_eq!(q.host, host);
        }
        for bad in [
            &[][..],
            &[("port", "0")],
            &[("port", "http")],
            &[("port", "70000")],
        ] {
            let e = forward_query(&query(bad), "x").unwrap_err().into_response();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
        let e = forward_query(&query(&[("port", "80"), ("host", "db.internal")]), "x").unwrap_err();
        assert!(format!("{e:?}").contains("names are not resolved"), "{e:?}");
    }

    #[test]
    fn who_is_the_token_the_basic_user_or_local() {
        let caller = |name: &str| Caller {
            name: name.into(),
            role: Some(lattice_specs::receptor::ApiRole::Admin),
        };
        assert_eq!(who(&caller("ci")), "ci");
        assert_eq!(who(&caller("basic:ops")), "ops");
        assert_eq!(who(&caller("local")), "local");
    }

    #[test]
    fn a_rep_refusal_keeps_its_name_and_a_broken_rep_is_a_bad_gateway() {
        let t = Target {
            handle: "i-1".into(),
            cell_id: "cell-a".into(),
            label: "instance 0 of web".into(),
        };
        let (e, outcome) = rep_refusal(
            &t,
            RepSocketError::Refused {
                status: 409,
                name: Some(ErrorName::InstanceNotRunning),
                message: "the container is stopping".into(),
            },
        );
        assert_eq!(outcome, "refused");
        assert_eq!(e.into_response().status(), StatusCode::CONFLICT);
        let (e, outcome) = rep_refusal(&t, RepSocketError::Unreachable("refused".into()));
        assert_eq!(outcome, "unreachable");
        let text = format!("{e:?}");
        assert!(text.contains("instance 0 of web at cell cell-a"), "{text}");
        assert_eq!(e.into_response().status(), StatusCode::BAD_GATEWAY);
    }
}
