//! `/v1/blobs` (an extension): backup archives and task files, checked by SHA-256.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lattice_specs::errors::ErrorName;

use super::{ApiError, ApiState};

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
pub(super) async fn put_blob(
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
pub(super) async fn get_blob(
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

pub(super) async fn delete_blob(
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

pub(super) async fn list_blobs(
    State(s): State<ApiState>,
) -> Result<Json<Vec<crate::blobs::BlobInfo>>, ApiError> {
    blob_store(&s)?
        .list()
        .map(Json)
        .map_err(|e| ApiError::unknown(e.to_string()))
}
