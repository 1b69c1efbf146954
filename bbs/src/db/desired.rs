//! Desired LRPs: desire (generation 1, the first entry of its history), update
//! (scaling creates or retires instance records), remove (with its copies and
//! history), and the UNCLAIMED records a desired index gets.

use std::collections::HashSet;

use lattice_specs::actual_lrp as alrp;
use lattice_specs::errors::ErrorName;
use lattice_specs::models::{DesiredLrp, DesiredLrpUpdate, ModificationTag};
use lattice_specs::rollout::records;
use lattice_specs::{now_nanos, validation};
use prost::Message;

use super::txn::Write;
use super::{
    actual_key, desired_key, generation_key, Db, DbError, Result, ACTUAL, DESIRED, EVACUATING,
    REPLACED, SUSPECT,
};
use crate::store::{Compare, Op, Txn, MAX_TXN_OPS};

impl Db {
    pub async fn desire_lrp(&self, mut d: DesiredLrp) -> Result<()> {
        validation::validate_desired_lrp(&d)?;
        self.check_mounts(&d.volume_mounts).await?;
        self.check_tcp_routes(&d.process_guid, &d.routes).await?;
        d.modification_tag = Some(ModificationTag {
            epoch: uuid::Uuid::new_v4().to_string(),
            index: 0,
        });
        d.generation = 1;
        d.deployment = None;
        let key = desired_key(&d.process_guid);
        let first = records::history_entry(&d, "", now_nanos());
        // A history left behind by an app of the same name goes (a transaction
        // names each key once: entry 1 is overwritten).
        let first_key = generation_key(&d.process_guid, 1);
        let mut txn = Txn::new()
            .when(Compare::absent(&key))
            .then(Op::put(&key, d.encode_to_vec()))
            .then(Op::put(&first_key, first.encode_to_vec()));
        for old in self.history_keys(&d.process_guid).await? {
            if old != first_key {
                txn = txn.then(Op::delete(old));
            }
        }
        if !self.txn(txn).await?.succeeded {
            return Err(DbError::AlreadyExists {
                name: ErrorName::DesiredLRPAlreadyExists,
                message: format!("desired LRP {} already exists", d.process_guid),
            });
        }
        self.create_missing_actuals(&d.process_guid, &d.domain, 0, d.instances)
            .await
    }

    /// Create UNCLAIMED records for indices in `from..to` that have none.
    /// Best effort per chunk: the converger creates whatever is still missing.
    pub(super) async fn create_missing_actuals(
        &self,
        guid: &str,
        domain: &str,
        from: i32,
        to: i32,
    ) -> Result<()> {
        // A count stored before validation bounded it must not become a loop (or an
        // allocation) of a billion.
        let to = to.min(validation::MAX_INSTANCES);
        if from >= to {
            return Ok(());
        }
        let existing: HashSet<String> = self
            .store
            .list(&format!("{ACTUAL}{guid}/"))
            .await?
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        let now = now_nanos();
        let mut missing = (from..to).filter(|i| !existing.contains(&actual_key(guid, *i)));
        loop {
            let chunk: Vec<i32> = missing.by_ref().take(MAX_TXN_OPS / 2).collect();
            if chunk.is_empty() {
                break;
            }
            let mut txn = Txn::new();
            for i in &chunk {
                let key = actual_key(guid, *i);
                txn = txn.when(Compare::absent(&key)).then(Op::put(
                    &key,
                    alrp::new_unclaimed(guid, *i, domain, now).encode_to_vec(),
                ));
            }
            if !self.txn(txn).await?.succeeded {
                // Someone created some of them meanwhile: fall back to one by one.
                for i in chunk {
                    let lrp = alrp::new_unclaimed(guid, i, domain, now);
                    self.create(&actual_key(guid, i), lrp.encode_to_vec(), 0)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Create the UNCLAIMED record of one desired index if it is missing (the converger's repair).
    pub async fn create_actual_lrp(&self, guid: &str, index: i32) -> Result<()> {
        let d = self.desired_lrp(guid).await?;
        if index < 0 || index >= d.instances {
            return Err(DbError::actual_not_found(guid, index));
        }
        self.create_missing_actuals(guid, &d.domain, index, index + 1)
            .await
    }

    pub async fn update_desired_lrp(&self, guid: &str, update: DesiredLrpUpdate) -> Result<()> {
        validation::validate_desired_lrp_update(&update)?;
        if update.has_routes {
            self.check_tcp_routes(guid, &update.routes).await?;
        }
        let (before, after) = self
            .modify(&desired_key(guid), |cur: Option<DesiredLrp>| {
                let before = cur.ok_or_else(|| DbError::desired_not_found(guid))?;
                let mut d = before.clone();
                if let Some(n) = update.instances {
                    d.instances = n;
                }
                if update.has_routes {
                    d.routes = update.routes.clone();
                }
                if let Some(a) = &update.annotation {
                    d.annotation = a.clone();
                }
                let tag = d.modification_tag.get_or_insert_with(Default::default);
                tag.index += 1;
                Ok((Write::Put(d.clone()), (before, d)))
            })
            .await?;
        self.rescale(guid, &before, &after).await
    }

    /// Remove the records (and REPLACED copies) of indices >= `from`; cells stop
    /// the containers of instances whose records are gone (ActualLRPRemoved
    /// events / bulk sync).
    pub(super) async fn retire_indices_from(&self, guid: &str, from: i32) -> Result<()> {
        let mut kvs = self.store.list(&format!("{ACTUAL}{guid}/")).await?;
        kvs.extend(self.store.list(&format!("{REPLACED}{guid}/")).await?);
        let keys = kvs.into_iter().map(|kv| kv.key);
        let index_of = |k: &str| k.rsplit('/').next().and_then(|i| i.parse::<i32>().ok());
        self.delete_all(
            keys.filter(|k| index_of(k).is_some_and(|i| i >= from))
                .collect(),
        )
        .await
    }

    pub async fn remove_desired_lrp(&self, guid: &str) -> Result<()> {
        self.modify(&desired_key(guid), |cur: Option<DesiredLrp>| match cur {
            None => Err(DbError::desired_not_found(guid)),
            Some(_) => Ok((Write::Delete, ())),
        })
        .await?;
        self.retire_indices_from(guid, 0).await?;
        let mut copies = self.store.list(&format!("{EVACUATING}{guid}/")).await?;
        copies.extend(self.store.list(&format!("{SUSPECT}{guid}/")).await?);
        let mut keys: Vec<String> = copies.into_iter().map(|kv| kv.key).collect();
        keys.extend(self.history_keys(guid).await?);
        self.delete_all(keys).await
    }

    pub async fn desired_lrps(&self, domain: &str) -> Result<Vec<DesiredLrp>> {
        let all: Vec<DesiredLrp> = self.list(DESIRED).await?;
        Ok(all
            .into_iter()
            .filter(|d| domain.is_empty() || d.domain == domain)
            .collect())
    }

    pub async fn desired_lrp(&self, guid: &str) -> Result<DesiredLrp> {
        self.get(&desired_key(guid))
            .await?
            .map(|(d, _)| d)
            .ok_or_else(|| DbError::desired_not_found(guid))
    }
}
