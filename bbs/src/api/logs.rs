//! `/v1/logs`: reading an app's lines from every cell and the BBS's buffer, and
//! posting lines into that buffer (admins only: `authz`; a router beside the BBS over
//! loopback is the local trusted caller, one elsewhere posts with a credential).

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::StreamExt;
use lattice_specs::errors::ErrorName;
use lattice_specs::logs::{decode_ndjson, LogMessage};

use super::{ApiError, ApiState};

#[derive(serde::Deserialize)]
pub(super) struct LogQuery {
    /// Keep the stream open for new lines (default true).
    follow: Option<bool>,
    /// Start with the recent history (default true).
    recent: Option<bool>,
}

/// `GET /v1/logs/LOG_GUID`: the log guid's lines from every cell and from the BBS's
/// own buffer, as newline-delimited JSON (an extension; the receptor had none).
pub(super) async fn get_logs(
    State(s): State<ApiState>,
    Path(log_guid): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let lines = lines_of(
        &s,
        &log_guid,
        q.recent.unwrap_or(true),
        q.follow.unwrap_or(true),
    )
    .await?
    .map(|m| Ok::<_, Infallible>(Bytes::from(m.to_ndjson())));
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}

/// A log guid's lines from every cell and the BBS's own buffer (`crate::logs::gather`):
/// the recent ones in time order if `recent`, then new ones as they come if `follow`
/// (until the BBS shuts down). What `/v1/logs` and doppler's read side serve.
pub(super) async fn lines_of(
    s: &ApiState,
    log_guid: &str,
    recent: bool,
    follow: bool,
) -> Result<BoxStream<'static, LogMessage>, ApiError> {
    let cells = s.cells.clone();
    let reps: Vec<String> =
        s.db.cells()
            .await
            .map_err(|e| ApiError::from_db(e, ErrorName::InvalidRequest))?
            .into_iter()
            .filter_map(|c| cells.base_url(&c.cell_id, &c.rep_address))
            .collect();
    let db = s.db.clone();
    let more_cells: crate::logs::CellLister = std::sync::Arc::new(move || {
        let (db, cells) = (db.clone(), cells.clone());
        Box::pin(async move {
            db.cells()
                .await
                .map(|all| {
                    all.into_iter()
                        .filter_map(|c| cells.base_url(&c.cell_id, &c.rep_address))
                        .collect()
                })
                .unwrap_or_default()
        })
    });
    Ok(crate::logs::gather(
        s.cells.http(),
        &s.logs,
        reps,
        Some(more_cells),
        log_guid,
        recent,
        follow,
    )
    .await
    // The BBS shutting down ends the stream.
    .take_until(s.hub.closing())
    .boxed())
}

/// `POST /v1/logs`: newline-delimited JSON log messages into the BBS's buffer (how a
/// router sends its access lines). At most [`MAX_LOG_POST_BYTES`] a request; a long
/// message is cut and a line with an
/// oversized log guid or source dropped (see [`LogBuffer::offer`]).
pub(super) async fn post_logs(
    State(s): State<ApiState>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
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
