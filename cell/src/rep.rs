//! The rep: the cell's voice in the BBS (Diego's rep).
//!
//! It holds the cell's presence with a lease, answers the auctioneer (`State`,
//! `Perform`), claims and starts the LRP instances and Tasks it wins, reports them
//! RUNNING (once healthy), CRASHED (with the reason) or COMPLETED (with the result),
//! stops what the BBS no longer gives it, and bulk-syncs its containers with the BBS
//! (periodically and whenever an event concerns this cell) to fix drift both ways.
//! A restarted rep re-adopts the containers still running. On evacuation it hands its
//! instances over as Diego does and leaves once they run elsewhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::bbs_api::{self as api};
use lattice_specs::models::{
    self, action::Action as A, actual_lrp::Presence, actual_lrp::State as LrpState,
    task::State as TaskState,
};
use lattice_specs::rep_api::{self, CellState, LrpOnCell, PerformResponse, Resources, Work};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

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

pub struct Rep {
    cfg: RepConfig,
    bbs: BbsClient<Channel>,
    exec: Arc<Executor>,
    pub logs: Logs,
    pub metrics: Metrics,
    slots: Mutex<HashMap<String, Slot>>,
    evacuating: AtomicBool,
    sync_now: Notify,
}

mod presence;
mod volumes;
use presence::container_slots;

impl Rep {
    pub fn new(mut cfg: RepConfig, bbs: BbsClient<Channel>, exec: Arc<Executor>) -> Arc<Rep> {
        // Every container but a host-networked one takes an address of the cell's
        // subnet: never offer more slots than there are addresses.
        let net = &exec.config().network;
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
            bbs,
            exec,
            logs: Logs::new(),
            metrics: Metrics::new(),
            slots: Mutex::new(HashMap::new()),
            evacuating: AtomicBool::new(false),
            sync_now: Notify::new(),
        })
    }

    pub fn config(&self) -> &RepConfig {
        &self.cfg
    }

    pub fn executor(&self) -> &Arc<Executor> {
        &self.exec
    }

    fn bbs(&self) -> BbsClient<Channel> {
        self.bbs.clone()
    }

    /// Re-adopts containers from before a restart, then runs presence, sync and the
    /// event follower until `shutdown` (the containers keep running after it).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let _log_task = self.logs.listen(&self.exec.log_socket())?;
        self.readopt().await;
        let presence = tokio::spawn(self.clone().hold_presence(shutdown.clone()));
        let events = tokio::spawn(self.clone().follow_events(shutdown.clone()));
        let sync = tokio::spawn(self.clone().sync_loop(shutdown.clone()));
        shutdown.cancelled().await;
        sync.abort();
        events.abort();
        let _ = presence.await;
        Ok(())
    }

    // ---- the auctioneer's API --------------------------------------------------------

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

    /// Takes what fits and starts it in the background; returns what did not fit.
    pub fn perform(self: &Arc<Self>, work: Work) -> Work {
        let received = Instant::now();
        let mut failed = Work::default();
        for start in work.lrps {
            let Some(desired) = start.desired.clone() else {
                continue;
            };
            let instance_guid = uuid::Uuid::new_v4().to_string();
            let slot = Slot {
                kind: Kind::Lrp {
                    process_guid: desired.process_guid.clone(),
                    index: start.index,
                    instance_guid: instance_guid.clone(),
                },
                memory_mb: desired.memory_mb,
                disk_mb: desired.disk_mb,
                phase: Phase::Reserved,
                owned_since: None,
                stop: CancellationToken::new(),
                net_info: None,
            };
            if !self.reserve(&instance_guid, slot) {
                failed.lrps.push(start);
                continue;
            }
            let rep = self.clone();
            tokio::spawn(async move {
                rep.start_lrp(desired, start.index, instance_guid, received)
                    .await
            });
        }
        for start in work.tasks {
            let Some(task) = start.task.clone() else {
                continue;
            };
            let def = task.definition.clone().unwrap_or_default();
            let slot = Slot {
                kind: Kind::Task {
                    task_guid: task.task_guid.clone(),
                },
                memory_mb: def.memory_mb,
                disk_mb: def.disk_mb,
                phase: Phase::Reserved,
                owned_since: None,
                stop: CancellationToken::new(),
                net_info: None,
            };
            if !self.reserve(&task.task_guid, slot) {
                failed.tasks.push(start);
                continue;
            }
            let rep = self.clone();
            tokio::spawn(async move { rep.start_task(task).await });
        }
        failed
    }

    // ---- LRPs ----------------------------------------------------------------------

    fn lrp_request(
        &self,
        d: &models::DesiredLrp,
        index: i32,
        instance_guid: &str,
    ) -> ContainerRequest {
        let mut env: Vec<(String, String)> = vec![
            ("INSTANCE_INDEX".into(), index.to_string()),
            ("INSTANCE_GUID".into(), instance_guid.into()),
            ("PROCESS_GUID".into(), d.process_guid.clone()),
            ("CELL_ID".into(), self.cfg.cell_id.clone()),
        ];
        if let Some(p) = d.ports.first() {
            env.push(("PORT".into(), p.to_string()));
        }
        env.extend(d.env.iter().map(|e| (e.name.clone(), e.value.clone())));
        let action = match (&d.setup, &d.action) {
            (Some(setup), Some(action)) => models::Action {
                action: Some(A::Serial(models::SerialAction {
                    actions: vec![setup.clone(), action.clone()],
                    ..Default::default()
                })),
            },
            (None, Some(action)) => action.clone(),
            (Some(setup), None) => setup.clone(),
            (None, None) => models::Action::default(),
        };
        let source = if d.log_source.is_empty() {
            "APP"
        } else {
            &d.log_source
        };
        ContainerRequest {
            handle: instance_guid.into(),
            rootfs: d.rootfs.clone(),
            memory_mb: d.memory_mb,
            disk_mb: d.disk_mb,
            cpu_weight: d.cpu_weight,
            max_pids: d.max_pids,
            privileged: d.privileged,
            host_network: d.host_network,
            ports: d.ports.clone(),
            env,
            action,
            log_source: format!("{source}/{index}"),
            volume_mounts: d.volume_mounts.clone(),
            tags: [
                ("kind".to_string(), "lrp".to_string()),
                ("process_guid".to_string(), d.process_guid.clone()),
                ("index".to_string(), index.to_string()),
                (
                    "log_guid".to_string(),
                    log_guid_of(&d.log_guid, &d.process_guid),
                ),
                (
                    "desired".to_string(),
                    serde_json::to_string(d).unwrap_or_default(),
                ),
            ]
            .into(),
        }
    }

    fn keys(
        &self,
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
                cell_id: self.cfg.cell_id.clone(),
            },
        )
    }

    #[tracing::instrument(skip(self, d, received), fields(process_guid = %d.process_guid))]
    async fn start_lrp(
        self: Arc<Self>,
        d: models::DesiredLrp,
        index: i32,
        instance_guid: String,
        received: Instant,
    ) {
        // What runs is what the BBS stores, whatever the Perform carried.
        let Some(d) = self.stored_lrp(d).await else {
            self.release(&instance_guid);
            return;
        };
        let (key, ik) = self.keys(&d.process_guid, index, &instance_guid);
        let log_guid = log_guid_of(&d.log_guid, &d.process_guid);
        if let Err(e) = self
            .bbs()
            .claim_actual_lrp(api::ClaimActualLrpRequest {
                key: Some(key.clone()),
                instance_key: Some(ik.clone()),
            })
            .await
        {
            tracing::info!(index, "claim refused: {}", e.message());
            self.release(&instance_guid);
            return;
        }
        self.set_phase(&instance_guid, Phase::Claimed);
        self.logs.cell(
            &log_guid,
            format!("Creating container for instance {index}"),
        );
        self.logs.register(&instance_guid, &log_guid);
        let req = self.lrp_request(&d, index, &instance_guid);
        let progress = self.logs.progress(&log_guid);
        match self.exec.create_with_progress(req, &progress).await {
            Ok(info) => {
                self.metrics.starts.inc();
                self.logs.cell(&log_guid, "Successfully created container");
                self.supervise_lrp(info, d, index, false, received).await;
            }
            Err(e) => {
                let reason = format!("failed to create container: {e:#}");
                self.logs.cell(&log_guid, &reason);
                self.crash(&key, &ik, &reason).await;
                self.release(&instance_guid);
            }
        }
    }

    /// The BBS's copy of an LRP a Perform asked for, if the Perform's matches it.
    async fn stored_lrp(&self, sent: models::DesiredLrp) -> Option<models::DesiredLrp> {
        let stored = self
            .bbs()
            .desired_lrp_by_process_guid(api::ProcessGuidRequest {
                process_guid: sent.process_guid.clone(),
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().desired_lrp);
        let verdict = crate::verify::lrp_matches(&sent, stored.as_ref());
        self.accepted(verdict, stored, &sent.process_guid)
    }

    /// The BBS's copy of a Task a Perform asked for, if the Perform's matches it.
    async fn stored_task(&self, sent: models::Task) -> Option<models::Task> {
        let stored = self
            .bbs()
            .task_by_guid(api::TaskGuidRequest {
                task_guid: sent.task_guid.clone(),
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().task);
        let verdict = crate::verify::task_matches(&sent, stored.as_ref());
        self.accepted(verdict, stored, &sent.task_guid)
    }

    /// The stored copy when the Perform's matched it; otherwise none, counted and said.
    fn accepted<T>(
        &self,
        verdict: Result<(), crate::verify::Mismatch>,
        stored: Option<T>,
        guid: &str,
    ) -> Option<T> {
        match verdict {
            Ok(()) => stored,
            Err(e) => {
                self.metrics.refused.inc();
                tracing::warn!(guid, "refused a Perform: {e}");
                None
            }
        }
    }

    async fn crash(
        &self,
        key: &api::ActualLrpRef,
        ik: &models::ActualLrpInstanceKey,
        reason: &str,
    ) {
        self.metrics.crashes.inc();
        tracing::info!(process_guid = %key.process_guid, index = key.index, reason, "instance crashed");
        if let Err(e) = self
            .bbs()
            .crash_actual_lrp(api::CrashActualLrpRequest {
                key: Some(key.clone()),
                instance_key: Some(ik.clone()),
                error_message: reason.into(),
            })
            .await
        {
            tracing::info!("crash report refused: {}", e.message());
        }
    }

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

    async fn command_check(&self, handle: &str, run: models::RunAction) -> Result<(), String> {
        let shim = &self.exec.config().shim;
        let json = serde_json::to_string(&run).map_err(|e| e.to_string())?;
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(&shim[0])
                .args(&shim[1..])
                .arg(self.exec.dir(handle))
                .arg("--exec")
                .arg(json)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| "health check command timed out".to_string())?
        .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Watches an LRP container: health checks until RUNNING, then monitoring until it
    /// exits, fails a check or is told to stop.
    async fn supervise_lrp(
        self: &Arc<Self>,
        info: ContainerInfo,
        d: models::DesiredLrp,
        index: i32,
        already_running: bool,
        received: Instant,
    ) {
        let handle = info.handle().to_string();
        let (key, ik) = self.keys(&d.process_guid, index, &handle);
        let log_guid = log_guid_of(&d.log_guid, &d.process_guid);
        let checks = monitor::checks_for(&d);
        let start_timeout = if d.start_timeout_ms > 0 {
            Duration::from_millis(d.start_timeout_ms)
        } else {
            self.cfg.default_start_timeout
        };
        let stop = match self.slots.lock().unwrap().get(&handle) {
            Some(s) => s.stop.clone(),
            None => return,
        };
        let net = self.net_info(&info);
        let started = Instant::now();
        let mut healthy = already_running;
        let mut process_started = already_running;
        let mut next_check = Instant::now();
        let mut offset = 0;
        let mut signal = self.exec.event_signal(&handle);
        let outcome: Option<String> = loop {
            // Woken by the shim's events; otherwise in time for the next health check.
            let tick = if !signal.is_live() {
                EVENT_POLL
            } else if process_started {
                next_check
                    .saturating_duration_since(Instant::now())
                    .min(EVENT_FALLBACK)
            } else {
                EVENT_FALLBACK
            };
            tokio::select! {
                _ = stop.cancelled() => break None,
                _ = signal.changed() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            let (events, off) = self.exec.events(&handle, offset);
            offset = off;
            let mut ended = None;
            for e in events {
                match e {
                    ShimEvent::RunStarted { .. } => process_started = true,
                    ShimEvent::Exited { reason, .. } => {
                        ended = Some(if reason.is_empty() {
                            "exited with status 0".to_string()
                        } else {
                            reason
                        })
                    }
                    ShimEvent::CreateFailed { reason } => ended = Some(reason),
                    _ => {}
                }
            }
            if let Some(reason) = ended {
                break Some(reason);
            }
            if Instant::now() < next_check || !process_started {
                continue;
            }
            let result =
                monitor::healthy(&checks, info.ip(), |r| self.command_check(&handle, r)).await;
            match (healthy, result) {
                (false, Ok(())) => {
                    healthy = true;
                    next_check = Instant::now() + self.cfg.healthy_interval;
                    let started_ok = self
                        .bbs()
                        .start_actual_lrp(api::StartActualLrpRequest {
                            key: Some(key.clone()),
                            instance_key: Some(ik.clone()),
                            net_info: Some(net.clone()),
                        })
                        .await;
                    if let Err(e) = started_ok {
                        tracing::info!(
                            index,
                            "start refused: {}; stopping the container",
                            e.message()
                        );
                        break None;
                    }
                    self.metrics
                        .start_latency
                        .observe(received.elapsed().as_secs_f64());
                    {
                        let mut slots = self.slots.lock().unwrap();
                        if let Some(s) = slots.get_mut(&handle) {
                            s.net_info = Some(net.clone());
                        }
                    }
                    self.set_phase(&handle, Phase::Running);
                    self.logs.cell(
                        &log_guid,
                        format!("Container became healthy (instance {index})"),
                    );
                }
                (false, Err(e)) => {
                    if started.elapsed() > start_timeout {
                        break Some(format!(
                            "instance never became healthy within {}s: {e}",
                            start_timeout.as_secs()
                        ));
                    }
                    // Fast only for port/HTTP checks: a command check is an exec.
                    let cheap = !checks
                        .iter()
                        .any(|c| matches!(c, monitor::Check::Command(_)));
                    next_check = Instant::now()
                        + if cheap && started.elapsed() < self.cfg.startup_window {
                            self.cfg.startup_interval
                        } else {
                            self.cfg.unhealthy_interval
                        };
                }
                (true, Ok(())) => next_check = Instant::now() + self.cfg.healthy_interval,
                (true, Err(e)) => break Some(format!("health check failed: {e}")),
            }
        };
        match outcome {
            Some(reason) => {
                self.logs
                    .cell(&log_guid, format!("Instance {index} crashed: {reason}"));
                self.crash(&key, &ik, &reason).await;
            }
            None => {
                // Told to stop (retired, scaled down, removed): make sure the record,
                // if still ours, goes too.
                let _ = self
                    .bbs()
                    .remove_actual_lrp(api::RemoveActualLrpRequest {
                        key: Some(key.clone()),
                        instance_key: Some(ik.clone()),
                    })
                    .await;
                self.logs
                    .cell(&log_guid, format!("Stopping instance {index}"));
            }
        }
        self.exec.destroy(&handle).await;
        self.release(&handle);
    }

    // ---- Tasks ---------------------------------------------------------------------

    fn task_request(&self, t: &models::Task) -> ContainerRequest {
        let def = t.definition.clone().unwrap_or_default();
        let source = if def.log_source.is_empty() {
            "TASK"
        } else {
            &def.log_source
        };
        let mut env = vec![("CELL_ID".to_string(), self.cfg.cell_id.clone())];
        env.extend(def.env.iter().map(|e| (e.name.clone(), e.value.clone())));
        ContainerRequest {
            handle: t.task_guid.clone(),
            rootfs: def.rootfs.clone(),
            memory_mb: def.memory_mb,
            disk_mb: def.disk_mb,
            cpu_weight: def.cpu_weight,
            max_pids: def.max_pids,
            privileged: def.privileged,
            host_network: false,
            ports: vec![],
            env,
            action: def.action.clone().unwrap_or_default(),
            log_source: source.to_string(),
            volume_mounts: def.volume_mounts.clone(),
            tags: [
                ("kind".to_string(), "task".to_string()),
                ("task_guid".to_string(), t.task_guid.clone()),
                (
                    "log_guid".to_string(),
                    log_guid_of(&def.log_guid, &t.task_guid),
                ),
                ("result_file".to_string(), def.result_file.clone()),
            ]
            .into(),
        }
    }

    #[tracing::instrument(skip_all, fields(task_guid = %t.task_guid))]
    async fn start_task(self: Arc<Self>, t: models::Task) {
        let guid = t.task_guid.clone();
        // What runs is what the BBS stores, whatever the Perform carried.
        let Some(t) = self.stored_task(t).await else {
            self.release(&guid);
            return;
        };
        let started = self
            .bbs()
            .start_task(api::StartTaskRequest {
                task_guid: guid.clone(),
                cell_id: self.cfg.cell_id.clone(),
            })
            .await;
        match started {
            Ok(r) if r.get_ref().should_start => {}
            Ok(_) => {
                self.release(&guid);
                return;
            }
            Err(e) => {
                tracing::info!("start refused: {}", e.message());
                self.release(&guid);
                return;
            }
        }
        self.set_phase(&guid, Phase::Claimed);
        let req = self.task_request(&t);
        let log_guid = req.tags["log_guid"].clone();
        self.logs.register(&guid, &log_guid);
        self.logs.cell(&log_guid, "Creating container for task");
        let progress = self.logs.progress(&log_guid);
        match self.exec.create_with_progress(req, &progress).await {
            Ok(info) => {
                self.metrics.starts.inc();
                self.supervise_task(info).await;
            }
            Err(e) => {
                let reason = format!("failed to create container: {e:#}");
                self.logs.cell(&log_guid, &reason);
                self.complete(&guid, true, &reason, "").await;
                self.release(&guid);
            }
        }
    }

    async fn complete(&self, guid: &str, failed: bool, reason: &str, result: &str) {
        let r = self
            .bbs()
            .complete_task(api::CompleteTaskRequest {
                task_guid: guid.into(),
                cell_id: self.cfg.cell_id.clone(),
                failed,
                failure_reason: reason.into(),
                result: result.into(),
            })
            .await;
        if let Err(e) = r {
            tracing::info!(task_guid = guid, "completion refused: {}", e.message());
        }
    }

    async fn supervise_task(self: &Arc<Self>, info: ContainerInfo) {
        let guid = info.handle().to_string();
        let result_file = info
            .request
            .tags
            .get("result_file")
            .cloned()
            .unwrap_or_default();
        let log_guid = info
            .request
            .tags
            .get("log_guid")
            .cloned()
            .unwrap_or_default();
        let stop = match self.slots.lock().unwrap().get(&guid) {
            Some(s) => s.stop.clone(),
            None => return,
        };
        let mut offset = 0;
        let mut asked_to_stop = false;
        let mut signal = self.exec.event_signal(&guid);
        let tick = if signal.is_live() {
            EVENT_FALLBACK
        } else {
            EVENT_POLL
        };
        loop {
            tokio::select! {
                _ = stop.cancelled(), if !asked_to_stop => {
                    asked_to_stop = true;
                    self.logs.cell(&log_guid, "Cancelling task");
                    self.exec.stop(&guid);
                }
                _ = signal.changed() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            let (events, off) = self.exec.events(&guid, offset);
            offset = off;
            let end = events.into_iter().find_map(|e| match e {
                ShimEvent::Exited {
                    failed,
                    reason,
                    result,
                    ..
                } => Some((failed, reason, result)),
                ShimEvent::CreateFailed { reason } => Some((true, reason, None)),
                _ => None,
            });
            let Some((mut failed, mut reason, reported)) = end else {
                if !asked_to_stop && self.exec.shim_pid(&guid).is_none() {
                    // The shim died without a word (killed): the task failed.
                    let (events, _) = self.exec.events(&guid, offset);
                    if events.is_empty() {
                        self.complete(&guid, true, "the task's container vanished", "")
                            .await;
                        break;
                    }
                }
                continue;
            };
            if !asked_to_stop {
                let from_shim = reported.is_some();
                let mut result = reported.unwrap_or_default();
                if !failed && !result_file.is_empty() && !from_shim {
                    match self.exec.read_file(&guid, &result_file).await {
                        Ok(r) => result = r,
                        Err(e) => {
                            failed = true;
                            reason = format!("{e:#}");
                        }
                    }
                }
                self.logs.cell(
                    &log_guid,
                    if failed {
                        format!("Task failed: {reason}")
                    } else {
                        "Task completed".to_string()
                    },
                );
                self.complete(&guid, failed, &reason, &result).await;
            }
            break;
        }
        self.exec.destroy(&guid).await;
        self.release(&guid);
    }

    // ---- re-adoption, sync, events ------------------------------------------------------

    /// Takes back the containers a previous rep left running; destroys the dead ones.
    async fn readopt(self: &Arc<Self>) {
        for info in self.exec.on_disk() {
            let handle = info.handle().to_string();
            let alive = self.exec.shim_pid(&handle).is_some();
            let tags = &info.request.tags;
            let kind = match tags.get("kind").map(String::as_str) {
                Some("lrp") => {
                    let index = tags.get("index").and_then(|i| i.parse().ok()).unwrap_or(0);
                    Kind::Lrp {
                        process_guid: tags.get("process_guid").cloned().unwrap_or_default(),
                        index,
                        instance_guid: handle.clone(),
                    }
                }
                Some("task") => Kind::Task {
                    task_guid: handle.clone(),
                },
                _ => {
                    self.exec.destroy(&handle).await;
                    continue;
                }
            };
            // A Task that ended while no rep was there says how in its events: it is
            // supervised to its end (its result reported) like a live one.
            let ended_task = matches!(kind, Kind::Task { .. })
                && self.exec.events(&handle, 0).0.iter().any(|e| {
                    matches!(
                        e,
                        ShimEvent::Exited { stopped: false, .. } | ShimEvent::CreateFailed { .. }
                    )
                });
            if !alive && !ended_task {
                tracing::info!(handle, "reaping a container whose shim is gone");
                self.exec.destroy(&handle).await;
                continue;
            }
            if let Err(e) = self.exec.adopt(&info).await {
                tracing::warn!(handle, "cannot re-adopt: {e:#}; destroying it");
                self.exec.destroy(&handle).await;
                continue;
            }
            let log_guid = tags.get("log_guid").cloned().unwrap_or_default();
            self.logs.register(&handle, &log_guid);
            let slot = Slot {
                kind: kind.clone(),
                memory_mb: info.request.memory_mb,
                disk_mb: info.request.disk_mb,
                phase: Phase::Claimed,
                owned_since: Some(Instant::now()),
                stop: CancellationToken::new(),
                net_info: Some(self.net_info(&info)),
            };
            self.slots.lock().unwrap().insert(handle.clone(), slot);
            tracing::info!(handle, "re-adopted a running container");
            let rep = self.clone();
            match kind {
                Kind::Lrp {
                    process_guid,
                    index,
                    ..
                } => {
                    let d: models::DesiredLrp = tags
                        .get("desired")
                        .and_then(|s| serde_json::from_str(s).ok())
                        .unwrap_or_default();
                    let running = self.is_running_here(&process_guid, index, &handle).await;
                    if running {
                        self.set_phase(&handle, Phase::Running);
                    }
                    tokio::spawn(async move {
                        rep.supervise_lrp(info, d, index, running, Instant::now())
                            .await
                    });
                }
                Kind::Task { .. } => {
                    tokio::spawn(async move { rep.supervise_task(info).await });
                }
            }
        }
    }

    async fn is_running_here(&self, process_guid: &str, index: i32, instance_guid: &str) -> bool {
        let Ok(r) = self
            .bbs()
            .actual_lr_ps(api::ActualLrPsRequest {
                process_guid: process_guid.into(),
                index: Some(index),
                ..Default::default()
            })
            .await
        else {
            return false;
        };
        r.into_inner().actual_lrps.iter().any(|a| {
            a.state() == LrpState::Running
                && a.instance_key
                    .as_ref()
                    .is_some_and(|k| k.instance_guid == instance_guid)
        })
    }

    async fn sync_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_gc = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.sync_now.notified() => {}
                _ = tokio::time::sleep(self.cfg.sync_interval) => {}
            }
            if let Err(e) = self.sync().await {
                tracing::warn!("bulk sync failed: {}", e.message());
            }
            if let Err(e) = self.sync_volumes().await {
                tracing::warn!("volume sync failed: {}", e.message());
            }
            if last_gc.elapsed() >= LAYER_GC_EVERY {
                last_gc = Instant::now();
                self.exec.collect_layers(LAYER_KEEP).await;
            }
        }
    }

    /// One bulk sync: containers the BBS no longer gives this cell are stopped; records
    /// that say this cell runs something it has no container for are corrected.
    pub async fn sync(&self) -> Result<(), tonic::Status> {
        let listed_at = Instant::now();
        let mut bbs = self.bbs();
        let actuals = bbs
            .actual_lr_ps(api::ActualLrPsRequest {
                cell_id: self.cfg.cell_id.clone(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .actual_lrps;
        let tasks = bbs
            .tasks(api::TasksRequest {
                cell_id: self.cfg.cell_id.clone(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .tasks;
        let slots = self.snapshot();
        let owned_before_list = |s: &Slot| s.owned_since.is_some_and(|t| t < listed_at);
        let ours = |a: &models::ActualLrp, guid: &str| {
            a.instance_key
                .as_ref()
                .is_some_and(|k| k.instance_guid == guid && k.cell_id == self.cfg.cell_id)
        };
        for (handle, slot) in &slots {
            if !owned_before_list(slot) || slot.stop.is_cancelled() {
                continue;
            }
            let keep = match &slot.kind {
                Kind::Lrp { instance_guid, .. } => actuals.iter().any(|a| ours(a, instance_guid)),
                Kind::Task { task_guid } => tasks.iter().any(|t| {
                    &t.task_guid == task_guid
                        && t.state() == TaskState::Running
                        && t.cell_id == self.cfg.cell_id
                }),
            };
            if !keep {
                tracing::info!(
                    handle,
                    "the BBS no longer gives this cell {handle}: stopping it"
                );
                slot.stop.cancel();
            }
        }
        let held: std::collections::HashSet<String> =
            self.slots.lock().unwrap().keys().cloned().collect();
        for a in &actuals {
            let (Some(k), Some(ik)) = (&a.key, &a.instance_key) else {
                continue;
            };
            if ik.cell_id != self.cfg.cell_id
                || held.contains(&ik.instance_guid)
                || a.presence() == Presence::Evacuating
                || a.state() == LrpState::Crashed
                || a.state() == LrpState::Unclaimed
            {
                continue;
            }
            tracing::info!(process_guid = %k.process_guid, index = k.index, "record without a container: removing it");
            let _ = bbs
                .remove_actual_lrp(api::RemoveActualLrpRequest {
                    key: Some(api::ActualLrpRef {
                        process_guid: k.process_guid.clone(),
                        index: k.index,
                    }),
                    instance_key: Some(ik.clone()),
                })
                .await;
        }
        for t in &tasks {
            if t.state() == TaskState::Running
                && t.cell_id == self.cfg.cell_id
                && !held.contains(&t.task_guid)
            {
                let _ = bbs
                    .fail_task(api::FailTaskRequest {
                        task_guid: t.task_guid.clone(),
                        failure_reason: "the cell lost the task's container".into(),
                    })
                    .await;
            }
        }
        Ok(())
    }

    /// Triggers a sync whenever an event touches this cell's work.
    async fn follow_events(self: Arc<Self>, shutdown: CancellationToken) {
        use lattice_specs::events::event::Event as E;
        loop {
            let stream = self.bbs().subscribe_events(api::SubscribeRequest {}).await;
            if let Ok(stream) = stream {
                let mut stream = stream.into_inner();
                // Whatever happened while we were not listening.
                self.sync_now.notify_one();
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = stream.message() => m,
                    };
                    let Ok(Some(ev)) = msg else { break };
                    let relevant = match &ev.event {
                        Some(E::ActualLrpRemoved(r)) => self.holds_actual(r.actual_lrp.as_ref()),
                        Some(E::ActualLrpChanged(c)) => self.holds_actual(c.before.as_ref()),
                        Some(E::TaskChanged(c)) => c
                            .before
                            .as_ref()
                            .is_some_and(|t| self.slots.lock().unwrap().contains_key(&t.task_guid)),
                        // Not the use this cell itself reports: only what asks it to act.
                        Some(E::VolumeChanged(v)) => {
                            let key = |x: &models::Volume| (x.state, x.size_bytes);
                            v.after
                                .as_ref()
                                .or(v.before.as_ref())
                                .is_some_and(|x| x.cell_id == self.cfg.cell_id)
                                && v.before.as_ref().map(key) != v.after.as_ref().map(key)
                        }
                        Some(E::TaskRemoved(r)) => r
                            .task
                            .as_ref()
                            .is_some_and(|t| self.slots.lock().unwrap().contains_key(&t.task_guid)),
                        _ => false,
                    };
                    if relevant {
                        self.sync_now.notify_one();
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn holds_actual(&self, a: Option<&models::ActualLrp>) -> bool {
        a.and_then(|a| a.instance_key.as_ref())
            .is_some_and(|k| self.slots.lock().unwrap().contains_key(&k.instance_guid))
    }

    // ---- evacuation ----------------------------------------------------------------

    /// Hands this cell's instances over (Diego's evacuation): no new work is taken;
    /// each running instance is marked EVACUATING and keeps serving until its
    /// replacement runs elsewhere, then is stopped. Returns when the cell is empty of
    /// LRPs (tasks are left to finish) or the evacuation timeout passes.
    pub async fn evacuate(self: &Arc<Self>) {
        self.evacuating.store(true, Ordering::SeqCst);
        tracing::info!(cell = %self.cfg.cell_id, "evacuating");
        let deadline = Instant::now() + self.cfg.evacuation_timeout;
        loop {
            let (lrps, tasks): (Vec<_>, Vec<_>) = self
                .snapshot()
                .into_iter()
                .partition(|(_, s)| matches!(s.kind, Kind::Lrp { .. }));
            let tasks_left = !tasks.is_empty();
            if (lrps.is_empty() && !tasks_left) || Instant::now() > deadline {
                break;
            }
            for (handle, slot) in lrps {
                let Kind::Lrp {
                    process_guid,
                    index,
                    instance_guid,
                } = &slot.kind
                else {
                    continue;
                };
                let (key, ik) = self.keys(process_guid, *index, instance_guid);
                let req = api::EvacuateRequest {
                    key: Some(key),
                    instance_key: Some(ik),
                    net_info: slot.net_info.clone(),
                    error_message: String::new(),
                };
                let keep = match slot.phase {
                    Phase::Running => self.bbs().evacuate_running_actual_lrp(req).await,
                    _ => self.bbs().evacuate_claimed_actual_lrp(req).await,
                };
                let keep = keep.map(|r| r.into_inner().keep_container).unwrap_or(false);
                if !keep {
                    slot.stop.cancel();
                    tracing::info!(handle, "evacuated");
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Rep {
    /// Stops everything this cell runs, for a cluster that is shutting down as a whole
    /// (`lattice up`): no new work is taken, every instance is stopped and its record
    /// removed (the converger starts it again when the cluster comes back), every task
    /// fails with "the cell stopped". Returns once every container is gone, or after
    /// the grace period and some.
    pub async fn stop_all(self: &Arc<Self>) {
        self.evacuating.store(true, Ordering::SeqCst);
        for (handle, slot) in self.snapshot() {
            if matches!(slot.kind, Kind::Task { .. }) {
                self.complete(&handle, true, "the cell stopped while the task ran", "")
                    .await;
            }
            slot.stop.cancel();
        }
        let deadline = Instant::now() + self.exec.config().grace + Duration::from_secs(5);
        while !self.slots.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(v) = self.exec.volumes() {
            let v = v.clone();
            let _ = tokio::task::spawn_blocking(move || v.close()).await;
        }
    }

    /// The executor's part of stopping (see [`Executor::close`]): with no container
    /// left, the cell's bridge, firewall and containers' filesystem go too.
    pub fn close_executor(&self) {
        self.exec.close();
    }

    /// Publishes the pool's and the volumes' figures, warning (in the cell's log, which
    /// `ltc debug-logs` shows) when the pool passes 80%.
    async fn report_pool(&self, vols: &Arc<crate::volume::Volumes>) {
        let v = vols.clone();
        let Ok(Ok((pool, list))) =
            tokio::task::spawn_blocking(move || anyhow::Ok((v.pool()?, v.list()?))).await
        else {
            return;
        };
        let m = &self.metrics;
        m.volume_pool
            .with_label_values(&["size"])
            .set(pool.size_bytes as i64);
        m.volume_pool
            .with_label_values(&["used"])
            .set(pool.used_bytes as i64);
        m.volumes.reset();
        for v in &list {
            m.volumes
                .with_label_values(&[&v.name, "size"])
                .set(v.size_bytes as i64);
            m.volumes
                .with_label_values(&[&v.name, "used"])
                .set(v.used_bytes as i64);
        }
        if let Some(w) = &pool.warning {
            tracing::warn!(cell = %self.cfg.cell_id, "{w}");
        }
    }
}

/// How often the image layer cache is collected, and how long an unused layer is kept.
const LAYER_GC_EVERY: Duration = Duration::from_secs(600);
/// How often a container's events are read when the shim's writes do not wake us.
const EVENT_POLL: Duration = Duration::from_millis(20);
/// With wakes, a read this often anyway (a shim that died without a word).
const EVENT_FALLBACK: Duration = Duration::from_secs(1);
const LAYER_KEEP: Duration = Duration::from_secs(3600);

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
#[derive(Clone)]
pub struct RepGrpc(pub Arc<Rep>);

#[tonic::async_trait]
impl rep_api::rep_server::Rep for RepGrpc {
    async fn state(
        &self,
        _req: tonic::Request<rep_api::StateRequest>,
    ) -> Result<tonic::Response<CellState>, tonic::Status> {
        Ok(tonic::Response::new(self.0.state()))
    }

    async fn perform(
        &self,
        req: tonic::Request<Work>,
    ) -> Result<tonic::Response<PerformResponse>, tonic::Status> {
        let failed = self.0.perform(req.into_inner());
        Ok(tonic::Response::new(PerformResponse {
            failed: Some(failed),
        }))
    }
}
