//! TCP routes: `routes["tcp-router"] = [{"external_port": N, "container_port": M}]`.
//! `table` (pure) says which instances serve which external port; `listen` keeps one
//! listener per routed port on the `--tcp-listen` host and forwards each connection,
//! round-robin, to a RUNNING non-draining instance, byte for byte in both directions.

pub mod listen;
pub mod table;

pub use listen::{serve, TcpConfig};
pub use table::{PortEntry, TcpPorts, TcpTable};

#[cfg(test)]
mod tests;
