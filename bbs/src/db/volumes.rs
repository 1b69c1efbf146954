//! Volumes: the records cells make volumes from, their users, growth and
//! removal, and the check that every volume a container mounts is usable.

use lattice_specs::errors::ErrorName;
use lattice_specs::models::volume::State as VolumeState;
use lattice_specs::models::{CellPresence, Volume, VolumeMount};
use lattice_specs::now_nanos;
use lattice_specs::validation::{self, ValidationErrors};
use prost::Message;

use super::txn::Write;
use super::{Db, DbError, Result, SCHEDULE, VOLUME};
use crate::store::{Op, Txn};

impl Db {
    /// Every volume a container would mount exists and is usable.
    pub(super) async fn check_mounts(&self, mounts: &[VolumeMount]) -> Result<()> {
        self.check_mounts_of(mounts, false).await
    }

    /// [`Db::check_mounts`]; with `copies`, standby copies (`NAME.standby`) of
    /// existing volumes may be mounted too (the backup domain's refresh tasks).
    pub(super) async fn check_mounts_of(&self, mounts: &[VolumeMount], copies: bool) -> Result<()> {
        // (scratch volumes have no record: the cell makes them)
        for m in mounts.iter().filter(|m| m.scratch_bytes == 0) {
            if let Some(volume) = lattice_specs::volume::standby_of(&m.volume) {
                if !copies {
                    return Err(DbError::Conflict {
                        name: ErrorName::InvalidRequest,
                        message: format!(
                            "{} is the standby copy of volume {volume}: only the cluster's own tasks mount it; mount {volume}",
                            m.volume
                        ),
                    });
                }
                self.volume(volume).await?;
                continue;
            }
            let v = self.volume(&m.volume).await.map_err(|e| match e {
                DbError::NotFound { .. } => DbError::Conflict {
                    name: ErrorName::VolumeNotFound,
                    message: format!(
                        "volume {} does not exist: create it with `ltc volume create {} --size 1G`",
                        m.volume, m.volume
                    ),
                },
                e => e,
            })?;
            if v.state() == VolumeState::Removing || v.state() == VolumeState::Failed {
                return Err(DbError::Conflict {
                    name: ErrorName::VolumeNotUsable,
                    message: format!(
                        "volume {} is {}{}",
                        m.volume,
                        lattice_specs::volume::state_name(v.state()),
                        if v.reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", v.reason)
                        }
                    ),
                });
            }
        }
        Ok(())
    }

    /// Records a new volume for its cell to make: on `cell_id`, or (empty) with no
    /// cell yet, for the brain to place (`place_volume`). Either way a cell that can
    /// make it must be present: the requested one, or any with the `local` driver.
    pub async fn create_volume(
        &self,
        name: &str,
        size_bytes: u64,
        cell_id: &str,
    ) -> Result<Volume> {
        self.create_volume_as(Volume {
            name: name.into(),
            size_bytes,
            cell_id: cell_id.into(),
            ..Default::default()
        })
        .await
    }

    /// [`Db::create_volume`] of `spec`'s name, size and cell, with its other settings
    /// (its backup store, failover mode and grace); its state and times are the BBS's.
    pub async fn create_volume_as(&self, spec: Volume) -> Result<Volume> {
        let (name, size_bytes, cell_id) =
            (spec.name.as_str(), spec.size_bytes, spec.cell_id.as_str());
        let invalid = |field: &str, message: String| {
            DbError::Invalid(ValidationErrors(vec![validation::FieldError {
                field: field.into(),
                message,
            }]))
        };
        lattice_specs::volume::check_name("volume", name).map_err(|e| invalid("name", e))?;
        if size_bytes < lattice_specs::volume::MIN_SIZE {
            return Err(invalid(
                "size_bytes",
                format!(
                    "{size_bytes} bytes is too small: volumes are at least {}",
                    lattice_specs::volume::format_size(lattice_specs::volume::MIN_SIZE)
                ),
            ));
        }
        check_volume_cell(&self.cells().await?, cell_id)?;
        let cell = cell_id.to_string();
        let now = now_nanos();
        if spec.failover_grace_ns < 0 {
            return Err(invalid(
                "failover_grace_ns",
                "a grace period cannot be negative".into(),
            ));
        }
        let v = Volume {
            name: name.into(),
            cell_id: cell,
            size_bytes,
            used_bytes: 0,
            state: VolumeState::Pending as i32,
            reason: String::new(),
            created_at: now,
            updated_at: now,
            actual_size_bytes: 0,
            failover: spec.failover,
            failover_grace_ns: spec.failover_grace_ns,
            backup_store: spec.backup_store.clone(),
            ..Default::default()
        };
        if self
            .create(&format!("{VOLUME}{name}"), v.encode_to_vec(), 0)
            .await?
            .is_none()
        {
            return Err(DbError::AlreadyExists {
                name: ErrorName::VolumeAlreadyExists,
                message: format!("volume {name} already exists: `ltc volume list` shows it"),
            });
        }
        Ok(v)
    }

    /// Puts volume `name`, recorded without a cell, on `cell_id` (the brain's choice).
    /// Only once, and only while it waits: a volume that has its cell already, or
    /// is no longer PENDING, is refused with `VolumeAlreadyPlaced`.
    pub async fn place_volume(&self, name: &str, cell_id: &str) -> Result<Volume> {
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let mut v = cur.ok_or_else(|| DbError::volume_not_found(name))?;
            if !v.cell_id.is_empty() || v.state() != VolumeState::Pending {
                return Err(DbError::Conflict {
                    name: ErrorName::VolumeAlreadyPlaced,
                    message: format!(
                        "volume {name} is {} on cell {:?}: only a PENDING volume without a cell is placed",
                        lattice_specs::volume::state_name(v.state()),
                        v.cell_id
                    ),
                });
            }
            v.cell_id = cell_id.to_string();
            v.updated_at = now_nanos();
            Ok((Write::Put(v.clone()), v))
        })
        .await
    }

    pub async fn volumes(&self) -> Result<Vec<Volume>> {
        self.list(VOLUME).await
    }

    pub async fn volume(&self, name: &str) -> Result<Volume> {
        self.get(&format!("{VOLUME}{name}"))
            .await?
            .map(|(v, _)| v)
            .ok_or_else(|| DbError::volume_not_found(name))
    }

    /// Who mounts volume `name`: desired LRPs (process guids) and tasks not yet
    /// completed (task guids).
    pub async fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        let mounts = |m: &[VolumeMount]| m.iter().any(|m| m.volume == name);
        let mut users: Vec<String> = self
            .desired_lrps("")
            .await?
            .into_iter()
            .filter(|d| mounts(&d.volume_mounts))
            .map(|d| d.process_guid)
            .collect();
        users.extend(
            self.tasks("", "")
                .await?
                .into_iter()
                .filter(|t| {
                    t.state < lattice_specs::models::task::State::Completed as i32
                        && t.definition
                            .as_ref()
                            .is_some_and(|d| mounts(&d.volume_mounts))
                })
                .map(|t| t.task_guid),
        );
        Ok(users)
    }

    /// Asks the volume's cell to remove it; refused while anything mounts it. A volume
    /// its cell never made goes at once.
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        let users = self.volume_users(name).await?;
        if !users.is_empty() {
            return Err(DbError::Conflict {
                name: ErrorName::VolumeInUse,
                message: format!(
                    "volume {name} is mounted by {}: remove those apps or tasks first",
                    users.join(", ")
                ),
            });
        }
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let mut v = cur.ok_or_else(|| DbError::volume_not_found(name))?;
            Ok(match v.state() {
                // No cell was given it: no cell made anything of it.
                _ if v.cell_id.is_empty() => (Write::Delete, ()),
                // (a FAILED volume too: its cell removes whatever it made of it)
                VolumeState::Removing => (Write::Nothing, ()),
                _ => {
                    v.state = VolumeState::Removing as i32;
                    v.updated_at = now_nanos();
                    (Write::Put(v), ())
                }
            })
        })
        .await?;
        // Its schedule goes with it.
        self.txn(Txn::new().then(Op::delete(format!("{SCHEDULE}{name}"))))
            .await?;
        Ok(())
    }

    /// Grows a READY volume to `size_bytes` (its cell grows it online).
    pub async fn grow_volume(&self, name: &str, size_bytes: u64) -> Result<Volume> {
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let mut v = cur.ok_or_else(|| DbError::volume_not_found(name))?;
            if v.state() != VolumeState::Ready {
                return Err(DbError::Conflict {
                    name: ErrorName::VolumeNotReady,
                    message: format!(
                        "volume {name} is {}: only a READY volume can grow",
                        lattice_specs::volume::state_name(v.state())
                    ),
                });
            }
            if size_bytes <= v.size_bytes {
                return Err(DbError::Invalid(ValidationErrors(vec![
                    validation::FieldError {
                        field: "size_bytes".into(),
                        message: format!(
                            "volume {name} is {}: a volume can only grow",
                            lattice_specs::volume::format_size(v.size_bytes)
                        ),
                    },
                ])));
            }
            v.size_bytes = size_bytes;
            v.reason = String::new();
            v.updated_at = now_nanos();
            Ok((Write::Put(v.clone()), v))
        })
        .await
    }

    /// A cell reports its volume READY (with its size and use) or FAILED. Reports from
    /// another cell, or about a volume being removed, change nothing.
    pub async fn set_volume_state(
        &self,
        name: &str,
        cell_id: &str,
        state: VolumeState,
        (size_bytes, used_bytes): (u64, u64),
        reason: &str,
    ) -> Result<()> {
        // A standby copy's state is its volume's standby_ready.
        if let Some(volume) = lattice_specs::volume::standby_of(name) {
            let made = match state {
                VolumeState::Ready => Ok(()),
                _ => Err(reason),
            };
            return self.standby_made(volume, cell_id, made).await;
        }
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            let mut v = cur.ok_or_else(|| DbError::volume_not_found(name))?;
            if v.cell_id != cell_id || v.state() == VolumeState::Removing {
                return Ok((Write::Nothing, ()));
            }
            let before = v.clone();
            v.state = state as i32;
            v.used_bytes = used_bytes;
            v.actual_size_bytes = size_bytes;
            v.reason = reason.to_string();
            if v == before {
                return Ok((Write::Nothing, ()));
            }
            v.updated_at = now_nanos();
            Ok((Write::Put(v), ()))
        })
        .await
    }

    /// A cell removed a REMOVING volume: its record goes.
    pub async fn volume_removed(&self, name: &str, cell_id: &str) -> Result<()> {
        self.modify(&format!("{VOLUME}{name}"), |cur: Option<Volume>| {
            Ok(match cur {
                Some(v) if v.cell_id == cell_id && v.state() == VolumeState::Removing => {
                    (Write::Delete, ())
                }
                _ => (Write::Nothing, ()),
            })
        })
        .await
    }
}

/// Whether a new volume can be made: on `requested` if it is present with the
/// `local` volume driver, or (none requested) on some cell with that driver. Which
/// one is the brain's choice (`lattice_brain::auction::volumes`).
fn check_volume_cell(cells: &[CellPresence], requested: &str) -> Result<()> {
    let mut local = cells
        .iter()
        .filter(|c| c.volume_drivers.iter().any(|d| d == "local"));
    if !requested.is_empty() {
        if !local.any(|c| c.cell_id == requested) {
            return Err(DbError::Conflict {
                name: ErrorName::CellNotFound,
                message: format!(
                    "cell {requested} is not present or has no local volume driver: `ltc cells` lists the cells and their drivers"
                ),
            });
        }
        return Ok(());
    }
    if local.next().is_none() {
        return Err(DbError::Conflict {
            name: ErrorName::NoVolumeDriver,
            message: "no cell offers the local volume driver: start a cell with a volume pool (`lattice cell --volume-pool-size 20G`)".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use lattice_specs::testing::cell_presence as cell;

    #[test]
    fn a_requested_cell_must_offer_the_local_driver() {
        let cells = [cell("a", &["local"]), cell("c", &[])];
        assert_eq!(check_volume_cell(&cells, "a"), Ok(()));
        assert_eq!(check_volume_cell(&cells, ""), Ok(()));
        for requested in ["c", "gone"] {
            let err = check_volume_cell(&cells, requested).unwrap_err();
            assert_eq!(err.name(), ErrorName::CellNotFound, "{requested}");
            assert!(err
                .to_string()
                .contains(&format!("cell {requested} is not present")));
        }
    }

    #[test]
    fn without_a_local_driver_anywhere_there_is_no_cell() {
        let err = check_volume_cell(&[cell("c", &["nfs"])], "").unwrap_err();
        assert_eq!(err.name(), ErrorName::NoVolumeDriver);
    }
}
