//! The DNS record table, pure: which container addresses answer `APP.<domain>` and
//! `INDEX.APP.<domain>`, kept from the BBS's actual LRPs (a snapshot, then events),
//! and how a query name reads.
//!
//! Only RUNNING instances with an instance address count, and not while draining
//! (a rolling update's replaced instance leaves before it is stopped). One address
//! per index: an ORDINARY instance hides an EVACUATING, SUSPECT or REPLACED copy of
//! the same index (the copy answers only while it is the only one running). Names are case-insensitive: a
//! process guid is looked up lowercased (guids that differ only in case share a
//! name); a guid longer than a DNS label (63 characters) has no name.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use lattice_specs::actual_lrp::{is_stale, same_incarnation};
use lattice_specs::events::event::Event as Kind;
use lattice_specs::models::actual_lrp::{Presence, State};
use lattice_specs::models::{ActualLrp, ModificationTag};

/// What a query name asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Not in the internal domain: forwarded to the host's resolvers.
    Outside,
    /// The internal domain itself (it exists, with no address).
    Apex,
    /// `APP.<domain>`: every running instance of the app (lowercased guid).
    App(String),
    /// `INDEX.APP.<domain>`: one instance.
    Instance(String, i32),
    /// In the domain but no name this server gives (NXDOMAIN).
    Unknown,
}

/// Reads a query name against `domain` (both case-insensitive, with or without the
/// trailing dot).
pub fn parse(name: &str, domain: &str) -> Query {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if name == domain {
        return Query::Apex;
    }
    let Some(rest) = name
        .strip_suffix(domain.as_str())
        .and_then(|r| r.strip_suffix('.'))
    else {
        return Query::Outside;
    };
    let labels: Vec<&str> = rest.split('.').collect();
    match labels.as_slice() {
        [app] if is_guid(app) => Query::App(app.to_string()),
        [index, app] if is_guid(app) => match parse_index(index) {
            Some(i) => Query::Instance(app.to_string(), i),
            None => Query::Unknown,
        },
        _ => Query::Unknown,
    }
}

/// A process guid as it can appear in a name (see the specs' `check_guid`).
fn is_guid(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An instance index: decimal digits only, within `i32`.
fn parse_index(label: &str) -> Option<i32> {
    if label.is_empty() || !label.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    label.parse().ok()
}

/// The answer to a name in the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name exists; these addresses (none: no record of the asked type).
    Addresses(Vec<Ipv4Addr>),
    /// No such name.
    NxDomain,
    /// Not ours: ask the host's resolvers.
    Forward,
}

/// Which copy of an index answers first (lower first).
fn rank(p: Presence) -> u8 {
    match p {
        Presence::Ordinary => 0,
        Presence::Evacuating => 1,
        Presence::Suspect => 2,
        Presence::Replaced => 3,
    }
}

/// An instance's key: lowercased guid (the name), guid, index, presence rank.
type Key = (String, String, i32, u8);

#[derive(Debug, Clone)]
struct Held {
    address: Ipv4Addr,
    tag: Option<ModificationTag>,
}

/// The RUNNING instances with an address, by name.
#[derive(Debug, Default)]
pub struct Records {
    instances: BTreeMap<Key, Held>,
}

fn key(a: &ActualLrp) -> Key {
    let k = a.key.clone().unwrap_or_default();
    (
        k.process_guid.to_ascii_lowercase(),
        k.process_guid,
        k.index,
        rank(a.presence()),
    )
}

/// The address a RUNNING, not draining instance answers at: its instance address,
/// when it is one other containers can reach (not loopback: host-networked
/// containers have none).
fn address(a: &ActualLrp) -> Option<Ipv4Addr> {
    if a.state() != State::Running || a.draining {
        return None;
    }
    let ip: Ipv4Addr = a.net_info.as_ref()?.instance_address.parse().ok()?;
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

impl Records {
    pub fn new() -> Records {
        Records::default()
    }

    /// Replaces everything with a snapshot of the actual LRPs.
    pub fn reset(&mut self, actual: &[ActualLrp]) {
        self.instances = actual
            .iter()
            .filter_map(|a| {
                let tag = a.modification_tag.clone();
                address(a).map(|address| (key(a), Held { address, tag }))
            })
            .collect();
    }

    /// Applies a BBS event; other events than actual LRPs' are ignored.
    pub fn apply(&mut self, event: &Kind) {
        match event {
            Kind::ActualLrpCreated(c) => c.actual_lrp.iter().for_each(|a| self.upsert(a)),
            Kind::ActualLrpChanged(c) => c.after.iter().for_each(|a| self.upsert(a)),
            Kind::ActualLrpRemoved(c) => c.actual_lrp.iter().for_each(|a| self.remove(a)),
            _ => {}
        }
    }

    /// An instance as it now is: held while RUNNING (not draining) with an address,
    /// dropped otherwise.
    pub fn upsert(&mut self, a: &ActualLrp) {
        let k = key(a);
        let held = self.instances.get(&k).and_then(|h| h.tag.as_ref());
        if is_stale(held, a.modification_tag.as_ref()) {
            return;
        }
        match address(a) {
            Some(address) => {
                let tag = a.modification_tag.clone();
                self.instances.insert(k, Held { address, tag });
            }
            None => {
                self.instances.remove(&k);
            }
        }
    }

    /// An instance removed from the BBS (unless a newer incarnation is held).
    pub fn remove(&mut self, a: &ActualLrp) {
        let k = key(a);
        if let Some(held) = self.instances.get(&k) {
            if same_incarnation(held.tag.as_ref(), a.modification_tag.as_ref()) {
                self.instances.remove(&k);
            }
        }
    }

    /// How many instances answer (metrics, tests).
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// The addresses of an app (lowercased guid), one per index, by index; with
    /// `index`, that instance's only.
    pub fn addresses(&self, app: &str, index: Option<i32>) -> Vec<Ipv4Addr> {
        let from = (app.to_string(), String::new(), i32::MIN, 0);
        let mut best: BTreeMap<i32, (u8, Ipv4Addr)> = BTreeMap::new();
        for ((name, _, i, rank), held) in self.instances.range(from..) {
            if name != app {
                break;
            }
            if index.is_some_and(|want| want != *i) {
                continue;
            }
            let slot = best.entry(*i).or_insert((*rank, held.address));
            if *rank < slot.0 {
                *slot = (*rank, held.address);
            }
        }
        best.into_values().map(|(_, ip)| ip).collect()
    }

    /// The answer to `name` in `domain`.
    pub fn answer(&self, name: &str, domain: &str) -> Answer {
        let found = match parse(name, domain) {
            Query::Outside => return Answer::Forward,
            Query::Apex => return Answer::Addresses(Vec::new()),
            Query::Unknown => return Answer::NxDomain,
            Query::App(app) => self.addresses(&app, None),
            Query::Instance(app, i) => self.addresses(&app, Some(i)),
        };
        if found.is_empty() {
            Answer::NxDomain
        } else {
            Answer::Addresses(found)
        }
    }
}

#[cfg(test)]
mod tests;
