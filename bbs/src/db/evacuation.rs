//! The copies an instance leaves behind: SUSPECT (its cell vanished, it may
//! still run) and EVACUATING (its cell is draining, it serves until its
//! replacement runs). The decisions are `lattice_specs::evacuation`'s; this
//! applies them with compare-and-swap. An instance serving from a rolling
//! update's REPLACED copy keeps serving from it until the deployer removes it.

use lattice_specs::evacuation as evac;
use lattice_specs::models::{ActualLrp, ActualLrpInstanceKey, ActualLrpNetInfo};
use lattice_specs::now_nanos;
use prost::Message;

use super::txn::{decode, Attempts, Write};
use super::{actual_key, evacuating_key, suspect_key, Db, DbError, KeepContainer, Result};
use crate::store::{Compare, Op, Txn};

impl Db {
    /// The instance's cell vanished, but the instance may still be running
    /// (a partition): keep it, as SUSPECT under its own key, and put a fresh
    /// UNCLAIMED record in its place so a replacement is placed. The suspect
    /// copy is removed once the replacement runs. Returns the new record.
    pub async fn suspect_actual_lrp(&self, guid: &str, index: i32) -> Result<ActualLrp> {
        let (key, skey) = (actual_key(guid, index), suspect_key(guid, index));
        let now = now_nanos();
        let mut attempts = Attempts::on(&key);
        loop {
            attempts.next()?;
            let kv = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| DbError::actual_not_found(guid, index))?;
            let current: ActualLrp = decode(&kv)?;
            let s = evac::suspect(&current, now)?;
            let previous = self
                .store
                .get(&skey)
                .await?
                .map(|kv| kv.mod_revision)
                .unwrap_or(0);
            let txn = Txn::new()
                .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                .when(Compare::ModRevision(skey.clone(), previous))
                .then(Op::put(&skey, s.suspect.encode_to_vec()))
                .then(Op::put(&key, s.replacement.encode_to_vec()));
            if self.txn(txn).await?.succeeded {
                return Ok(s.replacement);
            }
        }
    }

    /// Drop the suspect copy of an instance (its replacement runs, or it is no longer desired).
    pub async fn remove_suspect_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        self.modify(
            &suspect_key(guid, index),
            |cur: Option<ActualLrp>| match cur {
                None => Err(DbError::actual_not_found(guid, index)),
                Some(_) => Ok((Write::Delete, ())),
            },
        )
        .await
    }

    // --------------------------------------------------------- evacuation

    async fn remove_evacuating_if_owned(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<()> {
        self.modify(&evacuating_key(guid, index), |cur: Option<ActualLrp>| {
            let write = if evac::removes_evacuating(cur.as_ref(), ik) {
                Write::Delete
            } else {
                Write::Nothing
            };
            Ok((write, ()))
        })
        .await
    }

    pub async fn evacuate_claimed(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<KeepContainer> {
        self.remove_evacuating_if_owned(guid, index, ik).await?;
        let now = now_nanos();
        match self
            .modify_actual(guid, index, |l| Ok(evac::give_up_claim(l, ik, now)?))
            .await
        {
            Ok(_) | Err(DbError::NotFound { .. }) => Ok(KeepContainer(false)),
            Err(e) => Err(e),
        }
    }

    /// A RUNNING instance on an evacuating cell: keep serving (an EVACUATING
    /// copy of the record) while its ordinary record is re-placed; stop once
    /// the replacement runs.
    pub async fn evacuate_running(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
        net: ActualLrpNetInfo,
    ) -> Result<KeepContainer> {
        if self.owned_copy(guid, index, ik).await?.is_some() {
            // A rolling update's old instance: it serves from its REPLACED copy
            // until the deployer drains and removes that.
            return Ok(KeepContainer(true));
        }
        let now = now_nanos();
        let ordinary: Option<(ActualLrp, i64)> = self.get(&actual_key(guid, index)).await?;
        let Some(keep) = evac::evacuate_running(ordinary.as_ref().map(|(o, _)| o), ik, net, now)
        else {
            // The replacement is up, or the instance is gone: this copy can go.
            self.remove_evacuating_if_owned(guid, index, ik).await?;
            return Ok(KeepContainer(false));
        };
        self.modify(&evacuating_key(guid, index), |cur: Option<ActualLrp>| {
            let write = if evac::record_evacuating(cur.as_ref(), &keep.copy, ik)? {
                Write::Put(keep.copy.clone())
            } else {
                Write::Nothing
            };
            Ok((write, ()))
        })
        .await?;
        if keep.unclaim_ordinary {
            self.modify_actual(guid, index, |l| Ok(evac::hand_back(l, ik, now)?))
                .await?;
        }
        Ok(KeepContainer(true))
    }

    pub async fn evacuate_stopped(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<KeepContainer> {
        self.remove_evacuating_if_owned(guid, index, ik).await?;
        match self.remove_actual_lrp(guid, index, Some(ik)).await {
            Ok(()) | Err(DbError::NotFound { .. }) | Err(DbError::Refused(_)) => {
                Ok(KeepContainer(false))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn evacuate_crashed(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
        reason: &str,
    ) -> Result<KeepContainer> {
        self.remove_evacuating_if_owned(guid, index, ik).await?;
        match self.crash_actual_lrp(guid, index, ik, reason).await {
            Ok(_) | Err(DbError::NotFound { .. }) | Err(DbError::Refused(_)) => {
                Ok(KeepContainer(false))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn remove_evacuating(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<()> {
        self.remove_evacuating_if_owned(guid, index, ik).await
    }
}
