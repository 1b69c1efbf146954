//! `/v1/cells`, `/v1/domains` (freshness by `Cache-Control: max-age`) and
//! `/v1/events`, the server-sent stream of model events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::Response;
use axum::Json;
use futures::{Stream, StreamExt};
use lattice_specs::errors::ErrorName;
use lattice_specs::models::Domain;
use lattice_specs::receptor::{CellResponse, EventPayload};
use tokio_stream::wrappers::BroadcastStream;

use super::{no_content, ApiError, ApiResult, ApiState};
use crate::events::event_name;

pub(super) async fn list_cells(State(s): State<ApiState>) -> ApiResult<Json<Vec<CellResponse>>> {
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

pub(super) async fn upsert_domain(
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

pub(super) async fn list_domains(State(s): State<ApiState>) -> ApiResult<Json<Vec<String>>> {
    let d =
        s.db.domains()
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?;
    Ok(Json(d.into_iter().map(|d| d.name).collect()))
}

/// The model events as server-sent events; a viewer's with environment values and
/// credentials hidden (see `redact`), and a developer's about apps and tasks it does
/// not own likewise (`owners`).
pub(super) async fn events(
    State(s): State<ApiState>,
    caller: Option<axum::Extension<super::Caller>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let caller = caller.map(|c| c.0);
    let viewer = caller.as_ref().is_some_and(|c| c.is_viewer());
    let developer = caller.filter(|c| c.role == Some(lattice_specs::receptor::ApiRole::Developer));
    let db = s.db.clone();
    let stream = BroadcastStream::new(s.hub.subscribe())
        // The BBS shutting down ends the stream.
        .take_until(s.hub.closing())
        // A subscriber that fell behind is cut off: it reconnects and resyncs.
        .take_while(|r| futures::future::ready(r.is_ok()))
        .filter_map(move |r| {
            let (db, developer) = (db.clone(), developer.clone());
            async move {
                let e = r.ok()?;
                let payload = EventPayload::from_event(&e)?;
                let hide = match &developer {
                    Some(c) => super::owners::hide_event(&db, c, &payload).await,
                    None => viewer,
                };
                let data = if hide {
                    let mut v = serde_json::to_value(&payload).ok()?;
                    super::redact::redact(&mut v);
                    v.to_string()
                } else {
                    serde_json::to_string(&payload).ok()?
                };
                Some(Ok(SseEvent::default()
                    .event(event_name(&e))
                    .id(e.revision.to_string())
                    .data(data)))
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
