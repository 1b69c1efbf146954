//! HTTP Basic auth on `/v1/*`, when the API has credentials.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use lattice_specs::errors::ErrorName;

use super::{ApiError, ApiState};

pub(super) async fn basic_auth(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    if let Some(expected) = &s.basic_auth {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            });
        if given.as_deref() != Some(expected.as_bytes()) {
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, ErrorName::Unauthorized, "missing or wrong credentials: use HTTP Basic auth (ltc target URL with user and password)")
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"lattice\""),
            );
            return r;
        }
    }
    next.run(req).await
}
