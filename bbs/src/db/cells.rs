//! Cells' presence, domains' freshness, leases (with their holders), and locks
//! with their fencing revisions.

use std::time::Duration;

use lattice_specs::identity::Identity;
use lattice_specs::models::{CellPresence, Domain};
use lattice_specs::validation;
use prost::Message;

use super::txn::Attempts;
use super::{cell_key, Db, DbError, LockState, Result, CELL, DOMAIN, LEASE_HOLDER, LOCK};
use crate::store::{Compare, LeaseId, Op, Txn};

impl Db {
    pub async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        Ok(self.store.grant_lease(ttl).await?)
    }

    /// Grant a lease held by `holder`, recorded under [`LEASE_HOLDER`] on the
    /// lease itself (so the record goes with it): only the holder may keep it
    /// alive or revoke it (`lattice_specs::authz::authorize_lease`).
    pub async fn grant_lease_held_by(&self, ttl: Duration, holder: &Identity) -> Result<LeaseId> {
        let lease = self.store.grant_lease(ttl).await?;
        let put = Op::Put {
            key: format!("{LEASE_HOLDER}{lease}"),
            value: holder.dns_name().into_bytes(),
            lease,
        };
        if let Err(e) = self.store.txn(Txn::new().then(put)).await {
            let _ = self.store.revoke_lease(lease).await;
            return Err(e.into());
        }
        Ok(lease)
    }

    /// Who holds `lease` (`None`: no holder recorded, or no such lease).
    pub async fn lease_holder(&self, lease: LeaseId) -> Result<Option<Identity>> {
        let Some(kv) = self.store.get(&format!("{LEASE_HOLDER}{lease}")).await? else {
            return Ok(None);
        };
        let dns = String::from_utf8_lossy(&kv.value);
        Identity::from_dns_name(&dns)
            .map(Some)
            .map_err(|e| DbError::Corrupt {
                key: kv.key.clone(),
                reason: e.to_string(),
            })
    }

    pub async fn keep_alive(&self, lease: LeaseId) -> Result<i64> {
        Ok(self.store.keep_alive(lease).await?)
    }

    pub async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        Ok(self.store.revoke_lease(lease).await?)
    }

    /// Announce (or refresh) a cell; the record lives as long as `lease`.
    pub async fn set_cell_presence(&self, cell: &CellPresence, lease: LeaseId) -> Result<()> {
        validation::validate_cell(cell)?;
        let key = cell_key(&cell.cell_id);
        self.txn(Txn::new().then(Op::Put {
            key,
            value: cell.encode_to_vec(),
            lease,
        }))
        .await?;
        Ok(())
    }

    pub async fn cells(&self) -> Result<Vec<CellPresence>> {
        self.list(CELL).await
    }

    /// Mark a domain fresh for `ttl_seconds` (0: forever).
    pub async fn upsert_domain(&self, d: &Domain) -> Result<()> {
        validation::validate_domain(d)?;
        let lease = if d.ttl_seconds > 0 {
            self.store
                .grant_lease(Duration::from_secs(d.ttl_seconds as u64))
                .await?
        } else {
            0
        };
        let key = format!("{DOMAIN}{}", d.name);
        let previous = self.store.get(&key).await?;
        self.txn(Txn::new().then(Op::Put {
            key,
            value: d.encode_to_vec(),
            lease,
        }))
        .await?;
        if let Some(p) = previous.filter(|p| p.lease != 0 && p.lease != lease) {
            let _ = self.store.revoke_lease(p.lease).await;
        }
        Ok(())
    }

    pub async fn domains(&self) -> Result<Vec<Domain>> {
        self.list(DOMAIN).await
    }

    /// Take `name` for `owner` as long as `lease` lives, unless someone else
    /// holds it. Re-acquiring with the same lease is a no-op that succeeds.
    pub async fn acquire_lock(&self, name: &str, owner: &str, lease: LeaseId) -> Result<LockState> {
        let key = format!("{LOCK}{name}");
        let mut attempts = Attempts::on(&key);
        loop {
            attempts.next()?;
            if let Some(kv) = self.store.get(&key).await? {
                let holder = String::from_utf8_lossy(&kv.value).into_owned();
                return Ok(LockState {
                    acquired: kv.lease == lease && holder == owner,
                    owner: holder,
                    revision: kv.create_revision,
                });
            }
            if let Some(revision) = self.create(&key, owner.as_bytes().to_vec(), lease).await? {
                return Ok(LockState {
                    acquired: true,
                    owner: owner.into(),
                    revision,
                });
            }
        }
    }

    pub async fn release_lock(&self, name: &str, lease: LeaseId) -> Result<()> {
        let key = format!("{LOCK}{name}");
        if let Some(kv) = self.store.get(&key).await? {
            if kv.lease == lease {
                self.txn(
                    Txn::new()
                        .when(Compare::ModRevision(key, kv.mod_revision))
                        .then(Op::delete(&kv.key)),
                )
                .await?;
            }
        }
        Ok(())
    }
}
