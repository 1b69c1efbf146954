//! The TCP route table: which instances serve which external port, from the desired
//! LRPs' `tcp-router` routes and their RUNNING, non-draining instances. Pure state,
//! changed by BBS events and snapshots like the HTTP table ([`crate::table`]); the
//! listeners read [`TcpPorts`].
//!
//! An external port belongs to one app. The BBS refuses a second app asking for a held
//! port, but two writes racing for a free port can both pass its check: then the app
//! first by name is served and the port counts in `router_tcp_port_conflicts`.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use lattice_specs::actual_lrp::{is_stale as stale, same_incarnation};
use lattice_specs::models::actual_lrp::State;
use lattice_specs::models::{ActualLrp, DesiredLrp, ModificationTag};
use lattice_specs::routes::TcpRoute;

/// What serves one external port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortEntry {
    /// The app the port belongs to.
    pub process_guid: String,
    /// Its RUNNING, non-draining instances' addresses for the route's container port,
    /// in (index, address) order.
    pub backends: Vec<SocketAddr>,
}

/// Every routed external port.
pub type TcpPorts = BTreeMap<u16, Arc<PortEntry>>;

/// (process_guid, index, presence)
type InstanceKey = (String, i32, i32);

#[derive(Debug, Default)]
pub struct TcpTable {
    /// process_guid → its TCP routes (only apps that have some).
    routes: HashMap<String, Vec<TcpRoute>>,
    desired_tags: HashMap<String, ModificationTag>,
    /// Every instance record (routable or not: a record's tag tells a later event from
    /// an older one); only RUNNING, non-draining ones serve.
    instances: HashMap<InstanceKey, ActualLrp>,
    /// Whether an event since the last `take_ports` touched an app with TCP routes.
    dirty: bool,
    /// External ports asked for by more than one app, at the last `ports`.
    conflicts: usize,
}

fn instance_key(a: &ActualLrp) -> InstanceKey {
    let k = a.key.clone().unwrap_or_default();
    (k.process_guid, k.index, a.presence)
}

fn routable(a: &ActualLrp) -> bool {
    a.state() == State::Running && !a.draining
}

impl TcpTable {
    /// Replace everything with a fresh snapshot.
    pub fn reset(&mut self, desired: &[DesiredLrp], actual: &[ActualLrp]) {
        *self = TcpTable {
            dirty: true,
            ..TcpTable::default()
        };
        for d in desired {
            self.set_routes(d);
        }
        for a in actual {
            self.instances.insert(instance_key(a), a.clone());
        }
    }

    fn set_routes(&mut self, d: &DesiredLrp) {
        let routes = TcpRoute::list_from_raw(&d.routes);
        // The ports change when the app had TCP routes or has them now.
        self.dirty |= if routes.is_empty() {
            self.routes.remove(&d.process_guid).is_some()
        } else {
            self.routes.insert(d.process_guid.clone(), routes);
            true
        };
        self.desired_tags.insert(
            d.process_guid.clone(),
            d.modification_tag.clone().unwrap_or_default(),
        );
    }

    /// A DesiredLRP was created or changed: its TCP routes may have changed.
    pub fn upsert_desired(&mut self, d: &DesiredLrp) {
        if !stale(
            self.desired_tags.get(&d.process_guid),
            d.modification_tag.as_ref(),
        ) {
            self.set_routes(d);
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
        self.dirty |= self.routes.remove(&d.process_guid).is_some();
    }

    /// An ActualLRP was created or changed: routable only while RUNNING and not draining.
    pub fn upsert_actual(&mut self, a: &ActualLrp) {
        let k = instance_key(a);
        let held = self.instances.get(&k);
        if stale(
            held.and_then(|h| h.modification_tag.as_ref()),
            a.modification_tag.as_ref(),
        ) {
            return;
        }
        let before = self.instances.insert(k.clone(), a.clone());
        let changed = served(before.as_ref()) != served(Some(a));
        self.dirty |= changed && self.routes.contains_key(&k.0);
    }

    pub fn remove_actual(&mut self, a: &ActualLrp) {
        let k = instance_key(a);
        let Some(held) = self.instances.get(&k) else {
            return;
        };
        if same_incarnation(held.modification_tag.as_ref(), a.modification_tag.as_ref()) {
            self.instances.remove(&k);
            self.dirty |= self.routes.contains_key(&k.0);
        }
    }

    /// The ports as they are now, if they may have changed since the last call.
    pub fn take_ports(&mut self) -> Option<TcpPorts> {
        std::mem::take(&mut self.dirty).then(|| self.ports())
    }

    /// External ports asked for by more than one app.
    pub fn conflicts(&self) -> usize {
        self.conflicts
    }

    /// Every routed port and the addresses that serve it.
    pub fn ports(&mut self) -> TcpPorts {
        // The port's owner: the first app by name that asks for it.
        let mut owners: BTreeMap<u16, (&str, u16)> = BTreeMap::new();
        let mut conflicts = std::collections::BTreeSet::new();
        let mut apps: Vec<(&String, &Vec<TcpRoute>)> = self.routes.iter().collect();
        apps.sort();
        for (guid, routes) in apps {
            for r in routes {
                match owners.entry(r.external_port) {
                    Entry::Vacant(e) => {
                        e.insert((guid, r.container_port));
                    }
                    Entry::Occupied(_) => {
                        conflicts.insert(r.external_port);
                    }
                }
            }
        }
        let mut instances: Vec<(&InstanceKey, &ActualLrp)> = self.instances.iter().collect();
        instances.sort_by(|a, b| a.0.cmp(b.0));
        let ports = owners
            .into_iter()
            .map(|(port, (guid, container_port))| {
                let backends = instances
                    .iter()
                    .filter(|(k, a)| k.0 == guid && routable(a))
                    .filter_map(|(_, a)| address(a, container_port))
                    .collect();
                let entry = PortEntry {
                    process_guid: guid.to_string(),
                    backends,
                };
                (port, Arc::new(entry))
            })
            .collect();
        self.conflicts = conflicts.len();
        ports
    }
}

/// What of a record the ports depend on: its addresses while it is routable.
fn served(a: Option<&ActualLrp>) -> Option<&Option<lattice_specs::models::ActualLrpNetInfo>> {
    a.filter(|a| routable(a)).map(|a| &a.net_info)
}

/// Where an instance serves `container_port` (its cell's mapped host port).
fn address(a: &ActualLrp, container_port: u16) -> Option<SocketAddr> {
    let net = a.net_info.as_ref()?;
    let ip = net.address.parse().ok()?;
    let m = net
        .ports
        .iter()
        .find(|m| m.container_port == u32::from(container_port))?;
    Some(SocketAddr::new(ip, u16::try_from(m.host_port).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::models::actual_lrp::Presence;
    use lattice_specs::models::{ActualLrpNetInfo, PortMapping};
    use lattice_specs::routes::TCP_ROUTER_KEY;

    fn desired(guid: &str, routes: &[(u16, u16)], tag: u32) -> DesiredLrp {
        let mut d = DesiredLrp {
            process_guid: guid.into(),
            ..Default::default()
        };
        let list: Vec<TcpRoute> = routes
            .iter()
            .map(|(e, c)| TcpRoute {
                external_port: *e,
                container_port: *c,
            })
            .collect();
        d.routes
            .insert(TCP_ROUTER_KEY.into(), TcpRoute::to_value(&list).to_string());
        d.modification_tag = Some(ModificationTag {
            epoch: "e".into(),
            index: tag,
        });
        d
    }

    fn running(guid: &str, index: i32, host_port: u32, tag: u32) -> ActualLrp {
        let mut a = lattice_specs::testing::actual_lrp(guid, index, State::Running, "c", 1);
        a.net_info = Some(ActualLrpNetInfo {
            address: "10.0.0.1".into(),
            ports: vec![
                PortMapping {
                    container_port: 8080,
                    host_port: 1000 + host_port,
                },
                PortMapping {
                    container_port: 9000,
                    host_port,
                },
            ],
            ..Default::default()
        });
        a.modification_tag = Some(ModificationTag {
            epoch: format!("{guid}-{index}"),
            index: tag,
        });
        a
    }

    fn backends(t: &mut TcpTable, port: u16) -> Vec<u16> {
        t.ports()
            .get(&port)
            .map(|e| e.backends.iter().map(|a| a.port()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn running_instances_serve_their_external_ports() {
        let mut t = TcpTable::default();
        t.reset(
            &[
                desired("echo", &[(5000, 9000), (5001, 8080)], 1),
                desired("web", &[], 1),
            ],
            &[
                running("echo", 1, 61002, 1),
                running("echo", 0, 61001, 1),
                running("web", 0, 62001, 1),
            ],
        );
        let ports = t.take_ports().expect("a snapshot changes everything");
        assert_eq!(ports.keys().copied().collect::<Vec<_>>(), [5000, 5001]);
        assert_eq!(ports[&5000].process_guid, "echo");
        assert_eq!(backends(&mut t, 5000), [61001, 61002]);
        assert_eq!(backends(&mut t, 5001), [62001, 62002]);
        assert!(t.take_ports().is_none(), "nothing changed since");
        // An app without TCP routes changing does not touch the ports.
        t.upsert_actual(&running("web", 1, 62002, 1));
        assert!(t.take_ports().is_none());
    }

    #[test]
    fn an_instance_stopping_or_draining_leaves_at_once() {
        let mut t = TcpTable::default();
        t.reset(
            &[desired("echo", &[(5000, 9000)], 1)],
            &[running("echo", 0, 61001, 1), running("echo", 1, 61002, 1)],
        );
        t.take_ports();
        let mut crashed = running("echo", 1, 61002, 2);
        crashed.set_state(State::Crashed);
        t.upsert_actual(&crashed);
        assert!(t.take_ports().is_some());
        assert_eq!(backends(&mut t, 5000), [61001]);
        // A REPLACED copy serves until it is drained.
        let mut old = running("echo", 0, 61009, 1);
        old.set_presence(Presence::Replaced);
        t.upsert_actual(&old);
        assert_eq!(backends(&mut t, 5000), [61001, 61009]);
        old.draining = true;
        old.modification_tag.as_mut().unwrap().index = 2;
        t.upsert_actual(&old);
        assert_eq!(backends(&mut t, 5000), [61001]);
        // Removed: gone; an older event does not bring it back.
        t.remove_actual(&running("echo", 0, 61001, 3));
        assert_eq!(backends(&mut t, 5000), Vec::<u16>::new());
        let mut back = running("echo", 1, 61002, 1);
        back.set_state(State::Running);
        t.upsert_actual(&back);
        assert_eq!(backends(&mut t, 5000), Vec::<u16>::new(), "stale");
        assert!(t.ports().contains_key(&5000), "the port stays routed");
    }

    #[test]
    fn routes_change_and_go_and_stale_routes_are_ignored() {
        let mut t = TcpTable::default();
        t.reset(
            &[desired("echo", &[(5000, 9000)], 5)],
            &[running("echo", 0, 61001, 1)],
        );
        t.take_ports();
        t.upsert_desired(&desired("echo", &[(6000, 9000)], 4));
        assert!(t.take_ports().is_none(), "an older desired is ignored");
        t.upsert_desired(&desired("echo", &[(5001, 9000)], 6));
        let ports = t.take_ports().unwrap();
        assert_eq!(ports.keys().copied().collect::<Vec<_>>(), [5001]);
        t.remove_desired(&desired("echo", &[], 7));
        assert!(t.take_ports().unwrap().is_empty());
    }

    #[test]
    fn a_contested_port_goes_to_the_first_app_by_name() {
        let mut t = TcpTable::default();
        t.reset(
            &[
                desired("zeta", &[(5000, 9000)], 1),
                desired("alpha", &[(5000, 9000), (5001, 9000)], 1),
            ],
            &[running("zeta", 0, 61001, 1), running("alpha", 0, 62001, 1)],
        );
        let ports = t.ports();
        assert_eq!(ports[&5000].process_guid, "alpha");
        assert_eq!(backends(&mut t, 5000), [62001]);
        assert_eq!(t.conflicts(), 1);
    }
}
