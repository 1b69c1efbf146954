//! The volume and backup calls: the cells' volumes and their states, the brain's
//! placement of volumes, backup schedules and backups.

use super::*;

impl BbsGrpc {
    pub(super) async fn volumes_rpc(
        &self,
        r: Request<VolumesRequest>,
    ) -> Result<Response<VolumesResponse>, Status> {
        call("Volumes", async {
            may(&r, Call::Volumes)?;
            let cell = r.into_inner().cell_id;
            let volumes = self.db.volumes().await?;
            Ok(VolumesResponse {
                volumes: volumes
                    .into_iter()
                    .filter(|v| cell.is_empty() || v.cell_id == cell)
                    .collect(),
            })
        })
        .await
    }

    pub(super) async fn set_volume_state_rpc(
        &self,
        r: Request<VolumeStateRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("SetVolumeState", async {
            let db = self.db_for(&r)?;
            let who = caller_of(&r);
            let r = r.into_inner();
            allow(&who, Call::SetVolumeState, Some(&r.cell_id))?;
            let state = r.state();
            db.set_volume_state(
                &r.name,
                &r.cell_id,
                state,
                (r.size_bytes, r.used_bytes),
                &r.reason,
            )
            .await
            .map(|_| Empty {})
        })
        .await
    }

    pub(super) async fn volume_removed_rpc(
        &self,
        r: Request<VolumeRemovedRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("VolumeRemoved", async {
            let db = self.db_for(&r)?;
            let who = caller_of(&r);
            let r = r.into_inner();
            allow(&who, Call::VolumeRemoved, Some(&r.cell_id))?;
            db.volume_removed(&r.name, &r.cell_id)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    pub(super) async fn place_volume_rpc(
        &self,
        r: Request<PlaceVolumeRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("PlaceVolume", async {
            may(&r, Call::PlaceVolume)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            db.place_volume(&r.name, &r.cell_id).await.map(|_| Empty {})
        })
        .await
    }

    pub(super) async fn backup_schedules_rpc(
        &self,
        r: Request<Empty>,
    ) -> Result<Response<BackupSchedulesResponse>, Status> {
        call("BackupSchedules", async {
            may(&r, Call::BackupSchedules)?;
            Ok(BackupSchedulesResponse {
                schedules: self.db.backup_schedules().await?,
            })
        })
        .await
    }

    pub(super) async fn backups_rpc(
        &self,
        r: Request<Empty>,
    ) -> Result<Response<BackupsResponse>, Status> {
        call("Backups", async {
            may(&r, Call::Backups)?;
            Ok(BackupsResponse {
                backups: self.db.backups().await?,
            })
        })
        .await
    }

    pub(super) async fn start_backup_rpc(
        &self,
        r: Request<StartBackupRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("StartBackup", async {
            may(&r, Call::StartBackup)?;
            let db = self.db_for(&r)?;
            let api = self.api()?;
            api.blobs.as_ref().ok_or_else(|| DbError::Conflict {
                name: ErrorName::BlobStoreUnavailable,
                message: "this BBS keeps no blobs: start it with --blob-dir DIR".into(),
            })?;
            let r = r.into_inner();
            crate::backups::start_backup(&db, &|n| api.blob_url(n), &r.volume, Some(r.id), &r.slot)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    pub(super) async fn delete_backup_rpc(
        &self,
        r: Request<BackupIdRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("DeleteBackup", async {
            may(&r, Call::DeleteBackup)?;
            let db = self.db_for(&r)?;
            crate::backups::delete(self.api()?, &db, &r.into_inner().id)
                .await
                .map(|_| Empty {})
        })
        .await
    }
}
