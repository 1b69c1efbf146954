//! What the tls integration tests share: components' TLS from a test CA.
// Each test binary uses some of these.
#![allow(dead_code)]

use std::time::Duration;

use lattice_tls::ca::Ca;
use lattice_tls::{Identity, NodeTls, Role};

/// `who`'s TLS: a certificate from `ca` (an hour) and `ca` as the trusted root.
pub fn node_for(ca: &Ca, who: &Identity) -> NodeTls {
    ca.issue_node(who, &[], Duration::from_secs(3600)).unwrap()
}

/// [`node_for`] the identity `name` of `role`.
pub fn node(ca: &Ca, role: Role, name: &str) -> NodeTls {
    node_for(ca, &Identity::new(role, name).unwrap())
}
