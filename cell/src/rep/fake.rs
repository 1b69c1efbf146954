//! An in-memory [`Runtime`] for the rep's unit tests: containers are records, events
//! are what the test says, and every call that acts on a container is recorded. And
//! reps over it: with a BBS that refuses every connection, or over a `FakeBbs`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lattice_bbs_client::fake::FakeBbs;
use lattice_bbs_client::GrpcBbs;
use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::models;

use super::fixtures::CELL;
use super::{Rep, RepConfig, Runtime};
use crate::executor::{ContainerInfo, ContainerRequest};
use crate::network::NetworkConfig;
use crate::rootfs::Providers;
use crate::shim::ShimEvent;
use crate::volume::VolumeDriver;
use crate::watch::{EventSignal, EventWatch};

/// A call the rep made on a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Create(String),
    Check(String),
    Stop(String),
    Destroy(String),
    Adopt(String),
    ReadFile(String, String),
}

/// The fake's containers and what happened to them.
#[derive(Default)]
struct State {
    on_disk: Vec<ContainerInfo>,
    alive: HashSet<String>,
    events: HashMap<String, Vec<ShimEvent>>,
    files: HashMap<(String, String), String>,
    refuse_adopt: HashSet<String>,
    calls: Vec<Call>,
}

pub struct FakeRuntime {
    network: NetworkConfig,
    providers: Providers,
    /// Never watching anything: its signals are not live (the rep polls).
    watch: EventWatch,
    state: Mutex<State>,
}

impl FakeRuntime {
    pub fn new() -> Arc<FakeRuntime> {
        Arc::new(FakeRuntime {
            network: NetworkConfig::default(),
            providers: Providers::default(),
            watch: EventWatch::new(),
            state: Mutex::new(State::default()),
        })
    }

    /// A container found on disk, its shim `alive` or not, with these `events`.
    pub fn put(&self, info: ContainerInfo, alive: bool, events: Vec<ShimEvent>) {
        let mut st = self.state.lock().unwrap();
        let handle = info.handle().to_string();
        if alive {
            st.alive.insert(handle.clone());
        }
        st.events.insert(handle, events);
        st.on_disk.push(info);
    }

    /// Container `handle`'s shim writes `event`.
    pub fn push_event(&self, handle: &str, event: ShimEvent) {
        let mut st = self.state.lock().unwrap();
        st.events.entry(handle.into()).or_default().push(event);
    }

    /// Adopting container `handle` fails.
    pub fn refuse_adopt(&self, handle: &str) {
        let mut st = self.state.lock().unwrap();
        st.refuse_adopt.insert(handle.into());
    }

    /// File `path` of container `handle` holds `content`.
    pub fn put_file(&self, handle: &str, path: &str, content: &str) {
        let mut st = self.state.lock().unwrap();
        st.files
            .insert((handle.into(), path.into()), content.into());
    }

    /// The calls made so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    fn record(&self, call: Call) {
        self.state.lock().unwrap().calls.push(call);
    }
}

/// A rep of cell [`CELL`] over `runtime`, with the default config.
pub fn rep(runtime: Arc<FakeRuntime>) -> Arc<Rep<FakeRuntime>> {
    rep_with(RepConfig::new(CELL, "127.0.0.1:1800"), runtime)
}

/// A rep of config `cfg` over `runtime`, whose BBS refuses every connection.
pub fn rep_with(cfg: RepConfig, runtime: Arc<FakeRuntime>) -> Arc<Rep<FakeRuntime>> {
    // A port nobody listens on: every BBS call fails at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("an endpoint")
        .connect_lazy();
    let bbs = GrpcBbs::new(BbsClient::new(channel));
    Rep::new(cfg, Arc::new(bbs), runtime)
}

/// A rep of cell [`CELL`] over `runtime`, asking the in-process BBS `bbs`.
pub fn rep_over(bbs: &FakeBbs, runtime: Arc<FakeRuntime>) -> Arc<Rep<FakeRuntime>> {
    rep_over_with(bbs, RepConfig::new(CELL, "127.0.0.1:1800"), runtime)
}

/// A rep of config `cfg` over `runtime`, asking the in-process BBS `bbs`.
pub fn rep_over_with(
    bbs: &FakeBbs,
    cfg: RepConfig,
    runtime: Arc<FakeRuntime>,
) -> Arc<Rep<FakeRuntime>> {
    Rep::new(cfg, Arc::new(bbs.clone()), runtime)
}

/// Waits (up to 5 s) until `done` holds; whether it did.
pub async fn eventually(done: impl Fn() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done()
}

/// Waits (up to 5 s) until the answer of `done` holds; whether it did.
pub async fn eventually_async<F, Fut>(done: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done().await
}

/// A container as the executor would record it, tagged as the rep tags its own.
pub fn container(handle: &str, tags: &[(&str, &str)]) -> ContainerInfo {
    ContainerInfo {
        request: ContainerRequest {
            handle: handle.into(),
            rootfs: "docker:///busybox".into(),
            memory_mb: 64,
            disk_mb: 128,
            cpu_weight: 0,
            max_pids: 0,
            privileged: false,
            host_network: false,
            ports: vec![],
            env: vec![],
            action: models::Action::default(),
            log_source: String::new(),
            volume_mounts: vec![],
            egress_rules: vec![],
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
        network: None,
        ports: vec![],
        created_at: 0,
    }
}

#[tonic::async_trait]
impl Runtime for FakeRuntime {
    fn network_config(&self) -> &NetworkConfig {
        &self.network
    }

    fn providers(&self) -> &Providers {
        &self.providers
    }

    fn grace(&self) -> Duration {
        Duration::from_millis(10)
    }

    fn volumes(&self) -> Option<&Arc<VolumeDriver>> {
        None
    }

    fn uses_volume(&self, _name: &str) -> bool {
        false
    }

    fn mounted_volumes(&self, _handle: &str) -> Vec<String> {
        vec![]
    }

    fn log_socket(&self) -> PathBuf {
        PathBuf::from("/nonexistent/logs.sock")
    }

    async fn collect_layers(&self, _keep: Duration) -> usize {
        0
    }

    async fn create_with_progress(
        &self,
        req: ContainerRequest,
        _progress: &(dyn Fn(String) + Send + Sync),
    ) -> anyhow::Result<ContainerInfo> {
        self.record(Call::Create(req.handle.clone()));
        let info = ContainerInfo {
            request: req,
            network: None,
            ports: vec![],
            created_at: 0,
        };
        let mut st = self.state.lock().unwrap();
        st.alive.insert(info.handle().to_string());
        st.on_disk.push(info.clone());
        Ok(info)
    }

    async fn command_check(&self, handle: &str, _run: models::RunAction) -> Result<(), String> {
        self.record(Call::Check(handle.into()));
        Ok(())
    }

    fn event_signal(&self, handle: &str) -> EventSignal {
        self.watch.signal(handle)
    }

    fn events(&self, handle: &str, offset: u64) -> (Vec<ShimEvent>, u64) {
        let st = self.state.lock().unwrap();
        let all = st.events.get(handle).cloned().unwrap_or_default();
        let from = (offset as usize).min(all.len());
        (all[from..].to_vec(), all.len() as u64)
    }

    fn shim_pid(&self, handle: &str) -> Option<i32> {
        self.state
            .lock()
            .unwrap()
            .alive
            .contains(handle)
            .then_some(1)
    }

    fn stop(&self, handle: &str) {
        self.record(Call::Stop(handle.into()));
    }

    async fn destroy(&self, handle: &str) {
        self.record(Call::Destroy(handle.into()));
        let mut st = self.state.lock().unwrap();
        st.alive.remove(handle);
        st.on_disk.retain(|c| c.handle() != handle);
    }

    fn on_disk(&self) -> Vec<ContainerInfo> {
        self.state.lock().unwrap().on_disk.clone()
    }

    async fn adopt(&self, info: &ContainerInfo) -> anyhow::Result<()> {
        let handle = info.handle().to_string();
        self.record(Call::Adopt(handle.clone()));
        if self.state.lock().unwrap().refuse_adopt.contains(&handle) {
            anyhow::bail!("host port taken");
        }
        Ok(())
    }

    async fn read_file(&self, handle: &str, path: &str) -> anyhow::Result<String> {
        self.record(Call::ReadFile(handle.into(), path.into()));
        let st = self.state.lock().unwrap();
        st.files
            .get(&(handle.to_string(), path.to_string()))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no such file: {path}"))
    }

    fn close(&self) {}
}
