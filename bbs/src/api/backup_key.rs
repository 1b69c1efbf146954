//! `GET /v1/backup_key` (admins only): the cluster's backup key, every repository's
//! password, with where restic finds the repositories, for disaster recovery. Every
//! read leaves an audit line.

use axum::extract::State;
use axum::http::Method;
use axum::{Extension, Json};
use lattice_specs::repo::BackupKeyResponse;

use super::{audit, ApiResult, ApiState, Caller};

/// How the answer names the volume whose repository restic opens.
const VOLUME: &str = "VOLUME";

pub(super) async fn get_backup_key(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<BackupKeyResponse>> {
    let key = s.backup_key.as_ref().ok_or_else(crate::repos::no_key)?;
    audit::record(&s.logs, &caller, &Method::GET, "/v1/backup_key");
    tracing::warn!(caller = %caller.name, "the cluster's backup key was read");
    Ok(Json(BackupKeyResponse {
        key: key.password().to_string(),
        stores: s.stores.locations(VOLUME),
        rest: format!(
            "rest:{}{}",
            s.public_url.trim_end_matches('/'),
            lattice_specs::repo::rest_path(VOLUME)
        ),
    }))
}
