//! What the rep asks of the cell's containers, as a trait: [`Runtime`], implemented by
//! the [`Executor`] (real containers) and, in the rep's unit tests, by an in-memory
//! fake. Only what the rep uses is here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lattice_specs::models;

use crate::executor::{ContainerInfo, ContainerRequest, Executor};
use crate::network::NetworkConfig;
use crate::rootfs::Providers;
use crate::shim::ShimEvent;
use crate::volume::VolumeDriver;
use crate::watch::EventSignal;

/// How long a command health check may run.
const COMMAND_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The containers of a cell, as the rep drives them.
#[tonic::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The network containers get addresses on (its size caps the container slots).
    fn network_config(&self) -> &NetworkConfig;
    /// The images containers can start from.
    fn providers(&self) -> &Providers;
    /// From SIGTERM to SIGKILL when stopping a container.
    fn grace(&self) -> Duration;
    /// The `local` volume driver, when the cell has volumes.
    fn volumes(&self) -> Option<&Arc<VolumeDriver>>;
    /// Whether a container mounts volume `name`.
    fn uses_volume(&self, name: &str) -> bool;
    /// The volumes container `handle` mounts (not its scratch volumes or snapshots).
    fn mounted_volumes(&self, handle: &str) -> Vec<String>;
    /// Where containers' log lines arrive.
    fn log_socket(&self) -> PathBuf;
    /// Collects image layers unused for `keep`; how many went.
    async fn collect_layers(&self, keep: Duration) -> usize;
    /// Creates and starts a container, telling `progress` how its image download goes.
    async fn create_with_progress(
        &self,
        req: ContainerRequest,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> anyhow::Result<ContainerInfo>;
    /// Runs a command health check in container `handle`: its error output when it fails.
    async fn command_check(&self, handle: &str, run: models::RunAction) -> Result<(), String>;
    /// Wakes when container `handle` has new events (take it before reading them).
    fn event_signal(&self, handle: &str) -> EventSignal;
    /// Container `handle`'s lifecycle events from `offset` on, and the next offset.
    fn events(&self, handle: &str, offset: u64) -> (Vec<ShimEvent>, u64);
    /// The pid of container `handle`'s shim, while it runs.
    fn shim_pid(&self, handle: &str) -> Option<i32>;
    /// Asks container `handle` to stop; returns at once.
    fn stop(&self, handle: &str);
    /// Stops container `handle` if needed and removes everything it had.
    async fn destroy(&self, handle: &str);
    /// Every container recorded on disk.
    fn on_disk(&self) -> Vec<ContainerInfo>;
    /// Takes back a container found on disk after a restart.
    async fn adopt(&self, info: &ContainerInfo) -> anyhow::Result<()>;
    /// Reads a Task's result file in container `handle`.
    async fn read_file(&self, handle: &str, path: &str) -> anyhow::Result<String>;
    /// For a cell that stops with its containers: what the runtime holds goes.
    fn close(&self);
}

#[tonic::async_trait]
impl Runtime for Executor {
    fn network_config(&self) -> &NetworkConfig {
        &self.config().network
    }

    fn providers(&self) -> &Providers {
        &self.config().providers
    }

    fn grace(&self) -> Duration {
        self.config().grace
    }

    fn volumes(&self) -> Option<&Arc<VolumeDriver>> {
        Executor::volumes(self)
    }

    fn uses_volume(&self, name: &str) -> bool {
        Executor::uses_volume(self, name)
    }

    fn mounted_volumes(&self, handle: &str) -> Vec<String> {
        Executor::mounted_volumes(self, handle)
    }

    fn log_socket(&self) -> PathBuf {
        Executor::log_socket(self)
    }

    async fn collect_layers(&self, keep: Duration) -> usize {
        Executor::collect_layers(self, keep).await
    }

    async fn create_with_progress(
        &self,
        req: ContainerRequest,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> anyhow::Result<ContainerInfo> {
        Executor::create_with_progress(self, req, progress).await
    }

    /// Runs the check through the shim (`DIR --exec RUN_ACTION_JSON`), within
    /// 30 seconds.
    async fn command_check(&self, handle: &str, run: models::RunAction) -> Result<(), String> {
        let shim = &self.config().shim;
        let json = serde_json::to_string(&run).map_err(|e| e.to_string())?;
        let out = tokio::time::timeout(
            COMMAND_CHECK_TIMEOUT,
            crate::launcher::with_default_signals(&mut tokio::process::Command::new(&shim[0]))
                .args(&shim[1..])
                .arg(self.dir(handle))
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

    fn event_signal(&self, handle: &str) -> EventSignal {
        Executor::event_signal(self, handle)
    }

    fn events(&self, handle: &str, offset: u64) -> (Vec<ShimEvent>, u64) {
        Executor::events(self, handle, offset)
    }

    fn shim_pid(&self, handle: &str) -> Option<i32> {
        Executor::shim_pid(self, handle)
    }

    fn stop(&self, handle: &str) {
        Executor::stop(self, handle)
    }

    async fn destroy(&self, handle: &str) {
        Executor::destroy(self, handle).await
    }

    fn on_disk(&self) -> Vec<ContainerInfo> {
        Executor::on_disk(self)
    }

    async fn adopt(&self, info: &ContainerInfo) -> anyhow::Result<()> {
        Executor::adopt(self, info).await
    }

    async fn read_file(&self, handle: &str, path: &str) -> anyhow::Result<String> {
        Executor::read_file(self, handle, path).await
    }

    fn close(&self) {
        Executor::close(self)
    }
}
