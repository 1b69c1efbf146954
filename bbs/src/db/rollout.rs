//! The instances of a rolling update: replacing an instance (its REPLACED copy
//! keeps serving while the ordinary record starts over for the target
//! generation), draining, removing and restoring REPLACED copies, and a cell's
//! remove or crash of an instance that now serves from its copy. The decisions
//! are `lattice_specs::rollout::records`'; each write is a compare-and-swap on
//! every record it read.

use lattice_specs::models::actual_lrp::State;
use lattice_specs::models::{ActualLrp, ActualLrpInstanceKey, DesiredLrp};
use lattice_specs::now_nanos;
use lattice_specs::rollout::records;
use prost::Message;

use super::txn::{decode, Attempts, Write};
use super::{actual_key, desired_key, replaced_key, Db, DbError, Result};
use crate::store::{Compare, KeyValue, Op, Txn};

/// One read of a key: its value, and the revision to compare on (0: absent).
struct Read<T> {
    value: Option<T>,
    revision: i64,
}

impl Db {
    async fn read<T: Message + Default>(&self, key: &str) -> Result<Read<T>> {
        let kv: Option<KeyValue> = self.store.get(key).await?;
        Ok(match kv {
            Some(kv) => Read {
                value: Some(decode(&kv)?),
                revision: kv.mod_revision,
            },
            None => Read {
                value: None,
                revision: 0,
            },
        })
    }

    /// The app and its ordinary record at `index` (which it must still desire).
    async fn app_and_instance(
        &self,
        guid: &str,
        index: i32,
    ) -> Result<(Read<DesiredLrp>, Read<ActualLrp>, DesiredLrp)> {
        let app = self.read::<DesiredLrp>(&desired_key(guid)).await?;
        let d = app
            .value
            .clone()
            .ok_or_else(|| DbError::desired_not_found(guid))?;
        if index < 0 || index >= d.instances {
            return Err(DbError::actual_not_found(guid, index));
        }
        let ordinary = self.read::<ActualLrp>(&actual_key(guid, index)).await?;
        Ok((app, ordinary, d))
    }

    /// Start replacing instance `index` of `guid` for `target_generation` (the
    /// generation the brain saw): with `surge` its RUNNING record is kept as a
    /// REPLACED copy (the instance keeps serving); either way the ordinary
    /// record becomes a fresh UNCLAIMED one. Returns the new ordinary record.
    pub async fn replace_actual_lrp(
        &self,
        guid: &str,
        index: i32,
        surge: bool,
        target_generation: i64,
    ) -> Result<ActualLrp> {
        let (akey, rkey) = (actual_key(guid, index), replaced_key(guid, index));
        let mut attempts = Attempts::on(&akey);
        loop {
            attempts.next()?;
            let (app, ordinary, d) = self.app_and_instance(guid, index).await?;
            let current = ordinary
                .value
                .ok_or_else(|| DbError::actual_not_found(guid, index))?;
            let copy = self.read::<ActualLrp>(&rkey).await?;
            let r = records::replace(
                &current,
                d.generation,
                target_generation,
                surge,
                copy.value.is_some(),
                now_nanos(),
            )?;
            let mut txn = Txn::new()
                .when(Compare::ModRevision(desired_key(guid), app.revision))
                .when(Compare::ModRevision(akey.clone(), ordinary.revision))
                .when(Compare::ModRevision(rkey.clone(), copy.revision));
            if let Some(c) = &r.copy {
                txn = txn.then(Op::put(&rkey, c.encode_to_vec()));
            }
            txn = txn.then(Op::put(&akey, r.ordinary.encode_to_vec()));
            if self.txn(txn).await?.succeeded {
                let change = if surge { "surge" } else { "replace" };
                crate::metrics::ROLLOUTS.with_label_values(&[change]).inc();
                tracing::info!(process_guid = %guid, index, surge, generation = target_generation, "instance replaced");
                return Ok(r.ordinary);
            }
        }
    }

    /// Mark the REPLACED copy at `index` draining: routers and DNS drop it.
    pub async fn drain_replaced_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        let now = now_nanos();
        let drained = self
            .modify(&replaced_key(guid, index), |cur: Option<ActualLrp>| {
                let mut c = cur.ok_or_else(|| DbError::replaced_not_found(guid, index))?;
                Ok(match records::drain(&mut c, now) {
                    true => (Write::Put(c), true),
                    false => (Write::Nothing, false),
                })
            })
            .await?;
        if drained {
            crate::metrics::ROLLOUTS.with_label_values(&["drain"]).inc();
        }
        Ok(())
    }

    /// Remove the REPLACED copy at `index`: its cell stops the instance.
    pub async fn remove_replaced_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        self.modify(
            &replaced_key(guid, index),
            |cur: Option<ActualLrp>| match cur {
                None => Err(DbError::replaced_not_found(guid, index)),
                Some(_) => Ok((Write::Delete, ())),
            },
        )
        .await?;
        crate::metrics::ROLLOUTS
            .with_label_values(&["remove_replaced"])
            .inc();
        Ok(())
    }

    /// A rollback puts the REPLACED copy at `index` back as the ordinary record
    /// (the old instance serves again; the new one's cell stops it). Refused
    /// unless the copy runs the app's generation.
    pub async fn restore_replaced_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        let (akey, rkey) = (actual_key(guid, index), replaced_key(guid, index));
        let mut attempts = Attempts::on(&rkey);
        loop {
            attempts.next()?;
            let (app, ordinary, d) = self.app_and_instance(guid, index).await?;
            let copy = self.read::<ActualLrp>(&rkey).await?;
            let c = copy
                .value
                .ok_or_else(|| DbError::replaced_not_found(guid, index))?;
            let restored = records::restore(&c, d.generation)?;
            let txn = Txn::new()
                .when(Compare::ModRevision(desired_key(guid), app.revision))
                .when(Compare::ModRevision(akey.clone(), ordinary.revision))
                .when(Compare::ModRevision(rkey.clone(), copy.revision))
                .then(Op::put(&akey, restored.encode_to_vec()))
                .then(Op::delete(&rkey));
            if self.txn(txn).await?.succeeded {
                crate::metrics::ROLLOUTS
                    .with_label_values(&["restore"])
                    .inc();
                tracing::info!(process_guid = %guid, index, generation = d.generation, "replaced instance restored");
                return Ok(());
            }
        }
    }

    /// Instance `ik` serves from the REPLACED copy at `index`: its cell's
    /// remove or crash of it removes the copy. Returns the copy removed, if it was `ik`'s.
    pub(super) async fn remove_copy_if_owned(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<Option<ActualLrp>> {
        self.modify(&replaced_key(guid, index), |cur: Option<ActualLrp>| {
            Ok(match cur {
                Some(c) if records::owns_copy(Some(&c), ik) => (Write::Delete, Some(c)),
                _ => (Write::Nothing, None),
            })
        })
        .await
    }

    /// The REPLACED copy at `index` if it is instance `ik`'s.
    pub(super) async fn owned_copy(
        &self,
        guid: &str,
        index: i32,
        ik: &ActualLrpInstanceKey,
    ) -> Result<Option<ActualLrp>> {
        let copy = self.read::<ActualLrp>(&replaced_key(guid, index)).await?;
        Ok(copy.value.filter(|c| records::owns_copy(Some(c), ik)))
    }
}

/// A removed copy as its crash reports it.
pub(super) fn crashed_copy(mut c: ActualLrp, reason: &str, now: i64) -> ActualLrp {
    c.set_state(State::Crashed);
    c.crash_reason = reason.to_string();
    c.since = now;
    c
}
