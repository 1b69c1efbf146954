//! Loggregator's doppler, read side, as the original Lattice `ltc` (v0.7) reads it at
//! `doppler.DOMAIN` (the router sends that host here; the paths are also served on the
//! API's own listener):
//! - `GET /apps/GUID/stream`: a WebSocket, one binary message per new log line of the
//!   app (log guid GUID; `lattice-debug`: the components' own lines), each a
//!   marshalled dropsonde Envelope of a LogMessage (`ltc logs`, `ltc debug-logs`);
//! - `GET /apps/GUID/recentlogs`: the recent lines, `multipart/x-protobuf`, a part
//!   per Envelope;
//! - `GET /apps/GUID/containermetrics`: one ContainerMetric Envelope per running
//!   instance (`ltc status`'s CPU and memory), multipart the same way.
//!
//! The lines are those `/v1/logs` serves (`super::logs::lines_of`), the metrics the
//! cells' usage (`crate::doppler`). Who may read: as on `/v1/*` (`super::auth`),
//! except that an empty `Authorization:` header, which is all the original client
//! ever sends, counts as none: without credentials a reader is let in only over
//! loopback to an API that has no `--basic-auth` (docs/security.md).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use lattice_specs::dropsonde::{self, log_envelope, metric_envelope};
use lattice_specs::errors::ErrorName;
use lattice_specs::logs::LogMessage;
use lattice_specs::models::actual_lrp::State as ActualState;
use prost::Message as _;

use super::auth::authenticate;
use super::logs::lines_of;
use super::{ApiError, ApiResult, ApiState};

/// A stream's client may keep one message waiting this long; then it is dropped (its
/// lines are not buffered for it).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The doppler routes, behind the API's authentication.
pub(super) fn routes(state: ApiState) -> Router<ApiState> {
    Router::new()
        .route("/apps/{guid}/stream", get(stream))
        .route("/apps/{guid}/recentlogs", get(recent_logs))
        .route("/apps/{guid}/containermetrics", get(container_metrics))
        .layer(middleware::from_fn_with_state(state, authenticate))
        .layer(middleware::from_fn(empty_authorization_is_none))
}

/// The original client sends `Authorization:` with an empty value: no credential.
async fn empty_authorization_is_none(mut req: Request, next: Next) -> Response {
    if req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().iter().all(u8::is_ascii_whitespace))
    {
        req.headers_mut().remove(header::AUTHORIZATION);
    }
    next.run(req).await
}

async fn stream(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    // Live lines only, as doppler's stream (history is `recentlogs`).
    let lines = lines_of(&s, &guid, false, true).await?;
    Ok(ws.on_upgrade(move |socket| pump(socket, lines)))
}

/// Sends each line as a binary message until the client goes, is too slow, or the
/// lines end (the BBS stops).
async fn pump(socket: WebSocket, mut lines: BoxStream<'static, LogMessage>) {
    let (mut tx, mut rx) = socket.split();
    crate::metrics::DOPPLER_STREAMS_OPEN.inc();
    let outcome = loop {
        tokio::select! {
            line = lines.next() => {
                let Some(line) = line else {
                    let _ = tx.send(Message::Close(None)).await;
                    break "ended";
                };
                let bytes = log_envelope(&line).encode_to_vec();
                match tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::Binary(bytes.into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break "closed_by_client",
                    Err(_) => break "slow_client",
                }
            }
            // The client never writes; anything but a ping or pong ends it.
            m = rx.next() => match m {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => break "closed_by_client",
            },
        }
    };
    if outcome == "slow_client" {
        tracing::info!("a doppler stream's client read nothing for {SEND_TIMEOUT:?}: dropped");
    }
    crate::metrics::DOPPLER_STREAMS_OPEN.dec();
    crate::metrics::DOPPLER_STREAMS
        .with_label_values(&[outcome])
        .inc();
}

/// A 200 `multipart/x-protobuf` answer, a part per envelope.
fn multipart(envelopes: &[dropsonde::events::Envelope]) -> Response {
    let (boundary, body) =
        dropsonde::multipart(envelopes, || uuid::Uuid::new_v4().simple().to_string());
    let content_type = format!("multipart/x-protobuf; boundary={boundary}");
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::try_from(content_type).expect("a hex boundary is a valid header value"),
    );
    r
}

async fn recent_logs(State(s): State<ApiState>, Path(guid): Path<String>) -> ApiResult<Response> {
    let lines: Vec<LogMessage> = lines_of(&s, &guid, true, false).await?.collect().await;
    let envelopes: Vec<_> = lines.iter().map(log_envelope).collect();
    Ok(multipart(&envelopes))
}

async fn container_metrics(
    State(s): State<ApiState>,
    Path(guid): Path<String>,
) -> ApiResult<Response> {
    let invalid = |e| ApiError::from_db(e, ErrorName::InvalidRequest);
    // GUID is the app's metrics guid; ltc's apps have it equal to their process guid.
    let desired = match s.db.desired_lrp(&guid).await {
        Ok(d) => Some(d),
        Err(crate::db::DbError::NotFound { .. }) => {
            s.db.desired_lrps("")
                .await
                .map_err(invalid)?
                .into_iter()
                .find(|d| d.metrics_guid == guid)
        }
        Err(e) => return Err(invalid(e)),
    };
    let Some(desired) = desired else {
        return Ok(multipart(&[]));
    };
    let app_id = match desired.metrics_guid.as_str() {
        "" => desired.process_guid.clone(),
        m => m.to_string(),
    };
    let mut instances: HashMap<String, i32> = HashMap::new();
    let mut cell_of: HashMap<String, String> = HashMap::new();
    for a in
        s.db.actual_lrps("", "", &desired.process_guid, None)
            .await
            .map_err(invalid)?
    {
        let (Some(k), Some(ik)) = (&a.key, &a.instance_key) else {
            continue;
        };
        if a.state() != ActualState::Running || ik.cell_id.is_empty() {
            continue;
        }
        instances.insert(ik.instance_guid.clone(), k.index);
        cell_of.insert(ik.instance_guid.clone(), ik.cell_id.clone());
    }
    let reps: HashMap<String, String> =
        s.db.cells()
            .await
            .map_err(invalid)?
            .into_iter()
            .filter_map(|c| {
                Some((
                    c.cell_id.clone(),
                    s.cells.base_url(&c.cell_id, &c.rep_address)?,
                ))
            })
            .collect();
    let http = s.cells.http().clone();
    let sample = || crate::usage::gather(&http, &reps, &cell_of);
    let metrics = crate::doppler::container_metrics(
        &app_id,
        &instances,
        &s.cpu_samples,
        crate::doppler::SECOND_SAMPLE,
        sample,
    )
    .await;
    let envelopes: Vec<_> = metrics.iter().map(metric_envelope).collect();
    Ok(multipart(&envelopes))
}
