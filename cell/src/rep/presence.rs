//! The cell's presence in the BBS: its record under a lease, kept alive, and made
//! again when the lease is gone (a cell paused past its TTL, a BBS that forgot it).
//! [`lease_state`] and [`container_slots`] decide; the rest talks to the BBS.

use super::*;

impl<R: Runtime> Rep<R> {
    pub(super) fn presence(&self) -> models::CellPresence {
        let providers = self.exec.providers().names();
        models::CellPresence {
            lease_ttl_ns: i64::try_from(self.cfg.lease_ttl.as_nanos()).unwrap_or(i64::MAX),
            cell_id: self.cfg.cell_id.clone(),
            rep_address: self.cfg.rep_address.clone(),
            zone: self.cfg.zone.clone(),
            capacity: Some(models::CellCapacity {
                memory_mb: self.cfg.capacity.memory_mb,
                disk_mb: self.cfg.capacity.disk_mb,
                containers: self.cfg.capacity.containers,
            }),
            rootfs_providers: vec![
                models::Provider {
                    name: "preloaded".into(),
                    properties: providers,
                },
                // Any registry it can reach.
                models::Provider {
                    name: "docker".into(),
                    properties: vec![],
                },
            ]
            .into_iter()
            // OCI layouts under its --oci-root directories, when it has some.
            .chain(
                (!self.exec.providers().oci_roots.is_empty()).then(|| models::Provider {
                    name: "oci".into(),
                    properties: vec![],
                }),
            )
            .collect(),
            placement_tags: self.cfg.placement_tags.clone(),
            optional_placement_tags: self.cfg.optional_placement_tags.clone(),
            volume_drivers: if self.exec.volumes().is_some() {
                vec!["local".into()]
            } else {
                vec![]
            },
            subnet: self.cfg.subnet.clone(),
            overlay_address: self.cfg.overlay_address.clone(),
            ..self.pool_presence()
        }
    }

    /// The presence's volume pool fields, from the pool as last tended.
    fn pool_presence(&self) -> models::CellPresence {
        let pool = self.pool.lock().unwrap();
        let Some(p) = pool.as_ref() else {
            return Default::default();
        };
        models::CellPresence {
            volume_pool_bytes: p.size_bytes,
            volume_pool_max_bytes: p.max_bytes,
            volume_pool_used_bytes: p.used_bytes,
            volume_pool_warning: p.warning.clone().unwrap_or_default(),
            ..Default::default()
        }
    }

    /// Puts the cell's presence again under the lease it holds (its figures changed);
    /// without one, the next registration carries them.
    pub(super) async fn republish_presence(&self) {
        let lease = self.lease.lock().unwrap().as_ref().map(|(id, _)| *id).ok();
        let Some(lease_id) = lease else { return };
        if let Err(e) = self.bbs.set_cell_presence(self.presence(), lease_id).await {
            tracing::warn!(cell = %self.cfg.cell_id, "updating the cell's presence: {}", e.message);
        }
    }

    /// Whether the cell holds its presence (its readiness, `GET /readyz`): the lease id
    /// when the BBS granted or renewed it within its TTL, else why not.
    pub fn presence_held(&self) -> Result<i64, String> {
        held(&self.lease.lock().unwrap(), self.cfg.lease_ttl)
    }

    /// Records the BBS's answer about the lease: granted or renewed (`Ok(id)`) now,
    /// or gone (why).
    fn record_lease(&self, answer: Result<i64, String>) {
        *self.lease.lock().unwrap() = answer.map(|id| (id, Instant::now()));
    }

    /// Registers the cell under a fresh lease: (lease id).
    async fn announce(&self, bbs: &RepBbs) -> Result<i64, BbsError> {
        let ttl = self.cfg.lease_ttl.as_secs().max(1) as i64;
        let lease_id = bbs.grant_lease(ttl).await?;
        bbs.set_cell_presence(self.presence(), lease_id).await?;
        Ok(lease_id)
    }

    /// Holds the cell's presence: registers it, renews its lease every third of the
    /// TTL, and registers it again (then re-syncs) whenever the lease is gone: expired
    /// while the process was paused or cut off, revoked, or not renewable. The
    /// containers keep running throughout.
    pub(super) async fn hold_presence(self: Arc<Self>, shutdown: CancellationToken) {
        let bbs = self.bbs.clone();
        let mut lease_id = 0;
        let mut announced_before = false;
        loop {
            match self.announce(&bbs).await {
                Ok(id) => {
                    lease_id = id;
                    self.record_lease(Ok(id));
                    tracing::info!(cell = %self.cfg.cell_id, lease_id, "cell presence held");
                    if announced_before {
                        // Whatever changed while the cell was gone (its tasks failed,
                        // its instances replaced) is fixed both ways now.
                        self.sync_now.notify_one();
                    }
                    announced_before = true;
                    if let Some(why) = self.keep_lease(&bbs, lease_id, &shutdown).await {
                        tracing::warn!(cell = %self.cfg.cell_id, "cell lease lost ({why}): registering again");
                        self.record_lease(Err(format!("its presence lease was lost: {why}")));
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot announce the cell: {}", e.message);
                    self.record_lease(Err(format!("cannot register with the BBS: {}", e.message)));
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        self.record_lease(Err("stopping".into()));
        if lease_id != 0 {
            let _ = bbs.revoke_lease(lease_id).await;
        }
    }

    /// Renews `lease_id` until shutdown (`None`) or until it is gone (why).
    async fn keep_lease(
        &self,
        bbs: &RepBbs,
        lease_id: i64,
        shutdown: &CancellationToken,
    ) -> Option<String> {
        let every = self.cfg.lease_ttl / 3;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(every) => {}
            }
            let answer = bbs.keep_alive_lease(lease_id).await;
            match lease_state(answer) {
                LeaseState::Alive => self.record_lease(Ok(lease_id)),
                LeaseState::Gone(why) => return Some(why),
            }
        }
    }
}

/// What a keep-alive's answer says of the cell's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LeaseState {
    Alive,
    /// Expired, revoked or unknown to the BBS (a TTL of 0), or not renewable now: the
    /// cell registers again under a new lease. (A failed call does not prove the lease
    /// gone, but a new one costs nothing and a lapsed one would leave the cell out of
    /// every auction.)
    Gone(String),
}

/// The lease is alive only when the BBS renewed it (`Ok` with a TTL above 0).
fn lease_state(answer: Result<i64, BbsError>) -> LeaseState {
    match answer {
        Ok(ttl) if ttl > 0 => LeaseState::Alive,
        Ok(_) => LeaseState::Gone("the BBS no longer has it".into()),
        Err(e) => LeaseState::Gone(format!("renewing it failed: {}", e.message)),
    }
}

/// Whether `lease` (an id and when it was last granted or renewed) is held: renewed
/// within `ttl`, since the BBS expires it after that (a cell cut off from the BBS,
/// whose renewals hang, stops being ready when its lease runs out).
fn held(lease: &Result<(i64, Instant), String>, ttl: Duration) -> Result<i64, String> {
    match lease {
        Ok((id, at)) if at.elapsed() < ttl => Ok(*id),
        Ok((_, at)) => Err(format!(
            "its presence lease was last renewed {:.1}s ago, past its {}s TTL",
            at.elapsed().as_secs_f64(),
            ttl.as_secs()
        )),
        Err(why) => Err(why.clone()),
    }
}

/// Whether the pool's figures changed enough since they were last published (`last`)
/// to put the cell's presence again: its size, maximum or warning changed, or its use
/// moved by a hundredth of its size (not every byte a volume writes).
pub(super) fn pool_changed(last: Option<&crate::pool::Tended>, now: &crate::pool::Tended) -> bool {
    let Some(last) = last else { return true };
    last.size_bytes != now.size_bytes
        || last.max_bytes != now.max_bytes
        || last.warning != now.warning
        || last.used_bytes.abs_diff(now.used_bytes) >= now.size_bytes / 100
}

/// Container slots a cell offers: `wanted`, but no more than its subnet has container
/// addresses ([`crate::network::NetworkConfig::container_addresses`]).
pub(super) fn container_slots(wanted: i32, net: &crate::network::NetworkConfig) -> i32 {
    let addresses = net.container_addresses();
    wanted
        .min(i32::try_from(addresses).unwrap_or(i32::MAX))
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Issue 27 item 14: a keep-alive that answers success with a TTL of 0 means the
    /// lease is gone (the cell was paused past its TTL): the cell registers again.
    #[test]
    fn a_lease_is_alive_only_when_renewed_with_a_ttl() {
        assert_eq!(lease_state(Ok(15)), LeaseState::Alive);
        assert!(matches!(lease_state(Ok(0)), LeaseState::Gone(_)));
        assert!(matches!(lease_state(Ok(-1)), LeaseState::Gone(_)));
        assert!(matches!(
            lease_state(Err(BbsError::from(tonic::Status::unavailable("BBS down")))),
            LeaseState::Gone(why) if why.contains("BBS down")
        ));
    }

    #[test]
    fn a_lease_is_held_only_within_its_ttl_of_the_last_renewal() {
        let ttl = Duration::from_secs(3);
        assert_eq!(held(&Ok((7, Instant::now())), ttl), Ok(7));
        let old = Instant::now() - Duration::from_secs(4);
        let why = held(&Ok((7, old)), ttl).unwrap_err();
        assert!(why.contains("past its 3s TTL"), "{why}");
        assert_eq!(held(&Err("gone".into()), ttl), Err("gone".into()));
    }

    /// The lease the cell's presence record is held under in `bbs` (0: none).
    async fn presence_lease(bbs: &lattice_bbs_client::fake::FakeBbs) -> i64 {
        let key = lattice_bbs::db::cell_key(super::super::fixtures::CELL);
        let kv = bbs.db().store().get(&key).await.unwrap();
        kv.map_or(0, |kv| kv.lease)
    }

    /// Over the in-process BBS: the cell registers, registers again under a new lease
    /// when its lease is gone (a keep-alive answering a TTL of 0), and revokes it on
    /// shutdown.
    #[tokio::test]
    async fn a_cell_registers_again_when_its_lease_is_gone_and_leaves_on_shutdown() {
        use super::super::fake::{eventually_async, rep_over_with, FakeRuntime};
        use lattice_bbs_client::fake::FakeBbs;
        use lattice_bbs_client::Leases;

        let bbs = FakeBbs::start().await;
        let mut cfg = RepConfig::new(super::super::fixtures::CELL, "127.0.0.1:1800");
        // Renewed every 10 ms (the BBS's lease lasts a second at least).
        cfg.lease_ttl = Duration::from_millis(30);
        let rep = rep_over_with(&bbs, cfg, FakeRuntime::new());
        let shutdown = CancellationToken::new();
        let held = tokio::spawn(rep.clone().hold_presence(shutdown.clone()));

        assert!(eventually_async(|| async { presence_lease(&bbs).await != 0 }).await);
        let first = presence_lease(&bbs).await;
        assert!(eventually_async(|| async { rep.presence_held() == Ok(first) }).await);
        bbs.revoke_lease(first).await.unwrap();
        let again = || async {
            let lease = presence_lease(&bbs).await;
            lease != 0 && lease != first
        };
        assert!(eventually_async(again).await, "registered again");

        shutdown.cancel();
        held.await.unwrap();
        assert_eq!(presence_lease(&bbs).await, 0, "its lease revoked");
        assert_eq!(rep.presence_held(), Err("stopping".into()));
    }

    #[test]
    fn the_presence_is_put_again_when_the_pool_grew_warned_or_filled_notably() {
        let pool = |size: u64, used: u64, warning: Option<&str>| crate::pool::Tended {
            size_bytes: size,
            used_bytes: used,
            max_bytes: 4000,
            warning: warning.map(String::from),
            grew_from: None,
            grow_failed: None,
        };
        let last = pool(1000, 100, None);
        assert!(pool_changed(None, &last), "first figures");
        assert!(!pool_changed(Some(&last), &pool(1000, 109, None)));
        assert!(pool_changed(Some(&last), &pool(1000, 110, None)));
        assert!(pool_changed(Some(&last), &pool(1000, 90, None)));
        assert!(pool_changed(Some(&last), &pool(1500, 100, None)), "grown");
        assert!(pool_changed(Some(&last), &pool(1000, 100, Some("full"))));
        let mut raised = last.clone();
        raised.max_bytes = 8000;
        assert!(pool_changed(Some(&last), &raised));
    }

    /// Issue 27 item 16: never more container slots than container addresses.
    #[test]
    fn container_slots_are_capped_by_the_subnets_addresses() {
        let gw = |a, b, c, d| crate::network::NetworkConfig {
            gateway: Ipv4Addr::new(a, b, c, d),
            ..Default::default()
        };
        let container_slots = |wanted, net: crate::network::NetworkConfig, prefix| {
            container_slots(wanted, &crate::network::NetworkConfig { prefix, ..net })
        };
        // A /24 with the gateway at .1: .2 to .254.
        assert_eq!(container_slots(256, gw(10, 253, 7, 1), 24), 253);
        assert_eq!(container_slots(100, gw(10, 253, 7, 1), 24), 100);
        // A gateway inside the handed-out range takes one of them.
        assert_eq!(container_slots(256, gw(10, 253, 7, 9), 24), 252);
        assert_eq!(container_slots(256, gw(10, 254, 0, 1), 16), 256);
        assert_eq!(container_slots(70_000, gw(10, 254, 0, 1), 16), 65_533);
        assert_eq!(container_slots(256, gw(10, 0, 0, 1), 29), 5);
        assert_eq!(container_slots(256, gw(10, 0, 0, 1), 30), 1);
        assert_eq!(container_slots(256, gw(10, 0, 0, 1), 31), 0);
        assert_eq!(container_slots(256, gw(10, 0, 0, 1), 32), 0);
    }
}
