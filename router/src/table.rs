//! The route table: which backends serve which host, from the desired LRPs'
//! routes and their RUNNING instances. Pure state, changed by BBS events and
//! snapshots; the proxy reads per-host entries.
//!
//! A route is `routes["cf-router"] = [{"hostnames": [...], "port": N}]` on a
//! DesiredLRP: each hostname is served by every RUNNING instance of that LRP
//! (ordinary, evacuating or suspect: they still answer until removed) at the
//! host port its cell mapped to container port N.
//!
//! Events older than what the table holds (same modification epoch, lower
//! index) are discarded.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use lattice_specs::actual_lrp::{is_stale as stale, same_incarnation};
use lattice_specs::models::actual_lrp::State;
use lattice_specs::models::{ActualLrp, DesiredLrp, ModificationTag};
use lattice_specs::routes::CfRoute;

/// The router name under `routes` that this router serves.
pub use lattice_specs::routes::ROUTER_KEY;

#[derive(Debug)]
pub struct Endpoint {
    pub process_guid: String,
    pub index: i32,
    pub instance_guid: String,
    pub addr: SocketAddr,
    /// The LRP's log guid (its process guid when it has none), for access lines.
    pub log_guid: String,
    /// Requests in flight to this instance (for least-connections).
    pub in_flight: Arc<AtomicUsize>,
    /// `index` as the value of the response header naming the instance.
    pub index_header: hyper::header::HeaderValue,
}

/// Everything that serves one host.
#[derive(Debug, Default)]
pub struct HostEntry {
    /// The LRPs routed at this host (to tell "unknown host" from "nothing running").
    pub process_guids: Vec<String>,
    /// Where access lines go: the first LRP's log guid (its process guid if it has none).
    pub log_guid: String,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Round-robin position, shared by the event loops' copies of this entry so the
    /// instances take strict turns whichever loop serves a request.
    pub next: Arc<AtomicUsize>,
    /// The app's metric handles, looked up once per table change rather than per request.
    pub metrics: std::sync::OnceLock<crate::metrics::AppMetrics>,
}

/// (process_guid, index, presence)
type InstanceKey = (String, i32, i32);

#[derive(Debug, Default)]
pub struct RouteTable {
    /// process_guid → (hostname, container port)
    routes: HashMap<String, Vec<(String, u32)>>,
    /// process_guid → log guid
    log_guids: HashMap<String, String>,
    desired_tags: HashMap<String, ModificationTag>,
    instances: HashMap<InstanceKey, ActualLrp>,
    by_process: HashMap<String, HashSet<InstanceKey>>,
    host_processes: HashMap<String, HashSet<String>>,
    in_flight: HashMap<String, Arc<AtomicUsize>>,
    hosts: HashMap<String, Arc<HostEntry>>,
    /// Hosts whose entries changed since the last `take_changes`.
    changed: HashSet<String>,
    /// Everything changed (a snapshot replaced the table).
    all_changed: bool,
}

/// What changed in a table since it was last asked.
pub enum Changes {
    All,
    Hosts(HashSet<String>),
}

impl HostEntry {
    /// A host served by one fixed address (`ProxyConfig::fixed`): no access lines go
    /// to any app's log (its log guid is empty).
    pub fn fixed(name: &str, addr: SocketAddr) -> HostEntry {
        HostEntry {
            process_guids: vec![name.to_string()],
            log_guid: String::new(),
            endpoints: vec![Arc::new(Endpoint {
                process_guid: name.to_string(),
                index: 0,
                instance_guid: name.to_string(),
                addr,
                log_guid: String::new(),
                in_flight: Default::default(),
                index_header: 0.into(),
            })],
            next: Default::default(),
            metrics: Default::default(),
        }
    }

    /// A copy with its own reference count and metric handles, for one event
    /// loop's view (the round-robin position stays shared).
    pub fn copy_for_view(&self) -> HostEntry {
        HostEntry {
            process_guids: self.process_guids.clone(),
            log_guid: self.log_guid.clone(),
            endpoints: self.endpoints.clone(),
            next: self.next.clone(),
            metrics: Default::default(),
        }
    }
}

/// Hostnames and container ports this router serves for a DesiredLRP.
pub fn routes_of(d: &DesiredLrp) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = CfRoute::list_from_raw(&d.routes)
        .into_iter()
        .flat_map(|r| {
            let port = r.port;
            r.hostnames
                .into_iter()
                .map(move |h| (h.to_ascii_lowercase(), port))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether `a` takes requests: RUNNING and not draining (a rolling update's
/// replaced instance leaves the routes before it is stopped).
fn routable(a: &ActualLrp) -> bool {
    a.state() == State::Running && !a.draining
}

fn instance_key(a: &ActualLrp) -> InstanceKey {
    let k = a.key.clone().unwrap_or_default();
    (k.process_guid, k.index, a.presence)
}

impl RouteTable {
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// Replace everything with a fresh snapshot.
    pub fn reset(&mut self, desired: &[DesiredLrp], actual: &[ActualLrp]) {
        let in_flight = std::mem::take(&mut self.in_flight);
        let old_hosts = std::mem::take(&mut self.hosts);
        *self = RouteTable {
            in_flight,
            all_changed: true,
            ..RouteTable::default()
        };
        for d in desired {
            self.set_routes(d);
        }
        for a in actual {
            if routable(a) {
                let k = instance_key(a);
                self.by_process
                    .entry(k.0.clone())
                    .or_default()
                    .insert(k.clone());
                self.instances.insert(k, a.clone());
            }
        }
        let hosts: Vec<String> = self.host_processes.keys().cloned().collect();
        for h in hosts {
            self.rebuild_host(&h, old_hosts.get(&h));
        }
        let live: HashSet<String> = self
            .instances
            .values()
            .filter_map(|a| a.instance_key.as_ref().map(|ik| ik.instance_guid.clone()))
            .collect();
        self.in_flight.retain(|g, _| live.contains(g));
    }

    fn set_routes(&mut self, d: &DesiredLrp) -> Vec<String> {
        let new = routes_of(d);
        let old = self
            .routes
            .insert(d.process_guid.clone(), new.clone())
            .unwrap_or_default();
        let log_guid = if d.log_guid.is_empty() {
            &d.process_guid
        } else {
            &d.log_guid
        };
        self.log_guids
            .insert(d.process_guid.clone(), log_guid.clone());
        self.desired_tags.insert(
            d.process_guid.clone(),
            d.modification_tag.clone().unwrap_or_default(),
        );
        for (h, _) in &old {
            if let Some(set) = self.host_processes.get_mut(h) {
                set.remove(&d.process_guid);
            }
        }
        for (h, _) in &new {
            self.host_processes
                .entry(h.clone())
                .or_default()
                .insert(d.process_guid.clone());
        }
        old.into_iter().chain(new).map(|(h, _)| h).collect()
    }

    /// A DesiredLRP was created or changed: its routes may have moved.
    pub fn upsert_desired(&mut self, d: &DesiredLrp) {
        if stale(
            self.desired_tags.get(&d.process_guid),
            d.modification_tag.as_ref(),
        ) {
            return;
        }
        for h in self.set_routes(d) {
            self.rebuild(&h);
        }
    }

    pub fn remove_desired(&mut self, d: &DesiredLrp) {
        if stale(
            self.desired_tags.get(&d.process_guid),
            d.modification_tag.as_ref(),
        ) {
            return;
        }
        self.desired_tags.remove(&d.process_guid);
        self.log_guids.remove(&d.process_guid);
        let old = self.routes.remove(&d.process_guid).unwrap_or_default();
        for (h, _) in old {
            if let Some(set) = self.host_processes.get_mut(&h) {
                set.remove(&d.process_guid);
            }
            self.rebuild(&h);
        }
    }

    /// An ActualLRP was created or changed: routable only while RUNNING and not draining.
    pub fn upsert_actual(&mut self, a: &ActualLrp) {
        let k = instance_key(a);
        if stale(
            self.instances
                .get(&k)
                .and_then(|h| h.modification_tag.as_ref()),
            a.modification_tag.as_ref(),
        ) {
            return;
        }
        if routable(a) {
            self.by_process
                .entry(k.0.clone())
                .or_default()
                .insert(k.clone());
            self.instances.insert(k.clone(), a.clone());
        } else if self.instances.remove(&k).is_some() {
            if let Some(set) = self.by_process.get_mut(&k.0) {
                set.remove(&k);
            }
        } else {
            return;
        }
        self.rebuild_process(&k.0);
    }

    pub fn remove_actual(&mut self, a: &ActualLrp) {
        let k = instance_key(a);
        match self.instances.get(&k) {
            Some(held)
                if !same_incarnation(
                    held.modification_tag.as_ref(),
                    a.modification_tag.as_ref(),
                ) =>
            {
                return
            }
            None => return,
            _ => {}
        }
        self.instances.remove(&k);
        if let Some(set) = self.by_process.get_mut(&k.0) {
            set.remove(&k);
        }
        self.rebuild_process(&k.0);
    }

    fn rebuild_process(&mut self, guid: &str) {
        let hosts: Vec<String> = self
            .routes
            .get(guid)
            .map(|r| r.iter().map(|(h, _)| h.clone()).collect())
            .unwrap_or_default();
        for h in hosts {
            self.rebuild(&h);
        }
    }

    fn rebuild(&mut self, host: &str) {
        let previous = self.hosts.get(host).cloned();
        self.rebuild_host(host, previous.as_ref());
    }

    fn rebuild_host(&mut self, host: &str, previous: Option<&Arc<HostEntry>>) {
        let procs: Vec<String> = self
            .host_processes
            .get(host)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        self.changed.insert(host.to_string());
        if procs.is_empty() {
            self.host_processes.remove(host);
            self.hosts.remove(host);
            return;
        }
        let mut endpoints = vec![];
        for p in &procs {
            let ports: Vec<u32> = self.routes[p]
                .iter()
                .filter(|(h, _)| h == host)
                .map(|(_, port)| *port)
                .collect();
            for k in self.by_process.get(p).into_iter().flatten() {
                let a = &self.instances[k];
                let Some(net) = &a.net_info else { continue };
                let Ok(ip) = net.address.parse::<std::net::IpAddr>() else {
                    continue;
                };
                let Some(host_port) = net
                    .ports
                    .iter()
                    .find(|m| ports.contains(&m.container_port))
                    .map(|m| m.host_port)
                else {
                    continue;
                };
                let ik = a.instance_key.clone().unwrap_or_default();
                let in_flight = self
                    .in_flight
                    .entry(ik.instance_guid.clone())
                    .or_default()
                    .clone();
                endpoints.push(Arc::new(Endpoint {
                    process_guid: p.clone(),
                    index: k.1,
                    instance_guid: ik.instance_guid,
                    addr: SocketAddr::new(ip, host_port as u16),
                    log_guid: self.log_guids.get(p).cloned().unwrap_or_else(|| p.clone()),
                    in_flight,
                    index_header: k.1.into(),
                }));
            }
        }
        endpoints.sort_by(|a, b| {
            (&a.process_guid, a.index, a.addr).cmp(&(&b.process_guid, b.index, b.addr))
        });
        let next = previous.map(|p| p.next.clone()).unwrap_or_default();
        let mut process_guids = procs;
        process_guids.sort();
        let log_guid = self
            .log_guids
            .get(&process_guids[0])
            .cloned()
            .unwrap_or_else(|| process_guids[0].clone());
        self.hosts.insert(
            host.to_string(),
            Arc::new(HostEntry {
                process_guids,
                log_guid,
                endpoints,
                next,
                metrics: Default::default(),
            }),
        );
    }

    pub fn lookup(&self, host: &str) -> Option<Arc<HostEntry>> {
        self.hosts.get(host).cloned()
    }

    /// Every host's entry.
    pub fn hosts(&self) -> impl Iterator<Item = (&String, &Arc<HostEntry>)> {
        self.hosts.iter()
    }

    /// What changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        let hosts = std::mem::take(&mut self.changed);
        if std::mem::take(&mut self.all_changed) {
            Changes::All
        } else {
            Changes::Hosts(hosts)
        }
    }

    /// Number of (host, endpoint) routes.
    pub fn route_count(&self) -> usize {
        self.hosts.values().map(|h| h.endpoints.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::models::actual_lrp::Presence;
    use lattice_specs::models::{ActualLrpNetInfo, PortMapping};

    fn desired(guid: &str, hosts: &[&str], tag: u32) -> DesiredLrp {
        let mut d = DesiredLrp {
            process_guid: guid.into(),
            ..Default::default()
        };
        let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
        d.routes.insert(
            ROUTER_KEY.into(),
            format!("[{{\"hostnames\": [{}], \"port\": 8080}}]", hosts.join(",")),
        );
        d.modification_tag = Some(ModificationTag {
            epoch: "e".into(),
            index: tag,
        });
        d
    }

    fn running(guid: &str, index: i32, port: u32, tag: u32) -> ActualLrp {
        let mut a = lattice_specs::testing::actual_lrp(guid, index, State::Running, "c", 1);
        a.net_info = Some(ActualLrpNetInfo {
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: port,
            }],
            ..Default::default()
        });
        a.modification_tag = Some(ModificationTag {
            epoch: format!("{guid}-{index}"),
            index: tag,
        });
        a
    }

    fn ports(t: &RouteTable, host: &str) -> Vec<u16> {
        t.lookup(host)
            .map(|e| e.endpoints.iter().map(|e| e.addr.port()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn running_instances_serve_their_routes() {
        let mut t = RouteTable::new();
        t.reset(
            &[desired("web", &["Web.Lattice.Localhost", "www.example"], 1)],
            &[running("web", 0, 61001, 1), running("web", 1, 61002, 1)],
        );
        assert_eq!(ports(&t, "web.lattice.localhost"), [61001, 61002]);
        assert_eq!(ports(&t, "www.example"), [61001, 61002]);
        assert_eq!(t.route_count(), 4);
        assert!(t.lookup("other").is_none());
    }

    #[test]
    fn an_instance_leaving_running_is_removed_at_once() {
        let mut t = RouteTable::new();
        t.reset(
            &[desired("web", &["web.x"], 1)],
            &[running("web", 0, 61001, 1), running("web", 1, 61002, 1)],
        );
        let mut crashed = running("web", 1, 61002, 2);
        crashed.set_state(State::Crashed);
        t.upsert_actual(&crashed);
        assert_eq!(ports(&t, "web.x"), [61001]);
        t.remove_actual(&running("web", 0, 61001, 3));
        let e = t.lookup("web.x").expect("the host stays known");
        assert!(e.endpoints.is_empty(), "no instance: 503, not 404");
        assert_eq!(e.process_guids, ["web"]);
    }

    #[test]
    fn stale_events_are_discarded() {
        let mut t = RouteTable::new();
        t.reset(
            &[desired("web", &["web.x"], 5)],
            &[running("web", 0, 61001, 5)],
        );
        let mut old = running("web", 0, 61001, 4);
        old.set_state(State::Claimed);
        t.upsert_actual(&old);
        assert_eq!(
            ports(&t, "web.x"),
            [61001],
            "an older CLAIMED does not remove a newer RUNNING"
        );
        t.upsert_desired(&desired("web", &["elsewhere"], 3));
        assert_eq!(ports(&t, "web.x"), [61001], "older routes are ignored");
        t.upsert_desired(&desired("web", &["moved.x"], 6));
        assert!(t.lookup("web.x").is_none());
        assert_eq!(ports(&t, "moved.x"), [61001]);
        // A removal of an older incarnation leaves the newer one.
        let mut other_incarnation = running("web", 0, 61001, 9);
        other_incarnation.modification_tag = Some(ModificationTag {
            epoch: "old".into(),
            index: 9,
        });
        t.remove_actual(&other_incarnation);
        assert_eq!(ports(&t, "moved.x"), [61001]);
    }

    #[test]
    fn evacuating_copies_serve_until_removed_and_scale_and_removal_work() {
        let mut t = RouteTable::new();
        let mut evac = running("web", 0, 61009, 1);
        evac.set_presence(Presence::Evacuating);
        t.reset(
            &[desired("web", &["web.x"], 1)],
            &[running("web", 0, 61001, 1), evac.clone()],
        );
        assert_eq!(ports(&t, "web.x"), [61001, 61009]);
        t.remove_actual(&evac);
        assert_eq!(ports(&t, "web.x"), [61001]);
        t.upsert_actual(&running("web", 1, 61002, 1));
        assert_eq!(ports(&t, "web.x"), [61001, 61002]);
        t.remove_desired(&desired("web", &["web.x"], 2));
        assert!(t.lookup("web.x").is_none(), "an LRP removed: unknown host");
    }

    #[test]
    fn a_draining_instance_leaves_the_routes_at_once_and_is_not_taken_back_on_a_reset() {
        let mut t = RouteTable::new();
        let mut copy = running("web", 0, 61009, 1);
        copy.set_presence(Presence::Replaced);
        t.reset(
            &[desired("web", &["web.x"], 1)],
            &[running("web", 0, 61001, 1), copy.clone()],
        );
        assert_eq!(ports(&t, "web.x"), [61001, 61009], "a replaced copy serves");
        let mut drained = copy.clone();
        drained.draining = true;
        drained.draining_since = 5;
        drained.modification_tag.as_mut().unwrap().index = 2;
        t.upsert_actual(&drained);
        assert_eq!(ports(&t, "web.x"), [61001]);
        t.reset(
            &[desired("web", &["web.x"], 1)],
            &[running("web", 0, 61001, 1), drained],
        );
        assert_eq!(ports(&t, "web.x"), [61001]);
    }

    #[test]
    fn two_lrps_can_share_a_host_and_routes_without_instances_are_known() {
        let mut t = RouteTable::new();
        t.reset(
            &[
                desired("blue", &["app.x"], 1),
                desired("green", &["app.x"], 1),
            ],
            &[running("blue", 0, 61001, 1), running("green", 0, 62001, 1)],
        );
        assert_eq!(ports(&t, "app.x"), [61001, 62001]);
        // Access lines go to the log of the LRP that served.
        let mut blue = desired("blue", &["app.x"], 1);
        blue.log_guid = "blue-logs".into();
        t.upsert_desired(&blue);
        let entry = t.lookup("app.x").unwrap();
        let guids: Vec<&str> = entry
            .endpoints
            .iter()
            .map(|e| e.log_guid.as_str())
            .collect();
        assert_eq!(guids, ["blue-logs", "green"]);
        assert_eq!(routes_of(&DesiredLrp::default()), vec![]);
    }
}
