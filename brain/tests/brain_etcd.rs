//! The brain against a real etcd and BBS, with simulated cells that claim and
//! start work through the BBS like reps.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_bbs::store::etcd::EtcdStore;
use lattice_bbs::testing::EtcdServer;
use lattice_bbs_client::{GrpcBbs as Bbs, Reads};
use lattice_brain::auction::Resources;
use lattice_brain::auctioneer::AuctioneerConfig;
use lattice_brain::converger::ConvergeConfig;
use lattice_brain::leader::{self, BrainConfig};
use lattice_brain::testing::{SimCell, SimCells};
use lattice_specs::bbs_api::*;
use lattice_specs::models::actual_lrp::State;
use lattice_specs::models::*;
use lattice_specs::testing::{desired_lrp, task_definition};
use tokio::sync::watch;

struct Cluster {
    _etcd: EtcdServer,
    _bbs: RunningBbs,
    bbs: Bbs,
    /// The BBS database over the same store (what the public API calls).
    db: lattice_bbs::db::Db,
    cells: Arc<SimCells>,
}

async fn cluster() -> Cluster {
    let etcd = EtcdServer::start();
    let store = Arc::new(
        EtcdStore::connect(&[etcd.endpoint()], Duration::from_secs(3))
            .await
            .unwrap(),
    );
    let cfg = BbsConfig::loopback(
        StoreUrl::Etcd(vec![etcd.endpoint()]),
        Duration::from_secs(3),
    );
    let db = lattice_bbs::db::Db::new(store.clone());
    let running = server::start_with_store(store, cfg).await.unwrap();
    let bbs = Bbs::connect_lazy(&running.grpc_addr.to_string()).unwrap();
    Cluster {
        _etcd: etcd,
        _bbs: running,
        bbs,
        db,
        cells: Arc::new(SimCells::default()),
    }
}

const TTL: Duration = Duration::from_secs(2);

impl Cluster {
    async fn add_cell(&self, id: &str, zone: &str, memory_mb: i32) -> Arc<SimCell> {
        self.add_cell_with(id, zone, memory_mb, 100).await
    }

    async fn add_cell_with(
        &self,
        id: &str,
        zone: &str,
        memory_mb: i32,
        containers: i32,
    ) -> Arc<SimCell> {
        let c = SimCell::start(
            Arc::new(self.bbs.clone()),
            id,
            zone,
            Resources {
                memory_mb,
                disk_mb: 100_000,
                containers,
            },
            TTL,
        )
        .await;
        self.cells.add(c.clone());
        c
    }

    async fn submit_task(&self, guid: &str) {
        let def = TaskDefinition {
            memory_mb: 16,
            ..task_definition("/bin/true")
        };
        self.bbs
            .client()
            .desire_task(DesireTaskRequest {
                task_guid: guid.into(),
                domain: "test".into(),
                definition: Some(def),
            })
            .await
            .unwrap();
    }

    async fn task(&self, guid: &str) -> Task {
        self.bbs
            .client()
            .task_by_guid(TaskGuidRequest {
                task_guid: guid.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
    }

    /// Waits until `guid` is in `state`; returns it.
    async fn task_in(&self, guid: &str, state: task::State, within: Duration) -> Task {
        let deadline = Instant::now() + within;
        loop {
            let t = self.task(guid).await;
            if t.state() == state {
                return t;
            }
            assert!(Instant::now() < deadline, "{guid} never {state:?}: {t:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn brain(
        &self,
        id: &str,
        tweak: impl FnOnce(&mut BrainConfig),
    ) -> (tokio::task::JoinHandle<()>, watch::Sender<bool>) {
        let mut cfg = BrainConfig {
            id: id.into(),
            lock_ttl: TTL,
            convergence_interval: Duration::from_secs(1),
            auctioneer: AuctioneerConfig {
                fetch_timeout: Duration::from_millis(500),
                ..Default::default()
            },
            converge: ConvergeConfig::default(),
            leader: Default::default(),
        };
        tweak(&mut cfg);
        let (tx, rx) = watch::channel(false);
        (
            tokio::spawn(leader::run(
                Arc::new(self.bbs.clone()),
                self.cells.clone(),
                cfg,
                rx,
            )),
            tx,
        )
    }

    async fn desire(&self, guid: &str, instances: i32, memory_mb: i32) {
        let d = DesiredLrp {
            memory_mb,
            ..desired_lrp(guid, instances)
        };
        self.bbs
            .client()
            .desire_lrp(DesireLrpRequest {
                desired_lrp: Some(d),
            })
            .await
            .unwrap();
    }

    async fn actuals(&self, guid: &str) -> Vec<ActualLrp> {
        let r = ActualLrPsRequest {
            process_guid: guid.into(),
            ..Default::default()
        };
        self.bbs
            .client()
            .actual_lr_ps(r)
            .await
            .unwrap()
            .into_inner()
            .actual_lrps
    }

    /// Wait until every instance of `guid` is RUNNING; returns their cells.
    /// Only ordinary records count (not suspect or evacuating copies).
    async fn running_on(&self, guid: &str, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let mut a = self.actuals(guid).await;
            a.retain(|a| a.presence() == actual_lrp::Presence::Ordinary);
            let running: Vec<String> = a
                .iter()
                .filter(|a| a.state() == State::Running)
                .map(|a| a.instance_key.clone().unwrap_or_default().cell_id)
                .collect();
            if running.len() == n && a.len() == n {
                return running;
            }
            assert!(
                Instant::now() < deadline,
                "{guid}: wanted {n} RUNNING, have {a:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until at least `n` instances of `guid` are RUNNING; returns their cells.
    async fn running_on_any(&self, guid: &str, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let running: Vec<String> = self
                .actuals(guid)
                .await
                .iter()
                .filter(|a| {
                    a.state() == State::Running && a.presence() == actual_lrp::Presence::Ordinary
                })
                .map(|a| a.instance_key.clone().unwrap_or_default().cell_id)
                .collect();
            if running.len() >= n {
                return running;
            }
            assert!(Instant::now() < deadline, "{guid}: fewer than {n} RUNNING");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn lock_holder(&self) -> String {
        let mut c = self.bbs.client();
        let lease = c
            .grant_lease(GrantLeaseRequest { ttl_seconds: 5 })
            .await
            .unwrap()
            .into_inner()
            .lease_id;
        let r = c
            .acquire_lock(AcquireLockRequest {
                key: "brain".into(),
                owner: "probe".into(),
                lease_id: lease,
            })
            .await
            .unwrap()
            .into_inner();
        c.revoke_lease(LeaseRequest { lease_id: lease })
            .await
            .unwrap();
        assert!(!r.acquired, "no brain holds the lock");
        r.owner
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_is_placed_spread_and_a_standby_takes_over_when_the_active_brain_dies() {
    let c = cluster().await;
    for (id, zone) in [("cell-a", "z1"), ("cell-b", "z2"), ("cell-c", "z3")] {
        c.add_cell(id, zone, 4096).await;
    }
    let (brain_a, _stop_a) = c.brain("brain-a", |_| {});
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_brain_b, _stop_b) = c.brain("brain-b", |_| {});

    c.desire("web", 3, 256).await;
    let cells: HashSet<String> = c
        .running_on("web", 3, Duration::from_secs(10))
        .await
        .into_iter()
        .collect();
    assert_eq!(cells.len(), 3, "three instances on three cells: {cells:?}");
    assert_eq!(c.lock_holder().await, "brain-a");

    // A crash of a fresh instance restarts it at once.
    let a = c
        .actuals("web")
        .await
        .into_iter()
        .find(|a| a.key.as_ref().unwrap().index == 1)
        .unwrap();
    c.bbs
        .client()
        .crash_actual_lrp(CrashActualLrpRequest {
            key: Some(ActualLrpRef {
                process_guid: "web".into(),
                index: 1,
            }),
            instance_key: a.instance_key.clone(),
            error_message: "exited with status 2".into(),
        })
        .await
        .unwrap();
    c.running_on("web", 3, Duration::from_secs(10)).await;
    let restarted = c
        .actuals("web")
        .await
        .into_iter()
        .find(|a| a.key.as_ref().unwrap().index == 1)
        .unwrap();
    assert_eq!(
        (restarted.crash_count, restarted.crash_reason.as_str()),
        (1, "exited with status 2")
    );

    // Kill the active brain: no goodbye, its lease just stops being renewed.
    brain_a.abort();
    let killed_at = Instant::now();
    c.desire("api", 2, 256).await;
    c.running_on("api", 2, Duration::from_secs(15)).await;
    let took = killed_at.elapsed();
    assert_eq!(c.lock_holder().await, "brain-b");
    assert!(
        took < Duration::from_secs(10),
        "the standby placed new work {took:?} after the active brain died"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_a_cell_whose_lease_expires_are_placed_elsewhere() {
    let c = cluster().await;
    let a = c.add_cell("cell-a", "z1", 4096).await;
    c.add_cell("cell-b", "z1", 4096).await;
    let (_brain, _stop) = c.brain("brain", |_| {});
    c.desire("web", 2, 256).await;
    let cells = c.running_on("web", 2, Duration::from_secs(10)).await;
    assert!(
        cells.contains(&"cell-a".to_string()) && cells.contains(&"cell-b".to_string()),
        "{cells:?}"
    );

    a.stop_heartbeat();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let cells = c.running_on("web", 2, Duration::from_secs(15)).await;
        if cells.iter().all(|c| c == "cell-b") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "instances were not re-placed off the dead cell: {cells:?}"
        );
        // Until the replacement runs, the lost instance stays listed as SUSPECT.
        let suspects = c
            .actuals("web")
            .await
            .into_iter()
            .filter(|a| a.presence() == actual_lrp::Presence::Suspect)
            .count();
        assert!(suspects <= 1, "{suspects} suspects");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once the replacement runs, the suspect copy goes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c
        .actuals("web")
        .await
        .iter()
        .any(|a| a.presence() != actual_lrp::Presence::Ordinary)
    {
        assert!(
            Instant::now() < deadline,
            "the suspect copy was never removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_a_cell_refuses_is_retried_then_failed_with_a_reason() {
    let c = cluster().await;
    let stubborn = c.add_cell("cell-stubborn", "z1", 4096).await;
    stubborn
        .refuse
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (_brain, _stop) = c.brain("brain", |_| {});
    c.desire("web", 1, 256).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = c.actuals("web").await;
        if !a[0].placement_error.is_empty() {
            assert_eq!(a[0].placement_error, "cell cell-stubborn refused the work");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refused work never failed: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A willing cell appears and the LRP scales up: the new instance is first
    // offered to the stubborn cell (it sorts first), then retried elsewhere.
    c.add_cell("cell-willing", "z1", 4096).await;
    let update = UpdateDesiredLrpRequest {
        process_guid: "web".into(),
        update: Some(DesiredLrpUpdate {
            instances: Some(2),
            ..Default::default()
        }),
    };
    c.bbs.client().update_desired_lrp(update).await.unwrap();
    // (Index 0 waits with a backoff meanwhile, and may land on the willing cell too.)
    let cells = c.running_on_any("web", 1, Duration::from_secs(10)).await;
    assert!(cells.iter().all(|c| c == "cell-willing"), "{cells:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_cell_is_skipped_and_unplaceable_work_says_why() {
    let c = cluster().await;
    let hung = c.add_cell("cell-hung", "z1", 100_000).await;
    hung.hang.store(true, std::sync::atomic::Ordering::Relaxed);
    c.add_cell("cell-ok", "z1", 1024).await;
    let (_brain, _stop) = c.brain("brain", |cfg| {
        cfg.converge.kick_task = Duration::from_secs(1)
    });

    // The hung cell never answers: placing the instance at all shows the auction went
    // on without it (the deadlines below are waits for a loaded machine, not timings).
    c.desire("web", 1, 256).await;
    assert_eq!(
        c.running_on("web", 1, Duration::from_secs(30)).await,
        ["cell-ok"]
    );

    c.desire("huge", 1, 4096).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = c.actuals("huge").await;
        if a[0].placement_error == "insufficient resources: memory" {
            assert_eq!(a[0].state(), State::Unclaimed);
            break;
        }
        assert!(Instant::now() < deadline, "no placement error: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let def = TaskDefinition {
        placement_tags: vec!["gpu".into()],
        ..task_definition("/bin/true")
    };
    c.bbs
        .client()
        .desire_task(DesireTaskRequest {
            task_guid: "needs-gpu".into(),
            domain: "test".into(),
            definition: Some(def),
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let t = c
            .bbs
            .client()
            .task_by_guid(TaskGuidRequest {
                task_guid: "needs-gpu".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        if t.failed {
            assert_eq!(t.rejection_count, 3, "rejected three times, then failed");
            assert_eq!(
                t.failure_reason,
                "found no compatible cell with placement tag \"gpu\""
            );
            break;
        }
        assert!(Instant::now() < deadline, "task never failed: {t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 27 item 16: Tasks that do not fit *now* stay PENDING, untouched (no
/// rejection counted), are placed once room frees up, and fail for lack of room only
/// at the pending timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_without_room_wait_pending_until_room_frees_or_the_pending_timeout() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("lattice_brain=debug")
        .with_test_writer()
        .try_init();
    let c = cluster().await;
    let cell = c.add_cell_with("cell-small", "z1", 4096, 1).await;
    let pending_timeout = Duration::from_secs(12);
    let (_brain, _stop) = c.brain("brain", |cfg| {
        // Re-sent to the auction at every convergence: the old brain rejected them
        // each time and failed them after three rejections, within seconds.
        cfg.converge.kick_task = Duration::from_millis(200);
        cfg.converge.expire_pending_task = pending_timeout;
    });
    c.submit_task("first").await;
    c.task_in("first", task::State::Running, Duration::from_secs(10))
        .await;
    assert_eq!(cell.task_guids(), ["first"]);
    for guid in ["second", "third"] {
        c.submit_task(guid).await;
        // Distinct creation times: the older waiting task gets the room first.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The cell is full: the others wait, PENDING, through several auctions and
    // convergences, with nothing counted against them.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        for guid in ["second", "third"] {
            let t = c.task(guid).await;
            assert_eq!(
                (t.state(), t.rejection_count, t.failed),
                (task::State::Pending, 0, false),
                "work without room must wait: {t:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Room frees up: the oldest waiting task takes it.
    cell.finish_task("first").await.unwrap();
    let second = c
        .task_in("second", task::State::Running, Duration::from_secs(10))
        .await;
    assert_eq!(second.cell_id, "cell-small");

    // The last one never gets room: it fails at the pending timeout, not before.
    let deadline = Instant::now() + Duration::from_secs(20);
    let third = loop {
        let t = c.task("third").await;
        if t.state() != task::State::Pending {
            break t;
        }
        assert!(Instant::now() < deadline, "never failed: {t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(third.failed, "{third:?}");
    assert_eq!(third.rejection_count, 0, "{third:?}");
    assert!(
        third.failure_reason.starts_with(&format!(
            "not started within {} s",
            pending_timeout.as_secs()
        )),
        "{third:?}"
    );
    assert!(
        third.updated_at - third.created_at >= pending_timeout.as_nanos() as i64,
        "failed before the pending timeout: {third:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_keeps_every_index_serving_and_a_new_brain_finishes_it() {
    let c = cluster().await;
    c.add_cell("cell-a", "z1", 4096).await;
    c.add_cell("cell-b", "z2", 4096).await;
    let (brain_a, _stop_a) = c.brain("brain-a", |_| {});
    c.desire("web", 3, 64).await;
    c.running_on("web", 3, Duration::from_secs(10)).await;
    let (_brain_b, _stop_b) = c.brain("brain-b", |_| {});

    let mut next = DesiredLrp {
        memory_mb: 64,
        ..desired_lrp("web", 3)
    };
    next.env.push(EnvironmentVariable {
        name: "VERSION".into(),
        value: "2".into(),
    });
    let strategy = RolloutStrategy {
        max_surge: 1,
        max_unavailable: 0,
        canary: 0,
    };
    let (app, made) =
        c.db.create_generation("web", next, strategy, "test")
            .await
            .unwrap();
    assert!(made && app.generation == 2, "{app:?}");

    // Every listing shows each index served; the active brain dies once one
    // index runs the new generation, and the standby finishes the update.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut killed = false;
    loop {
        let all = c.actuals("web").await;
        for i in 0..3 {
            let served = all.iter().any(|a| {
                a.key.as_ref().unwrap().index == i && a.state() == State::Running && !a.draining
            });
            assert!(served, "index {i} had no serving instance: {all:?}");
        }
        let updated = all
            .iter()
            .filter(|a| {
                a.presence() == actual_lrp::Presence::Ordinary
                    && a.state() == State::Running
                    && a.generation == 2
            })
            .count();
        if !killed && updated >= 1 {
            brain_a.abort();
            killed = true;
        }
        let d = c.bbs.desired_lrp("web").await.unwrap();
        if d.deployment.as_ref().unwrap().state() == deployment::State::Succeeded {
            break;
        }
        assert!(Instant::now() < deadline, "not done: {d:?}\n{all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(killed);
    let all = c.actuals("web").await;
    assert_eq!(all.len(), 3, "no replaced copy left: {all:?}");
    assert!(all
        .iter()
        .all(|a| a.generation == 2 && a.state() == State::Running));
    assert_eq!(c.lock_holder().await, "brain-b");
}

/// A periodic Task every 5 s through the real BBS, brains and a simulated cell: each
/// slot makes at most one run (`NAME-SLOT`, 5 s apart, no duplicate) while the active
/// brain is killed and the standby takes over, and runs go on after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_task_runs_once_per_slot_across_a_brain_failover() {
    let c = cluster().await;
    let cell = c.add_cell("cell-a", "z1", 4096).await;
    let s = Schedule {
        name: "tick".into(),
        every: "5s".into(),
        keep: 10,
        domain: "test".into(),
        task: Some(TaskDefinition {
            memory_mb: 16,
            ..task_definition("/bin/true")
        }),
        ..Default::default()
    };
    c.db.create_schedule(s).await.unwrap();
    let (brain_a, _stop_a) = c.brain("brain-a", |_| {});
    let (_brain_b, _stop_b) = c.brain("brain-b", |_| {});

    let runs = || async {
        let mut t = c.bbs.tasks(&Default::default()).await.unwrap();
        t.retain(|t| t.schedule == "tick");
        t.sort_by(|a, b| a.task_guid.cmp(&b.task_guid));
        t
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed = false;
    loop {
        // The cell finishes what it runs at once.
        for guid in cell.task_guids() {
            cell.finish_task(&guid).await.unwrap();
        }
        let done = runs().await;
        let completed = done
            .iter()
            .filter(|t| t.state() == task::State::Completed)
            .count();
        if !killed && completed >= 1 {
            brain_a.abort();
            killed = true;
        }
        if killed && completed >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "runs: {done:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.lock_holder().await, "brain-b");
    // Every run is named after a slot on the 5 s grid; the schedule's latest slot is
    // the newest run's (or a later one).
    let labels: Vec<String> = runs()
        .await
        .into_iter()
        .map(|t| t.task_guid.strip_prefix("tick-").unwrap().to_string())
        .collect();
    for l in &labels {
        let secs: u32 = l[l.len() - 2..].parse().unwrap();
        assert_eq!(secs % 5, 0, "{labels:?}");
    }
    let s = c.db.schedule("tick").await.unwrap();
    assert!(s.last_slot >= *labels.last().unwrap(), "{s:?} {labels:?}");
}
