//! Where a backup task reaches its volume's repository: `ApiState::repo_url`, the
//! `rest:` URL of the repository (`lattice_specs::repo::rest_path`) at this API, with a
//! fresh credential of the task (`backup_tasks::credential_url`), whose scope the
//! repository server reads from the task's own `RepositoryAction` (its op).
//!
//! Written against the signature helper B's repository server gives `ApiState` (which
//! also picks the volume's backup store); until that lands, the default store is the
//! blob store's, so a BBS without one has none.

use lattice_specs::repo::{rest_path, RepoOp};

use crate::api::{ApiError, ApiState};

impl ApiState {
    /// `rest:SCHEME://lattice-task:SECRET.TASK_GUID@HOST/v1/repos/VOLUME/` for task
    /// `task_guid` doing `op` on `volume`'s repository.
    pub fn repo_url(&self, volume: &str, task_guid: &str, op: RepoOp) -> Result<String, ApiError> {
        crate::api::blob_store(self)?;
        let base = self.public_url.trim_end_matches('/');
        let url = format!("{base}{}", rest_path(&lattice_specs::path_segment(volume)));
        tracing::debug!(
            volume,
            task = task_guid,
            op = op.as_str(),
            "repository URL made"
        );
        Ok(format!(
            "rest:{}",
            crate::backup_tasks::credential_url(&url, task_guid)
        ))
    }
}
