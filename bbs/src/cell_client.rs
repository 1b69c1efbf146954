//! How the BBS asks a cell over HTTP (its logs, its containers' usage):
//! [`CellClient`]. Over TLS each cell is addressed by its identity's DNS name,
//! `https://CELL_ID.cell.lattice:PORT/…`; a resolver of our own maps that name to
//! the host in the cell's presence ([`RepAddresses`]), and the server's certificate
//! must name exactly that cell (hostname verification against the cluster CA alone):
//! another cell's certificate answering at its address is refused, as is any
//! certificate of another role or CA. Without TLS (loopback only) a cell is asked at
//! its presence's address as it is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use lattice_specs::identity::{Identity, Role};

use crate::db::Db;

/// Idle connections kept to each cell (for its logs and usage).
pub const CELL_POOL_IDLE: usize = 4;

/// Where cells' reps are: the address each cell's presence advertises.
pub trait RepAddresses: Send + Sync + 'static {
    /// The rep address in the presence of cell `cell_id` (None: no such cell).
    fn rep_address(&self, cell_id: &str) -> BoxFuture<'static, Option<String>>;
}

impl RepAddresses for Db {
    fn rep_address(&self, cell_id: &str) -> BoxFuture<'static, Option<String>> {
        let (db, cell_id) = (self.clone(), cell_id.to_string());
        Box::pin(async move {
            let cells = db.cells().await.ok()?;
            cells
                .into_iter()
                .find(|c| c.cell_id == cell_id)
                .map(|c| c.rep_address)
        })
    }
}

/// Why a cell cannot be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CellUrlError {
    #[error("the rep address {0:?} is not HOST:PORT (with or without a scheme)")]
    Address(String),
    #[error("the cell id {0:?} cannot name a certificate: {1}")]
    CellId(String, String),
}

/// The base URL (no trailing slash) at which cell `cell_id`, whose presence
/// advertises `rep_address`, is asked: its identity's name and the address's port
/// over TLS, the address itself (as `http://…` unless it has a scheme) without.
pub fn base_url(tls: bool, cell_id: &str, rep_address: &str) -> Result<String, CellUrlError> {
    if !tls {
        return Ok(lattice_specs::http_url(rep_address));
    }
    let (_, port) = host_port(rep_address)?;
    let id = Identity::new(Role::Cell, cell_id)
        .map_err(|e| CellUrlError::CellId(cell_id.to_string(), e.to_string()))?;
    Ok(format!("https://{}:{port}", id.dns_name()))
}

/// The host (no brackets) and port of `rep_address` (`[SCHEME://]HOST:PORT`).
fn host_port(rep_address: &str) -> Result<(&str, u16), CellUrlError> {
    let bad = || CellUrlError::Address(rep_address.to_string());
    let rest = rep_address
        .split_once("://")
        .map_or(rep_address, |(_, r)| r)
        .trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// The HTTP client to the cells, and whether it speaks TLS.
#[derive(Clone)]
pub struct CellClient {
    http: reqwest::Client,
    tls: bool,
}

impl CellClient {
    /// Over TLS with the BBS's certificate `tls` (trusting only the cluster CA), the
    /// cells found in `reps`; plaintext without.
    pub fn new(
        tls: Option<&lattice_tls::NodeTls>,
        reps: Arc<dyn RepAddresses>,
    ) -> anyhow::Result<CellClient> {
        use anyhow::Context;
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            // Each log follower fetches every cell's recent lines: without a bound,
            // a thousand of them left a thousand idle connections for 90 s.
            .pool_max_idle_per_host(CELL_POOL_IDLE)
            .pool_idle_timeout(Duration::from_secs(10));
        if let Some(t) = tls {
            let cfg = t.client_config(&[])?;
            b = b
                .tls_backend_preconfigured((*cfg).clone())
                .dns_resolver(Arc::new(PresenceResolver { reps }));
        }
        Ok(CellClient {
            http: b
                .build()
                .context("building the HTTP client for the cells")?,
            tls: tls.is_some(),
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Where cell `cell_id` (its presence advertising `rep_address`) is asked (see
    /// [`base_url`]); None, with a log line, for a presence that cannot be.
    pub fn base_url(&self, cell_id: &str, rep_address: &str) -> Option<String> {
        base_url(self.tls, cell_id, rep_address)
            .inspect_err(|e| tracing::warn!(%cell_id, error = %e, "cannot ask this cell"))
            .ok()
    }
}

/// Resolves `CELL_ID.cell.lattice` to the host of that cell's presence.
struct PresenceResolver {
    reps: Arc<dyn RepAddresses>,
}

impl reqwest::dns::Resolve for PresenceResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (name, reps) = (name.as_str().to_string(), self.reps.clone());
        Box::pin(async move {
            let err = |m: String| -> Box<dyn std::error::Error + Send + Sync> {
                Box::new(std::io::Error::other(m))
            };
            let id = Identity::from_dns_name(&name)
                .ok()
                .filter(|id| id.role == Role::Cell)
                .ok_or_else(|| err(format!("{name} names no cell")))?;
            let rep = reps
                .rep_address(&id.name)
                .await
                .ok_or_else(|| err(format!("no cell {} is present", id.name)))?;
            let (host, port) = host_port(&rep).map_err(|e| err(e.to_string()))?;
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_asked_by_their_identity_over_tls_and_by_address_without() {
        assert_eq!(
            base_url(true, "cell-a", "https://10.0.0.5:1800"),
            Ok("https://cell-a.cell.lattice:1800".into())
        );
        assert_eq!(
            base_url(true, "cell-b", "[fd00::5]:1801"),
            Ok("https://cell-b.cell.lattice:1801".into())
        );
        assert_eq!(
            base_url(false, "cell-a", "127.0.0.1:1800"),
            Ok("http://127.0.0.1:1800".into())
        );
        assert!(matches!(
            base_url(true, "cell-a", "10.0.0.5"),
            Err(CellUrlError::Address(_))
        ));
        assert!(matches!(
            base_url(true, "cell-a", "https://:1800"),
            Err(CellUrlError::Address(_))
        ));
        assert!(matches!(
            base_url(true, "Cell_A", "10.0.0.5:1800"),
            Err(CellUrlError::CellId(..))
        ));
        assert_eq!(host_port("https://[::1]:9/"), Ok(("::1", 9)));
    }
}
