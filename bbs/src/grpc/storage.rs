//! The volume and backup calls: the cells' volumes and their states, the brain's
//! placement of volumes, schedules (periodic Tasks and backups: the brain's claim of a
//! slot) and backups.

use super::*;
use crate::schedules::Claimed;
use lattice_specs::models::volume::State as VolumeState;

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
            .await?;
            // A standby copy its cell made gets the refresh recorded for it.
            if let Some(volume) = lattice_specs::volume::standby_of(&r.name) {
                if let (Some(api), VolumeState::Ready) = (&self.api, state) {
                    if let Err(e) = crate::standby::ensure_refresh(api, volume).await {
                        tracing::warn!(%volume, error = %e, "refreshing a standby copy");
                    }
                }
                return Ok(Empty {});
            }
            // A failed-over volume its new cell made is refilled from its backup now.
            if let (Some(api), VolumeState::Ready) = (&self.api, state) {
                if let Err(e) = crate::failover::refill(api, &r.name).await {
                    tracing::warn!(volume = %r.name, error = %e, "refilling a failed-over volume");
                }
            }
            Ok(Empty {})
        })
        .await
    }

    pub(super) async fn fail_over_volume_rpc(
        &self,
        r: Request<FailOverVolumeRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("FailOverVolume", async {
            may(&r, Call::FailOverVolume)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            let keeps_backups = self.api.as_ref().is_some_and(|a| a.blobs.is_some());
            let m = crate::db::Move {
                name: &r.name,
                from: &r.from_cell,
                to: &r.to_cell,
                epoch: r.epoch,
                lost_at: r.lost_at,
            };
            crate::failover::fail_over(&db, keeps_backups, &m, &r.backup_id)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    pub(super) async fn tend_standby_rpc(
        &self,
        r: Request<TendStandbyRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("TendStandby", async {
            may(&r, Call::TendStandby)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            crate::standby::tend(self.api.as_ref(), &db, &r)
                .await
                .map(|_| Empty {})
        })
        .await
    }

    pub(super) async fn volume_fenced_rpc(
        &self,
        r: Request<VolumeFencedRequest>,
    ) -> Result<Response<Empty>, Status> {
        call("VolumeFenced", async {
            let db = self.db_for(&r)?;
            let who = caller_of(&r);
            let r = r.into_inner();
            allow(&who, Call::VolumeFenced, Some(&r.cell_id))?;
            db.volume_fenced(&r.name, &r.cell_id, &r.copy)
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

    pub(super) async fn schedules_rpc(
        &self,
        r: Request<Empty>,
    ) -> Result<Response<SchedulesResponse>, Status> {
        call("Schedules", async {
            may(&r, Call::Schedules)?;
            Ok(SchedulesResponse {
                schedules: self.db.schedules().await?,
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

    pub(super) async fn claim_schedule_slot_rpc(
        &self,
        r: Request<ClaimScheduleSlotRequest>,
    ) -> Result<Response<ClaimScheduleSlotResponse>, Status> {
        call("ClaimScheduleSlot", async {
            may(&r, Call::ClaimScheduleSlot)?;
            let db = self.db_for(&r)?;
            let r = r.into_inner();
            let api = self.api.as_ref();
            let claimed = match r.verify {
                true => crate::backup_verify::claim(&db, api, &r.name, r.slot_at).await?,
                false => {
                    crate::schedules::claim(&db, api, &r.name, r.slot_at, &r.slot, &r.skip_reason)
                        .await?
                }
            };
            Ok(match claimed {
                Claimed::Taken => ClaimScheduleSlotResponse::default(),
                Claimed::Skipped => ClaimScheduleSlotResponse {
                    claimed: true,
                    ..Default::default()
                },
                Claimed::Run(run) => ClaimScheduleSlotResponse {
                    claimed: true,
                    run,
                    ..Default::default()
                },
                Claimed::Failed(failure) => ClaimScheduleSlotResponse {
                    claimed: true,
                    failure,
                    ..Default::default()
                },
            })
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
