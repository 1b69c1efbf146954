//! Simulated cells for tests and benchmarks: each registers with the BBS
//! under a real lease, answers State and Perform in-process, and claims and
//! starts the work it is given through the BBS as a rep would — without
//! running containers. Stopping its heartbeat makes it vanish like a dead cell.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lattice_bbs_client::{BbsError, CellBbs};
use lattice_specs::models::{
    ActualLrpInstanceKey, ActualLrpNetInfo, CellCapacity, CellPresence, PortMapping, Provider,
};
use lattice_specs::rep_api::{self, CellState, LrpOnCell, Work};

use crate::auction::Resources;
use crate::cells::{CellClient, CellDirectory};

/// What every simulated cell offers: the busybox preloaded rootfs and docker images.
fn providers() -> Vec<Provider> {
    vec![
        Provider {
            name: "preloaded".into(),
            properties: vec!["busybox".into()],
        },
        Provider {
            name: "docker".into(),
            properties: vec![],
        },
    ]
}

#[derive(Default)]
struct Held {
    lrps: Vec<LrpOnCell>,
    tasks: Vec<(String, i32, i32)>,
}

pub struct SimCell {
    pub id: String,
    zone: String,
    total: Resources,
    bbs: Arc<dyn CellBbs>,
    held: Mutex<Held>,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// When set, `state` never answers (a hung cell).
    pub hang: std::sync::atomic::AtomicBool,
    /// When set, `perform` hands all work back (a cell that refuses).
    pub refuse: std::sync::atomic::AtomicBool,
}

impl SimCell {
    /// Register a cell with `total` resources under a lease of `ttl`, renewed until `stop_heartbeat`.
    pub async fn start(
        bbs: Arc<dyn CellBbs>,
        id: &str,
        zone: &str,
        total: Resources,
        ttl: Duration,
    ) -> Arc<SimCell> {
        let lease = bbs
            .grant_lease(ttl.as_secs().max(1) as i64)
            .await
            .expect("lease for a simulated cell");
        let presence = CellPresence {
            cell_id: id.into(),
            rep_address: format!("sim://{id}"),
            zone: zone.into(),
            capacity: Some(CellCapacity {
                memory_mb: total.memory_mb,
                disk_mb: total.disk_mb,
                containers: total.containers,
            }),
            rootfs_providers: providers(),
            volume_drivers: vec!["local".into()],
            ..Default::default()
        };
        bbs.set_cell_presence(&presence, lease)
            .await
            .expect("registering a simulated cell");
        let hb_bbs = bbs.clone();
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let _ = hb_bbs.keep_alive_lease(lease).await;
            }
        });
        Arc::new(SimCell {
            id: id.into(),
            zone: zone.into(),
            total,
            bbs,
            held: Mutex::new(Held::default()),
            heartbeat: Mutex::new(Some(heartbeat)),
            hang: Default::default(),
            refuse: Default::default(),
        })
    }

    /// The cell dies: its lease is no longer renewed and expires.
    pub fn stop_heartbeat(&self) {
        if let Some(h) = self.heartbeat.lock().unwrap().take() {
            h.abort();
        }
    }

    /// (process_guid, index) of the instances this cell started.
    pub fn instances(&self) -> Vec<(String, i32)> {
        self.held
            .lock()
            .unwrap()
            .lrps
            .iter()
            .map(|l| (l.process_guid.clone(), l.index))
            .collect()
    }

    pub fn task_guids(&self) -> Vec<String> {
        self.held
            .lock()
            .unwrap()
            .tasks
            .iter()
            .map(|t| t.0.clone())
            .collect()
    }

    /// A task it runs ends (successfully): reported to the BBS, its room freed.
    pub async fn finish_task(&self, task_guid: &str) -> Result<(), BbsError> {
        self.held
            .lock()
            .unwrap()
            .tasks
            .retain(|(g, _, _)| g != task_guid);
        self.bbs
            .complete_task(task_guid, &self.id, false, "", "")
            .await
    }

    fn available(&self) -> Resources {
        let h = self.held.lock().unwrap();
        let mut a = self.total;
        for l in &h.lrps {
            a.memory_mb -= l.memory_mb;
            a.disk_mb -= l.disk_mb;
            a.containers -= 1;
        }
        for (_, mem, disk) in &h.tasks {
            a.memory_mb -= mem;
            a.disk_mb -= disk;
            a.containers -= 1;
        }
        a
    }

    fn reserve(&self, mem: i32, disk: i32) -> bool {
        let a = self.available();
        a.memory_mb >= mem && a.disk_mb >= disk && a.containers >= 1
    }
}

impl Drop for SimCell {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

#[async_trait]
impl CellClient for SimCell {
    async fn state(&self) -> anyhow::Result<CellState> {
        if self.hang.load(std::sync::atomic::Ordering::Relaxed) {
            futures::future::pending::<()>().await;
        }
        let r = |x: Resources| {
            Some(rep_api::Resources {
                memory_mb: x.memory_mb,
                disk_mb: x.disk_mb,
                containers: x.containers,
            })
        };
        Ok(CellState {
            cell_id: self.id.clone(),
            zone: self.zone.clone(),
            total: r(self.total),
            available: r(self.available()),
            rootfs_providers: providers(),
            volume_drivers: vec!["local".into()],
            lrps: self.held.lock().unwrap().lrps.clone(),
            ..Default::default()
        })
    }

    async fn perform(&self, work: Work) -> anyhow::Result<Work> {
        if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(work);
        }
        let mut failed = Work::default();
        for l in work.lrps {
            let d = l.desired.clone().unwrap_or_default();
            if !self.reserve(d.memory_mb, d.disk_mb) {
                failed.lrps.push(l);
                continue;
            }
            let ik = ActualLrpInstanceKey {
                instance_guid: uuid::Uuid::new_v4().to_string(),
                cell_id: self.id.clone(),
            };
            let net = ActualLrpNetInfo {
                address: "127.0.0.1".into(),
                ports: d
                    .ports
                    .iter()
                    .map(|p| PortMapping {
                        container_port: *p,
                        host_port: 61000,
                    })
                    .collect(),
                ..Default::default()
            };
            // Claimed and started in a task of its own: like a real rep, the cell
            // carries on with work it took when the brain that sent it dies meanwhile
            // (a test aborting the brain's task must not leave an instance CLAIMED).
            let bbs = self.bbs.clone();
            let (guid, index, generation) = (d.process_guid.clone(), l.index, d.generation);
            let placed = tokio::spawn(async move {
                if bbs
                    .claim_actual_lrp(&guid, index, &ik, generation)
                    .await
                    .is_err()
                {
                    return false; // someone else has it: nothing to run here
                }
                let _ = bbs.start_actual_lrp(&guid, index, &ik, &net).await;
                true
            });
            if placed.await.unwrap_or(false) {
                self.held.lock().unwrap().lrps.push(LrpOnCell {
                    process_guid: d.process_guid.clone(),
                    index: l.index,
                    memory_mb: d.memory_mb,
                    disk_mb: d.disk_mb,
                });
            }
        }
        for t in work.tasks {
            let task = t.task.clone().unwrap_or_default();
            let def = task.definition.clone().unwrap_or_default();
            if !self.reserve(def.memory_mb, def.disk_mb) {
                failed.tasks.push(t);
                continue;
            }
            if let Ok(should_start) = self.bbs.start_task(&task.task_guid, &self.id).await {
                if should_start {
                    self.held.lock().unwrap().tasks.push((
                        task.task_guid,
                        def.memory_mb,
                        def.disk_mb,
                    ));
                }
            }
        }
        Ok(failed)
    }
}

/// A directory of simulated cells, by cell id.
#[derive(Default)]
pub struct SimCells {
    cells: Mutex<HashMap<String, Arc<SimCell>>>,
}

struct Unreachable(String);

#[async_trait]
impl CellClient for Unreachable {
    async fn state(&self) -> anyhow::Result<CellState> {
        anyhow::bail!("no simulated cell {}", self.0)
    }
    async fn perform(&self, _: Work) -> anyhow::Result<Work> {
        anyhow::bail!("no simulated cell {}", self.0)
    }
}

impl SimCells {
    pub fn add(&self, cell: Arc<SimCell>) {
        self.cells.lock().unwrap().insert(cell.id.clone(), cell);
    }
    pub fn get(&self, id: &str) -> Option<Arc<SimCell>> {
        self.cells.lock().unwrap().get(id).cloned()
    }
}

impl CellDirectory for SimCells {
    fn client(&self, cell: &CellPresence) -> Arc<dyn CellClient> {
        match self.get(&cell.cell_id) {
            Some(c) => c,
            None => Arc::new(Unreachable(cell.cell_id.clone())),
        }
    }
}
