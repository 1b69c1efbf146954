//! The route-emitter's job, inside the router: build the table from a BBS
//! snapshot, keep it current from the BBS event stream, and re-read the whole
//! snapshot periodically to correct anything missed (the loop is
//! [`lattice_bbs_client::follow`]'s, shared with the cell's DNS).
//!
//! Losing the BBS keeps the last good table (instances still answer) while it
//! reconnects; an instance that an event said is gone is never served again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use lattice_bbs_client::follow::{Follower, Lost};
use lattice_bbs_client::{ActualLrpFilter, BbsError, GrpcBbs, Reads, RouterBbs};
use lattice_specs::events::event::Event as Kind;
use lattice_specs::models::{ActualLrp, DesiredLrp};
use tokio::sync::watch;

use crate::metrics as m;
use crate::table::{Changes, HostEntry, RouteTable};
use crate::tcp::{TcpPorts, TcpTable};

/// The table shared between the emitter (writer) and the proxy (readers), and the
/// TCP routes' table with the ports it publishes to the TCP listeners.
#[derive(Default)]
pub struct Routes {
    table: RwLock<RouteTable>,
    /// The event loops' views, updated with the table.
    views: Mutex<Vec<Weak<View>>>,
    tcp: Mutex<TcpTable>,
    tcp_ports: watch::Sender<Arc<TcpPorts>>,
}

/// One event loop's copy of the host entries: its lookups and reference counts
/// touch no memory another loop writes (only the round-robin positions are
/// shared, for strict turns), which keeps cache lines from bouncing between
/// cores on every request.
#[derive(Default)]
pub struct View {
    hosts: RwLock<HashMap<String, Arc<HostEntry>>>,
}

impl View {
    pub fn lookup(&self, host: &str) -> Option<Arc<HostEntry>> {
        self.hosts.read().unwrap().get(host).cloned()
    }

    /// Adds what this view's loop counted per app to the shared metrics.
    pub fn flush_metrics(&self) {
        for entry in self.hosts.read().unwrap().values() {
            if let Some(m) = entry.metrics.get() {
                m.flush();
            }
        }
    }

    fn apply(&self, table: &RouteTable, changes: &Changes) {
        let mut hosts = self.hosts.write().unwrap();
        let copy = |e: &HostEntry| Arc::new(e.copy_for_view());
        match changes {
            Changes::All => {
                let fresh = table.hosts().map(|(h, e)| (h.clone(), copy(e))).collect();
                *hosts = fresh;
            }
            Changes::Hosts(changed) => {
                for h in changed {
                    match table.lookup(h) {
                        Some(e) => {
                            hosts.insert(h.clone(), copy(&e));
                        }
                        None => {
                            hosts.remove(h);
                        }
                    }
                }
            }
        }
    }
}

impl Routes {
    /// A view of the table for one event loop, kept current until dropped.
    pub fn view(&self) -> Arc<View> {
        let table = self.table.read().unwrap();
        let view = Arc::new(View::default());
        view.apply(&table, &Changes::All);
        self.views.lock().unwrap().push(Arc::downgrade(&view));
        view
    }

    fn update(&self, f: impl FnOnce(&mut RouteTable)) {
        let mut t = self.table.write().unwrap();
        f(&mut t);
        m::ROUTES.set(t.route_count() as i64);
        let changes = t.take_changes();
        self.views.lock().unwrap().retain(|v| match v.upgrade() {
            Some(v) => {
                v.apply(&t, &changes);
                true
            }
            None => false,
        });
    }

    /// The TCP routes' ports, current as the table changes.
    pub fn tcp_ports(&self) -> watch::Receiver<Arc<TcpPorts>> {
        self.tcp_ports.subscribe()
    }

    fn update_tcp(&self, f: impl FnOnce(&mut TcpTable)) {
        let mut t = self.tcp.lock().unwrap();
        f(&mut t);
        if let Some(ports) = t.take_ports() {
            m::TCP_PORT_CONFLICTS.set(t.conflicts() as i64);
            self.tcp_ports.send_replace(Arc::new(ports));
        }
    }

    pub fn apply(&self, e: &Kind) {
        self.update_tcp(|t| dispatch(t, e));
        self.update(|t| dispatch(t, e));
    }
}

/// What the HTTP and TCP tables both do with the BBS's LRP events.
trait LrpTable {
    fn upsert_desired(&mut self, d: &DesiredLrp);
    fn remove_desired(&mut self, d: &DesiredLrp);
    fn upsert_actual(&mut self, a: &ActualLrp);
    fn remove_actual(&mut self, a: &ActualLrp);
}

macro_rules! lrp_table {
    ($t:ty) => {
        impl LrpTable for $t {
            fn upsert_desired(&mut self, d: &DesiredLrp) {
                <$t>::upsert_desired(self, d)
            }
            fn remove_desired(&mut self, d: &DesiredLrp) {
                <$t>::remove_desired(self, d)
            }
            fn upsert_actual(&mut self, a: &ActualLrp) {
                <$t>::upsert_actual(self, a)
            }
            fn remove_actual(&mut self, a: &ActualLrp) {
                <$t>::remove_actual(self, a)
            }
        }
    };
}
lrp_table!(RouteTable);
lrp_table!(TcpTable);

/// Applies one BBS event to `t`.
fn dispatch(t: &mut impl LrpTable, e: &Kind) {
    match e {
        Kind::DesiredLrpCreated(c) => c.desired_lrp.iter().for_each(|d| t.upsert_desired(d)),
        Kind::DesiredLrpChanged(c) => c.after.iter().for_each(|d| t.upsert_desired(d)),
        Kind::DesiredLrpRemoved(c) => c.desired_lrp.iter().for_each(|d| t.remove_desired(d)),
        Kind::ActualLrpCreated(c) => c.actual_lrp.iter().for_each(|a| t.upsert_actual(a)),
        Kind::ActualLrpChanged(c) => c.after.iter().for_each(|a| t.upsert_actual(a)),
        Kind::ActualLrpRemoved(c) => c.actual_lrp.iter().for_each(|a| t.remove_actual(a)),
        _ => {}
    }
}

/// The routes follow the BBS's desired and actual LRPs (see [`lattice_bbs_client::follow`]).
#[async_trait::async_trait]
impl Follower for Routes {
    async fn resync(&self, bbs: &dyn Reads) -> Result<(), BbsError> {
        let desired = bbs.desired_lrps().await?;
        let actual = bbs.actual_lrps(&ActualLrpFilter::default()).await?;
        self.update(|t| t.reset(&desired, &actual));
        self.update_tcp(|t| t.reset(&desired, &actual));
        Ok(())
    }

    fn apply(&self, event: &Kind) {
        Routes::apply(self, event)
    }

    fn lost(&self, _error: &Lost) {
        m::BBS_ERRORS.inc();
    }
}

/// Follow the BBS at `bbs` (host:port or a URL; over mutual TLS with `tls`) forever.
/// `ready` turns true after the first snapshot.
pub async fn follow(
    bbs: String,
    tls: Option<lattice_tls::client::ClientTls>,
    routes: Arc<Routes>,
    resync_every: Duration,
    ready: watch::Sender<bool>,
) {
    match GrpcBbs::connect_lazy_tls(&bbs, tls.as_ref()) {
        Ok(client) => follow_bbs(&client, routes, resync_every, ready).await,
        Err(e) => tracing::error!(error = %e, %bbs, "bad BBS address"),
    }
}

/// Follow `bbs` forever. `ready` turns true after the first snapshot.
pub async fn follow_bbs(
    bbs: &dyn RouterBbs,
    routes: Arc<Routes>,
    resync_every: Duration,
    ready: watch::Sender<bool>,
) {
    lattice_bbs_client::follow(bbs, routes.as_ref(), resync_every, &ready).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_bbs_client::fake::FakeBbs;
    use lattice_bbs_client::CellWrites;
    use lattice_specs::models::{ActualLrpNetInfo, PortMapping};

    const HOST: &str = "web.example.com";

    /// Waits (a little) until the table's entry for HOST has `n` endpoints.
    async fn endpoints_become(view: &View, n: usize) {
        let count = || view.lookup(HOST).map_or(0, |e| e.endpoints.len());
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while count() != n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(
            waited.await.is_ok(),
            "{HOST} has {} endpoints, not {n}",
            count()
        );
    }

    #[tokio::test]
    async fn the_table_follows_the_snapshot_then_the_events() {
        let bbs = FakeBbs::start().await;
        let d = lattice_specs::testing::routed_lrp("web", 1, HOST);
        bbs.db().desire_lrp(d).await.unwrap();
        let ik = lattice_specs::testing::instance_key("i-0", "cell-1");
        let net = ActualLrpNetInfo {
            address: "10.0.0.5".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: 61001,
            }],
            ..Default::default()
        };
        bbs.claim_actual_lrp("web", 0, &ik, 1).await.unwrap();
        bbs.start_actual_lrp("web", 0, &ik, &net).await.unwrap();

        let routes = Arc::new(Routes::default());
        let (ready_tx, mut ready) = watch::channel(false);
        let (follower_bbs, follower_routes) = (bbs.clone(), routes.clone());
        let follower = tokio::spawn(async move {
            let resync = Duration::from_secs(3600);
            follow_bbs(&follower_bbs, follower_routes, resync, ready_tx).await
        });
        ready.wait_for(|r| *r).await.unwrap();
        let view = routes.view();
        endpoints_become(&view, 1).await;

        // The instance crashes: the event takes it out of the table at once.
        bbs.crash_actual_lrp("web", 0, &ik, "boom").await.unwrap();
        endpoints_become(&view, 0).await;
        follower.abort();
    }
}
