//! TCP routes' external ports are cluster-wide: one app holds a port. The check every
//! write of an app's routes makes (desire, `PUT` of routes, a new generation).
//!
//! The check reads the stored apps; two writes racing for the same free port can both
//! pass it. The router then serves the port for one of them (the first by name) and
//! counts the other in `router_tcp_port_conflicts`.

use std::collections::HashMap;

use lattice_specs::errors::ErrorName;
use lattice_specs::models::DesiredLrp;
use lattice_specs::routes::{tcp, TcpRoute};

use super::{Db, DbError, Result, DESIRED};

impl Db {
    /// Refuses with `TcpRouteConflict` when `routes` (the routes app `guid` is to have)
    /// ask for a TCP external port that another app holds. Free when `routes` has no
    /// TCP route.
    pub async fn check_tcp_routes(
        &self,
        guid: &str,
        routes: &HashMap<String, String>,
    ) -> Result<()> {
        let wanted = TcpRoute::list_from_raw(routes);
        if wanted.is_empty() {
            return Ok(());
        }
        let apps: Vec<DesiredLrp> = self.list(DESIRED).await?;
        let held = apps
            .iter()
            .map(|d| (d.process_guid.as_str(), TcpRoute::list_from_raw(&d.routes)));
        match tcp::conflict(guid, &wanted, held) {
            None => Ok(()),
            Some((port, other)) => Err(DbError::Conflict {
                name: ErrorName::TcpRouteConflict,
                message: format!(
                    "TCP port {port} is already routed to app {other}: choose another external port (`ltc status {other}` shows its routes)"
                ),
            }),
        }
    }
}
