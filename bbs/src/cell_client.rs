//! How the BBS asks a cell over HTTP (its logs, its containers' usage):
//! [`CellClient`]. Over TLS each cell is addressed by its identity's DNS name,
//! `https://CELL_ID.cell.lattice:PORT/…`; a resolver of our own maps that name to
//! the host in the cell's presence ([`RepAddresses`]), and the server's certificate
//! must name exactly that cell (hostname verification against the cluster CA alone):
//! another cell's certificate answering at its address is refused, as is any
//! certificate of another role or CA. Without TLS (loopback only) a cell is asked at
//! its presence's address as it is.
//!
//! The same client opens WebSockets to the reps ([`CellClient::websocket`], for
//! `ltc ssh` sessions): an HTTP/1.1 upgrade on the same connections, so the same
//! exact-identity check applies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use lattice_specs::identity::{Identity, Role};

use crate::db::Db;

/// Idle connections kept to each cell (for its logs and usage).
pub const CELL_POOL_IDLE: usize = 4;

/// How long a rep has to accept a WebSocket (connection, TLS and the upgrade).
pub const REP_SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest error body read from a rep that refused a WebSocket.
const REFUSAL_BODY_LIMIT: usize = 64 * 1024;

/// A WebSocket to a rep.
pub type RepSocket = tokio_tungstenite::WebSocketStream<reqwest::Upgraded>;

/// Why a WebSocket to a rep was not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepSocketError {
    #[error("the rep could not be reached: {0}")]
    Unreachable(String),
    /// The rep answered with an error instead of upgrading (`name` when its body was
    /// a receptor-style error with a known name).
    #[error("the rep refused ({status}): {message}")]
    Refused {
        status: u16,
        name: Option<lattice_specs::errors::ErrorName>,
        message: String,
    },
    #[error("the rep did not speak WebSocket: {0}")]
    Protocol(String),
}

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

    /// Opens a WebSocket to `url` (an `http(s)://` URL under [`CellClient::base_url`]),
    /// within [`REP_SOCKET_TIMEOUT`].
    pub async fn websocket(&self, url: &str) -> Result<RepSocket, RepSocketError> {
        tokio::time::timeout(REP_SOCKET_TIMEOUT, self.open_websocket(url))
            .await
            .unwrap_or_else(|_| {
                Err(RepSocketError::Unreachable(format!(
                    "no WebSocket from {url} within {REP_SOCKET_TIMEOUT:?}"
                )))
            })
    }

    async fn open_websocket(&self, url: &str) -> Result<RepSocket, RepSocketError> {
        use reqwest::header;
        use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
        let key = generate_key();
        let resp = self
            .http
            .get(url)
            .version(reqwest::Version::HTTP_11)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, &key)
            .send()
            .await
            .map_err(|e| RepSocketError::Unreachable(format!("{url}: {}", error_chain(&e))))?;
        let status = resp.status();
        if status != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Err(refusal(status.as_u16(), resp).await);
        }
        let accept = resp
            .headers()
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if accept != derive_accept_key(key.as_bytes()) {
            return Err(RepSocketError::Protocol(format!(
                "{url} answered 101 without the right Sec-WebSocket-Accept"
            )));
        }
        let io = resp
            .upgrade()
            .await
            .map_err(|e| RepSocketError::Protocol(format!("{url}: {}", error_chain(&e))))?;
        Ok(RepSocket::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await)
    }

    /// Where cell `cell_id` (its presence advertising `rep_address`) is asked (see
    /// [`base_url`]); None, with a log line, for a presence that cannot be.
    pub fn base_url(&self, cell_id: &str, rep_address: &str) -> Option<String> {
        base_url(self.tls, cell_id, rep_address)
            .inspect_err(|e| tracing::warn!(%cell_id, error = %e, "cannot ask this cell"))
            .ok()
    }
}

/// What a rep that did not upgrade said: its receptor-style error when it sent one.
async fn refusal(status: u16, resp: reqwest::Response) -> RepSocketError {
    use futures::StreamExt;
    let mut body = Vec::new();
    let mut chunks = resp.bytes_stream();
    while let Some(Ok(c)) = chunks.next().await {
        body.extend_from_slice(&c);
        if body.len() >= REFUSAL_BODY_LIMIT {
            body.truncate(REFUSAL_BODY_LIMIT);
            break;
        }
    }
    match serde_json::from_slice::<lattice_specs::receptor::Error>(&body) {
        Ok(e) => RepSocketError::Refused {
            status,
            name: lattice_specs::errors::ErrorName::parse(&e.name),
            message: e.message,
        },
        Err(_) => RepSocketError::Refused {
            status,
            name: None,
            message: String::from_utf8_lossy(&body).trim().to_string(),
        },
    }
}

/// An error with its causes (reqwest's own message hides them).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
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
