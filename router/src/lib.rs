//! The router: sends `Host: APP.DOMAIN` traffic to the RUNNING instances of
//! the LRP whose routes name that host. `table` holds the routes (pure),
//! `emitter` keeps it current from the BBS, `proxy` serves HTTP, `tls`
//! terminates HTTPS with a certificate per domain, `tcp` forwards TCP routes' ports,
//! `backend` talks to instances over keep-alive pools, `body` is what the
//! router answers with, `timeouts` bounds each request on a coarse per-loop
//! clock, `logs` ships its access lines, `server` starts it all as a component.

pub mod backend;
pub mod body;
pub mod emitter;
pub mod logs;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod table;
pub mod tcp;
pub mod timeouts;
pub mod tls;
