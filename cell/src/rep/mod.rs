//! The rep: the cell's voice in the BBS (Diego's rep).
//!
//! It holds the cell's presence with a lease, answers the auctioneer (`State`,
//! `Perform`), claims and starts the LRP instances and Tasks it wins, reports them
//! RUNNING (once healthy), CRASHED (with the reason) or COMPLETED (with the result),
//! stops what the BBS no longer gives it, and bulk-syncs its containers with the BBS
//! (periodically and whenever an event concerns this cell) to fix drift both ways.
//! A restarted rep re-adopts the containers still running. On evacuation it hands its
//! instances over as Diego does and leaves once they run elsewhere.
//!
//! This module holds the rep itself (its config, its slots of reserved room and the
//! auctioneer's `State`); the rest lives in rooms of its own: `authz` (who may
//! call the rep), `presence`,
//! `perform`, `lrp` (supervision, over the pure `health` state machine),
//! `tasks`, `readopt`, `sync` (a pure `reconcile` and its runner), `events`,
//! `evacuation`, `volumes` and `fencing` (failover: the self-fence, fenced copies). The rep drives containers through the [`Runtime`]
//! trait (`runtime`) and makes every BBS call through `bbs` (over the `CellBbs`
//! trait of `lattice_bbs_client`); the pure decisions in each room do neither.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lattice_bbs_client::{BbsError, CellBbs};
use lattice_specs::authz::Call;
use lattice_specs::bbs_api::{self as api};
use lattice_specs::models::{
    self, action::Action as A, actual_lrp::Presence, actual_lrp::State as LrpState,
    task::State as TaskState,
};
use lattice_specs::rep_api::{self, CellState, LrpOnCell, PerformResponse, Resources, Work};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::executor::{ContainerInfo, ContainerRequest, Executor};
use crate::logs::Logs;
use crate::metrics::Metrics;
use crate::monitor;
use crate::shim::ShimEvent;

#[derive(Debug, Clone)]
pub struct RepConfig {
    pub cell_id: String,
    pub zone: String,
    /// host:port where the auctioneer (and `ltc logs`) reach this rep.
    pub rep_address: String,
    /// The cell's address: published container ports are reachable at it.
    pub address: String,
    pub capacity: Resources,
    pub placement_tags: Vec<String>,
    pub optional_placement_tags: Vec<String>,
    pub lease_ttl: Duration,
    /// Bulk sync with the BBS at least this often.
    pub sync_interval: Duration,
    /// Health checks while an instance is not yet healthy, and once it is.
    pub unhealthy_interval: Duration,
    /// Checks come this often during the first [`RepConfig::startup_window`] of a new
    /// instance, so one that is up quickly is RUNNING quickly.
    pub startup_interval: Duration,
    pub startup_window: Duration,
    pub healthy_interval: Duration,
    /// When a DesiredLRP sets no start timeout.
    pub default_start_timeout: Duration,
    /// How long evacuation waits for instances to run elsewhere.
    pub evacuation_timeout: Duration,
    /// The cell's container subnet (CIDR), as its presence announces it.
    pub subnet: String,
    /// Where other cells send its overlay traffic (empty: no overlay).
    pub overlay_address: String,
}

impl RepConfig {
    pub fn new(cell_id: &str, rep_address: &str) -> RepConfig {
        RepConfig {
            cell_id: cell_id.into(),
            zone: "z1".into(),
            rep_address: rep_address.into(),
            address: "127.0.0.1".into(),
            capacity: Resources {
                memory_mb: 8192,
                disk_mb: 65536,
                containers: 256,
            },
            placement_tags: vec![],
            optional_placement_tags: vec![],
            lease_ttl: Duration::from_secs(15),
            sync_interval: Duration::from_secs(10),
            unhealthy_interval: Duration::from_millis(500),
            startup_interval: Duration::from_millis(25),
            startup_window: Duration::from_secs(2),
            healthy_interval: Duration::from_secs(30),
            default_start_timeout: Duration::from_secs(60),
            evacuation_timeout: Duration::from_secs(600),
            subnet: String::new(),
            overlay_address: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Lrp {
        process_guid: String,
        index: i32,
        instance_guid: String,
    },
    Task {
        task_guid: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Resources held; claiming in the BBS.
    Reserved,
    /// Claimed (or started, for a task): the BBS record says it is ours.
    Claimed,
    /// Healthy and reported RUNNING.
    Running,
}

#[derive(Debug, Clone)]
struct Slot {
    kind: Kind,
    memory_mb: i32,
    disk_mb: i32,
    phase: Phase,
    /// When the BBS record became ours (sync ignores records listed before that).
    owned_since: Option<Instant>,
    stop: CancellationToken,
    net_info: Option<models::ActualLrpNetInfo>,
}

impl Slot {
    fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Reserved => "reserved",
            Phase::Claimed => "starting",
            Phase::Running => "running",
        }
    }
}

pub struct Rep<R: Runtime = Executor> {
    cfg: RepConfig,
    bbs: RepBbs,
    exec: Arc<R>,
    pub logs: Logs,
    pub metrics: Metrics,
    slots: Mutex<HashMap<String, Slot>>,
    evacuating: AtomicBool,
    sync_now: Notify,
    /// The presence lease and when it was last granted or renewed, or why the cell
    /// holds none (see [`Rep::presence_held`]).
    lease: Mutex<Result<(i64, Instant), String>>,
    /// This cell's volumes that ask for failover, as the last volume sync saw them
    /// (the self-fence, `fencing`, needs them when the BBS is out of reach).
    failover_volumes: Mutex<std::collections::HashSet<String>>,
    /// The volume pool as last tended (its presence carries it), none before.
    pool: Mutex<Option<crate::pool::Tended>>,
}

pub mod authz;
mod bbs;
mod evacuation;
mod events;
#[cfg(test)]
pub(crate) mod fake;
mod fencing;
#[cfg(test)]
mod fixtures;
mod health;
mod lrp;
mod perform;
mod presence;
mod readopt;
mod runtime;
mod standby;
mod sync;
mod tasks;
mod volumes;
use bbs::RepBbs;
use presence::container_slots;
pub use runtime::Runtime;
pub use volumes::VolumeSyncError;

impl<R: Runtime> Rep<R> {
    /// A rep of `cfg` asking `bbs` and running its containers on `exec`.
    pub fn new(mut cfg: RepConfig, bbs: Arc<dyn CellBbs>, exec: Arc<R>) -> Arc<Rep<R>> {
        // Every container but a host-networked one takes an address of the cell's
        // subnet: never offer more slots than there are addresses.
        let net = exec.network_config();
        let slots = container_slots(cfg.capacity.containers, net);
        if slots < cfg.capacity.containers {
            tracing::warn!(
                cell = %cfg.cell_id,
                "offering {slots} containers, not {}: the subnet {}/{} has {slots} container addresses",
                cfg.capacity.containers,
                net.gateway,
                net.prefix
            );
            cfg.capacity.containers = slots;
        }
        Arc::new(Rep {
            cfg,
            bbs: RepBbs::new(bbs),
            exec,
            logs: Logs::new(),
            metrics: Metrics::new(),
            slots: Mutex::new(HashMap::new()),
            evacuating: AtomicBool::new(false),
            sync_now: Notify::new(),
            lease: Mutex::new(Err("not registered with the BBS yet".into())),
            failover_volumes: Mutex::default(),
            pool: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &RepConfig {
        &self.cfg
    }

    pub fn executor(&self) -> &Arc<R> {
        &self.exec
    }

    /// Re-adopts containers from before a restart, then runs presence, sync and the
    /// event follower until `shutdown` (the containers keep running after it).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let _log_task = self.logs.listen(&self.exec.log_socket())?;
        self.readopt().await;
        let presence = tokio::spawn(self.clone().hold_presence(shutdown.clone()));
        let events = tokio::spawn(self.clone().follow_events(shutdown.clone()));
        let sync = tokio::spawn(self.clone().sync_loop(shutdown.clone()));
        let self_fence = tokio::spawn(self.clone().self_fence_loop(shutdown.clone()));
        shutdown.cancelled().await;
        self_fence.abort();
        sync.abort();
        events.abort();
        let _ = presence.await;
        Ok(())
    }

    pub fn state(&self) -> CellState {
        let slots = self.slots.lock().unwrap();
        let (mem, disk, n) = used(&slots);
        let lrps = slots
            .values()
            .filter_map(|s| match &s.kind {
                Kind::Lrp {
                    process_guid,
                    index,
                    ..
                } => Some(LrpOnCell {
                    process_guid: process_guid.clone(),
                    index: *index,
                    memory_mb: s.memory_mb,
                    disk_mb: s.disk_mb,
                }),
                Kind::Task { .. } => None,
            })
            .collect();
        let starting = slots.values().filter(|s| s.phase < Phase::Running).count() as i32;
        let p = self.presence();
        CellState {
            cell_id: p.cell_id,
            zone: p.zone,
            total: Some(self.cfg.capacity),
            available: Some(Resources {
                memory_mb: self.cfg.capacity.memory_mb - mem,
                disk_mb: self.cfg.capacity.disk_mb - disk,
                containers: self.cfg.capacity.containers - n,
            }),
            rootfs_providers: p.rootfs_providers,
            placement_tags: p.placement_tags,
            optional_placement_tags: p.optional_placement_tags,
            volume_drivers: p.volume_drivers,
            lrps,
            starting_containers: starting,
            evacuating: self.evacuating.load(Ordering::SeqCst),
        }
    }

    /// Reserves room for `memory`/`disk` and records the slot; false when it does not fit.
    fn reserve(&self, handle: &str, slot: Slot) -> bool {
        let mut slots = self.slots.lock().unwrap();
        let (m, d, c) = used(&slots);
        let fits = m + slot.memory_mb <= self.cfg.capacity.memory_mb
            && d + slot.disk_mb <= self.cfg.capacity.disk_mb
            && c < self.cfg.capacity.containers;
        if !fits || slots.contains_key(handle) || self.evacuating.load(Ordering::SeqCst) {
            return false;
        }
        slots.insert(handle.to_string(), slot);
        self.update_gauges(&slots);
        true
    }

    /// The slots as they are now (handle, slot).
    fn snapshot(&self) -> Vec<(String, Slot)> {
        self.slots
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn release(&self, handle: &str) {
        let mut slots = self.slots.lock().unwrap();
        slots.remove(handle);
        self.update_gauges(&slots);
        self.logs.unregister(handle);
    }

    /// Whether `handle` is work this cell holds in the BBS (claimed, or a Task started),
    /// whose container may still be on its way.
    pub fn holds(&self, handle: &str) -> bool {
        self.slots
            .lock()
            .unwrap()
            .get(handle)
            .is_some_and(|s| s.phase >= Phase::Claimed)
    }

    fn set_phase(&self, handle: &str, phase: Phase) {
        let mut slots = self.slots.lock().unwrap();
        if let Some(s) = slots.get_mut(handle) {
            s.phase = phase;
            if phase >= Phase::Claimed && s.owned_since.is_none() {
                s.owned_since = Some(Instant::now());
            }
        }
        self.update_gauges(&slots);
    }

    fn update_gauges(&self, slots: &HashMap<String, Slot>) {
        for state in ["reserved", "starting", "running"] {
            let n = slots.values().filter(|s| s.phase_name() == state).count();
            self.metrics
                .containers
                .with_label_values(&[state])
                .set(n as i64);
        }
    }

    /// The BBS's keys of this cell's instance `instance_guid` of `process_guid`/`index`.
    fn keys(
        &self,
        process_guid: &str,
        index: i32,
        instance_guid: &str,
    ) -> (api::ActualLrpRef, models::ActualLrpInstanceKey) {
        instance_keys(&self.cfg.cell_id, process_guid, index, instance_guid)
    }

    /// Where the cell reaches an instance's container, as the BBS records it.
    fn net_info(&self, info: &ContainerInfo) -> models::ActualLrpNetInfo {
        models::ActualLrpNetInfo {
            address: self.cfg.address.clone(),
            ports: info
                .ports
                .iter()
                .map(|(c, h)| models::PortMapping {
                    container_port: *c,
                    host_port: *h as u32,
                })
                .collect(),
            instance_address: info.ip().to_string(),
        }
    }

    /// The executor's part of stopping (see [`Executor::close`]): with no container
    /// left, the cell's bridge, firewall and containers' filesystem go too.
    pub fn close_executor(&self) {
        self.exec.close();
    }
}

/// How often the image layer cache is collected, and how long an unused layer is kept.
const LAYER_GC_EVERY: Duration = Duration::from_secs(600);
/// How often a container's events are read when the shim's writes do not wake us.
const EVENT_POLL: Duration = Duration::from_millis(20);
/// With wakes, a read this often anyway (a shim that died without a word).
const EVENT_FALLBACK: Duration = Duration::from_secs(1);
const LAYER_KEEP: Duration = Duration::from_secs(3600);

/// The BBS's keys of instance `instance_guid` of `process_guid`/`index` on `cell_id`.
fn instance_keys(
    cell_id: &str,
    process_guid: &str,
    index: i32,
    instance_guid: &str,
) -> (api::ActualLrpRef, models::ActualLrpInstanceKey) {
    (
        api::ActualLrpRef {
            process_guid: process_guid.into(),
            index,
        },
        models::ActualLrpInstanceKey {
            instance_guid: instance_guid.into(),
            cell_id: cell_id.into(),
        },
    )
}

/// Memory, disk and containers the slots hold.
fn used(slots: &HashMap<String, Slot>) -> (i32, i32, i32) {
    slots.values().fold((0, 0, 0), |(m, d, c), s| {
        (m + s.memory_mb, d + s.disk_mb, c + 1)
    })
}

fn log_guid_of(log_guid: &str, fallback: &str) -> String {
    if log_guid.is_empty() {
        fallback.to_string()
    } else {
        log_guid.to_string()
    }
}

/// The gRPC face of the rep.
pub struct RepGrpc<R: Runtime = Executor>(pub Arc<Rep<R>>);

impl<R: Runtime> Clone for RepGrpc<R> {
    fn clone(&self) -> Self {
        RepGrpc(self.0.clone())
    }
}

#[tonic::async_trait]
impl<R: Runtime> rep_api::rep_server::Rep for RepGrpc<R> {
    async fn state(
        &self,
        req: tonic::Request<rep_api::StateRequest>,
    ) -> Result<tonic::Response<CellState>, tonic::Status> {
        authz::allow_grpc(&self.0.metrics, &req, Call::RepState)?;
        Ok(tonic::Response::new(self.0.state()))
    }

    async fn perform(
        &self,
        req: tonic::Request<Work>,
    ) -> Result<tonic::Response<PerformResponse>, tonic::Status> {
        authz::allow_grpc(&self.0.metrics, &req, Call::Perform)?;
        let failed = self.0.perform(req.into_inner());
        Ok(tonic::Response::new(PerformResponse {
            failed: Some(failed),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{rep_with, FakeRuntime};
    use super::fixtures::{lrp_slot, task_slot, CELL};
    use super::*;

    #[tokio::test]
    async fn reserve_takes_what_fits_once_and_nothing_while_evacuating() {
        let mut cfg = RepConfig::new(CELL, "127.0.0.1:1800");
        cfg.capacity = Resources {
            memory_mb: 150,
            disk_mb: 1000,
            containers: 3,
        };
        let rep = rep_with(cfg, FakeRuntime::new());
        // Each fixture slot holds 64 MB of memory and 128 MB of disk.
        let (h0, s0) = lrp_slot("web", 0, "i-0", Phase::Reserved, None);
        assert!(rep.reserve(&h0, s0.clone()));
        assert!(!rep.reserve(&h0, s0), "the same handle twice");
        let (t1, s1) = task_slot("t-1", Phase::Claimed, Some(Instant::now()));
        assert!(rep.reserve(&t1, s1));
        let (h2, s2) = lrp_slot("web", 2, "i-2", Phase::Reserved, None);
        assert!(!rep.reserve(&h2, s2.clone()), "past the memory");

        let state = rep.state();
        assert_eq!(state.cell_id, CELL);
        assert_eq!(
            state.available,
            Some(Resources {
                memory_mb: 22,
                disk_mb: 744,
                containers: 1
            })
        );
        assert_eq!(state.lrps.len(), 1);
        assert_eq!(state.lrps[0].process_guid, "web");
        assert_eq!(state.starting_containers, 2);
        assert!(!state.evacuating);

        rep.release(&t1);
        rep.evacuating.store(true, Ordering::SeqCst);
        assert!(!rep.reserve(&h2, s2), "nothing new while evacuating");
        assert!(rep.state().evacuating);
    }
}
