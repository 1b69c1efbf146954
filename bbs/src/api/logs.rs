//! `/v1/logs`: reading an app's lines from every cell and the BBS's buffer, and
//! posting lines into that buffer (only callers [`may_post_logs`] allows).

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use lattice_specs::errors::ErrorName;
use lattice_specs::logs::decode_ndjson;

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
pub(super) async fn post_logs(
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
