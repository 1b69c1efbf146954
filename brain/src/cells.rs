//! How the auctioneer reaches cells: a `CellClient` per cell (its rep's
//! State and Perform calls) and a `CellDirectory` that gives the client for a
//! registered cell. The real directory speaks gRPC to each rep; tests and the
//! scale benchmark use in-process simulated cells (`crate::testing`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lattice_specs::identity::{Identity, Role};
use lattice_specs::models::CellPresence;
use lattice_specs::rep_api::rep_client::RepClient;
use lattice_specs::rep_api::{CellState, StateRequest, Work};
use lattice_tls::client::ClientTls;
use tonic::transport::{Channel, Endpoint};

use crate::auction::{CellView, Resources};

/// How long connecting to a cell's rep may take before the call fails (and the
/// cell is left out of that auction).
const REP_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[async_trait]
pub trait CellClient: Send + Sync {
    async fn state(&self) -> anyhow::Result<CellState>;
    /// Hand work to the cell; returns what it could not take.
    async fn perform(&self, work: Work) -> anyhow::Result<Work>;
}

pub trait CellDirectory: Send + Sync {
    fn client(&self, cell: &CellPresence) -> Arc<dyn CellClient>;
}

/// Reps reached over gRPC at their registered `rep_address`; with TLS, each rep must
/// prove the identity of the cell registered there (`cell CELL_ID`).
#[derive(Default)]
pub struct GrpcCells {
    clients: Mutex<HashMap<(String, String), Arc<GrpcCell>>>,
    tls: Option<ClientTls>,
}

impl GrpcCells {
    /// Over mutual TLS with `tls` (its expected server is replaced by each cell's
    /// identity); None: plaintext.
    pub fn new(tls: Option<ClientTls>) -> GrpcCells {
        GrpcCells {
            clients: Mutex::default(),
            tls,
        }
    }
}

struct GrpcCell {
    client: RepClient<Channel>,
}

#[async_trait]
impl CellClient for GrpcCell {
    async fn state(&self) -> anyhow::Result<CellState> {
        Ok(self
            .client
            .clone()
            .state(StateRequest {})
            .await?
            .into_inner())
    }
    async fn perform(&self, work: Work) -> anyhow::Result<Work> {
        Ok(self
            .client
            .clone()
            .perform(work)
            .await?
            .into_inner()
            .failed
            .unwrap_or_default())
    }
}

impl CellDirectory for GrpcCells {
    fn client(&self, cell: &CellPresence) -> Arc<dyn CellClient> {
        let mut clients = self.clients.lock().unwrap();
        let addr = cell.rep_address.clone();
        clients
            .entry((addr.clone(), cell.cell_id.clone()))
            .or_insert_with(|| {
                let tls = self.tls.as_ref().map(|t| {
                    // A cell id that is no identity name matches no certificate: the
                    // handshake fails and the cell is left out of auctions.
                    let id = Identity::new(Role::Cell, &cell.cell_id).unwrap_or_else(|_| {
                        Identity::new(Role::Cell, "invalid-cell-id").expect("a valid name")
                    });
                    t.for_server(id)
                });
                let tune = |e: Endpoint| e.connect_timeout(REP_CONNECT_TIMEOUT);
                let channel = lattice_tls::client::lazy_channel(&addr, tls.as_ref(), tune)
                    .unwrap_or_else(|_| {
                        Endpoint::from_static("http://invalid.invalid").connect_lazy()
                    });
                Arc::new(GrpcCell {
                    client: RepClient::new(channel),
                })
            })
            .clone()
    }
}

/// The auction's view of a cell from its reported state.
pub fn view_of(s: &CellState) -> CellView {
    let r = |x: &Option<lattice_specs::rep_api::Resources>| {
        let x = x.unwrap_or_default();
        Resources {
            memory_mb: x.memory_mb,
            disk_mb: x.disk_mb,
            containers: x.containers,
        }
    };
    CellView {
        cell_id: s.cell_id.clone(),
        zone: s.zone.clone(),
        total: r(&s.total),
        available: r(&s.available),
        rootfs_providers: s
            .rootfs_providers
            .iter()
            .map(|p| (p.name.clone(), p.properties.clone()))
            .collect(),
        placement_tags: s.placement_tags.clone(),
        optional_placement_tags: s.optional_placement_tags.clone(),
        volume_drivers: s.volume_drivers.clone(),
        lrps: s
            .lrps
            .iter()
            .map(|l| Arc::from(l.process_guid.as_str()))
            .collect(),
        starting: s.starting_containers.max(0) as u32,
        evacuating: s.evacuating,
    }
}
