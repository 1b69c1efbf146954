//! How the public API says no: [`ApiError`] (the receptor's `{"name", "message"}`
//! with its HTTP status), the mapping from the BBS's errors, and the middleware
//! that turns axum's own rejections into the same JSON.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor;
use serde::de::DeserializeOwned;

use super::{MAX_BODY_BYTES, MAX_LOG_POST_BYTES};
use crate::db::DbError;
use crate::store::StoreError;

/// An error as the receptor wrote it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    name: ErrorName,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, name: ErrorName, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            name,
            message: message.into(),
        }
    }

    pub(crate) fn unknown(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorName::Unknown,
            message,
        )
    }

    pub(crate) fn conflict(name: ErrorName, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, name, message)
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorName::InvalidRequest, message)
    }

    /// The error an API answer (an error response of this API) says.
    pub(crate) async fn from_response(resp: Response) -> ApiError {
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        match serde_json::from_slice::<receptor::Error>(&body) {
            Ok(e) => ApiError::new(
                status,
                e.name.parse().unwrap_or(ErrorName::Unknown),
                e.message,
            ),
            Err(_) => ApiError::new(
                status,
                rejection_name(status),
                String::from_utf8_lossy(&body).trim().to_string(),
            ),
        }
    }

    pub(crate) fn name(&self) -> ErrorName {
        self.name
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The same refusal as a BBS error (for code that answers with those).
    pub(crate) fn into_db(self) -> DbError {
        DbError::Conflict {
            name: self.name,
            message: self.message,
        }
    }

    /// Map a BBS error; `invalid_name` is what validation failures are called
    /// here (the receptor said InvalidTask / InvalidLRP / InvalidRequest).
    pub(crate) fn from_db(e: DbError, invalid_name: ErrorName) -> ApiError {
        let msg = e.to_string();
        match &e {
            DbError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, invalid_name, msg),
            DbError::NotFound { name, .. } => ApiError::new(StatusCode::NOT_FOUND, *name, msg),
            DbError::AlreadyExists { name, .. } => ApiError::new(StatusCode::CONFLICT, *name, msg),
            DbError::Refused(m) => {
                let name = match m.name() {
                    ErrorName::TaskNotResolvable => ErrorName::TaskNotDeletable,
                    other => other,
                };
                ApiError::new(StatusCode::CONFLICT, name, msg)
            }
            DbError::Store(StoreError::Unavailable(_)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorName::StoreUnavailable,
                format!("{msg}; retry when the store is back"),
            ),
            DbError::Contended(_) => {
                ApiError::new(StatusCode::CONFLICT, ErrorName::ResourceConflict, msg)
            }
            DbError::Conflict { name, .. } => ApiError::new(StatusCode::CONFLICT, *name, msg),
            DbError::Forbidden(_) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorName::Forbidden, msg)
            }
            _ => ApiError::unknown(msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(receptor::Error {
                name: self.name.to_string(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Parse a JSON body ([`receptor::parse_request`]): empty or `null` gives the type's
/// default (which validation then refuses field by field, as the receptor did).
pub(crate) fn parse_body<T: DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    receptor::parse_request(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorName::InvalidJSON, e.message))
}

/// The error name of an answer axum made itself (a body too large, a bad query…).
fn rejection_name(status: StatusCode) -> ErrorName {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorName::RequestEntityTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorName::UnsupportedMediaType,
        StatusCode::METHOD_NOT_ALLOWED => ErrorName::MethodNotAllowed,
        s if s.is_server_error() => ErrorName::Unknown,
        _ => ErrorName::InvalidRequest,
    }
}

/// Error answers that are not the receptor's JSON (axum's own rejections: plain text
/// or empty) become `{"name", "message"}` like every other error.
pub(super) async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (status, text.is_empty()) {
        (StatusCode::PAYLOAD_TOO_LARGE, _) => format!(
            "request body too large: at most {MAX_BODY_BYTES} bytes for JSON calls, {MAX_LOG_POST_BYTES} for POST /v1/logs ({text})"
        ),
        (_, true) => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
        (_, false) => text,
    };
    let mut r = ApiError::new(status, rejection_name(status), message).into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            r.headers_mut().insert(k.clone(), v.clone());
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::validation::ValidationErrors;
    use lattice_specs::ModelError;

    fn mapped(e: DbError, invalid_name: ErrorName) -> (StatusCode, ErrorName) {
        let a = ApiError::from_db(e, invalid_name);
        (a.status, a.name)
    }

    #[test]
    fn db_errors_map_to_the_receptors_status_and_name() {
        let refused = |op| {
            DbError::Refused(ModelError::TaskTransition {
                op,
                task_guid: "t".into(),
                from: "RUNNING",
                detail: String::new(),
            })
        };
        let cases = [
            (
                DbError::Invalid(ValidationErrors(vec![])),
                (StatusCode::BAD_REQUEST, ErrorName::InvalidTask),
            ),
            (
                DbError::NotFound {
                    name: ErrorName::TaskNotFound,
                    message: "m".into(),
                },
                (StatusCode::NOT_FOUND, ErrorName::TaskNotFound),
            ),
            (
                DbError::AlreadyExists {
                    name: ErrorName::TaskGuidAlreadyExists,
                    message: "m".into(),
                },
                (StatusCode::CONFLICT, ErrorName::TaskGuidAlreadyExists),
            ),
            (
                refused("resolve"),
                (StatusCode::CONFLICT, ErrorName::TaskNotDeletable),
            ),
            (
                refused("cancel"),
                (StatusCode::CONFLICT, ErrorName::TaskNotCancelable),
            ),
            (
                DbError::Store(StoreError::Unavailable("down".into())),
                (StatusCode::SERVICE_UNAVAILABLE, ErrorName::StoreUnavailable),
            ),
            (
                DbError::Contended("k".into()),
                (StatusCode::CONFLICT, ErrorName::ResourceConflict),
            ),
            (
                DbError::Fenced {
                    lock: "l".into(),
                    revision: 1,
                },
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorName::Unknown),
            ),
            (
                DbError::Forbidden(lattice_specs::authz::Refusal {
                    caller: lattice_specs::authz::Caller::Anonymous,
                    call: lattice_specs::authz::Call::Cells,
                    concerning: None,
                    why: "w",
                }),
                (StatusCode::FORBIDDEN, ErrorName::Forbidden),
            ),
        ];
        let conflict = |name| DbError::Conflict {
            name,
            message: "m".into(),
        };
        let rollout = [
            (
                conflict(ErrorName::DeploymentInProgress),
                (StatusCode::CONFLICT, ErrorName::DeploymentInProgress),
            ),
            (
                conflict(ErrorName::DeploymentNotPaused),
                (StatusCode::CONFLICT, ErrorName::DeploymentNotPaused),
            ),
            (
                conflict(ErrorName::NothingToRollBack),
                (StatusCode::CONFLICT, ErrorName::NothingToRollBack),
            ),
            (
                DbError::NotFound {
                    name: ErrorName::GenerationNotFound,
                    message: "m".into(),
                },
                (StatusCode::NOT_FOUND, ErrorName::GenerationNotFound),
            ),
        ];
        for (e, want) in cases.into_iter().chain(rollout) {
            let shown = e.to_string();
            assert_eq!(mapped(e, ErrorName::InvalidTask), want, "{shown}");
        }
    }

    #[test]
    fn axums_own_rejections_get_receptor_names() {
        assert_eq!(
            rejection_name(StatusCode::PAYLOAD_TOO_LARGE),
            ErrorName::RequestEntityTooLarge
        );
        assert_eq!(
            rejection_name(StatusCode::METHOD_NOT_ALLOWED),
            ErrorName::MethodNotAllowed
        );
        assert_eq!(rejection_name(StatusCode::BAD_GATEWAY), ErrorName::Unknown);
        assert_eq!(
            rejection_name(StatusCode::BAD_REQUEST),
            ErrorName::InvalidRequest
        );
    }
}
