//! Mutual TLS between Lattice's components. [`ca`] holds the cluster CA and issues
//! certificates naming an [`Identity`]; [`files`] a component's certificate, key and
//! CA files and the certificate that follows them on disk (renewal without restart);
//! [`config`] the rustls server and client configurations built on them; [`peer`]
//! reads a peer's identity from its certificate; [`server`] accepts TLS connections
//! (for tonic and axum) and puts the peer's [`Identity`] into every request's
//! extensions; [`client`] connects tonic channels and HTTP clients verifying the
//! server's identity; [`http`] serves axum apps on a [`server::Listener`] with a
//! header-read timeout; [`web`] the outgoing HTTPS client trusting the CAs an
//! operator adds.

pub mod ca;
pub mod client;
pub mod config;
pub mod files;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod server;
pub mod web;

pub use config::{ClientAuth, NodeTls, TlsError};
pub use lattice_specs::identity::{Identity, Role};
pub use server::{peer_identity, PeerInfo};

/// The identity every BBS proves (`bbs.bbs.lattice`).
pub fn bbs_identity() -> Identity {
    Identity {
        role: Role::Bbs,
        name: "bbs".to_string(),
    }
}
