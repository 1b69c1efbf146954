//! Desired LRPs: desire, update (scaling creates or retires instance records),
//! remove, and the UNCLAIMED records a desired index gets.

use std::collections::HashSet;

use lattice_specs::actual_lrp as alrp;
use lattice_specs::errors::ErrorName;
use lattice_specs::models::{DesiredLrp, DesiredLrpUpdate, ModificationTag};
use lattice_specs::{now_nanos, validation};
use prost::Message;

use super::txn::Write;
use super::{actual_key, desired_key, Db, DbError, Result, ACTUAL, DESIRED, EVACUATING, SUSPECT};
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
        let key = desired_key(&d.process_guid);
        if self.create(&key, d.encode_to_vec(), 0).await?.is_none() {
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
        if after.instances > before.instances {
            self.create_missing_actuals(guid, &after.domain, before.instances, after.instances)
                .await?;
        } else if after.instances < before.instances {
            self.retire_indices_from(guid, after.instances).await?;
        }
        Ok(())
    }

    /// Remove the records of indices >= `from`; cells stop the containers of
    /// instances whose records are gone (ActualLRPRemoved events / bulk sync).
    pub(super) async fn retire_indices_from(&self, guid: &str, from: i32) -> Result<()> {
        let keys = self
            .store
            .list(&format!("{ACTUAL}{guid}/"))
            .await?
            .into_iter()
            .map(|kv| kv.key);
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
        self.delete_all(copies.into_iter().map(|kv| kv.key).collect())
            .await
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
