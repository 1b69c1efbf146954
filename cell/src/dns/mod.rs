//! The cell's DNS server, on its bridge's gateway address (port 53, UDP and TCP):
//! `APP.<internal domain>` answers the container addresses of the app's RUNNING
//! instances on any cell, `INDEX.APP.<internal domain>` one of them, other names in
//! the domain NXDOMAIN, and every other name is forwarded to the resolvers of the
//! host's /etc/resolv.conf. Containers are pointed at it by the `/etc/resolv.conf`
//! the executor writes into them ([`resolv_conf`]).
//!
//! The rooms:
//! - [`records`]: the record table and the reading of names, pure;
//! - [`source`]: the table following the BBS's actual LRPs;
//! - [`server`]: the hickory server and its forwarding.
//!
//! [`Dns::start`] starts both halves; [`Dns::stop`] stops them.

pub mod records;
pub mod server;
mod source;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lattice_bbs_client::RouterBbs;
use prometheus::IntCounterVec;
use tokio::sync::watch;

use crate::network::NetworkConfig;
pub use records::{Answer, Records};
pub use server::{AnswerKind, DnsServer, Upstream};

/// The TTL of the answers: short, so a stopped instance is not asked for long.
pub const TTL_SECONDS: u32 = 1;

/// The DNS port containers ask.
pub const PORT: u16 = 53;

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("the cell's DNS server cannot listen on {addr}: {source}{}", bind_hint(.source))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the internal domain {domain:?} is not a DNS name ({reason}); set it to a name such as apps.internal")]
    Domain { domain: String, reason: String },
}

fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrNotAvailable => {
            " (no interface of this host has that address: the DNS server listens on the cell bridge's gateway address, so the bridge must exist and have it)"
        }
        std::io::ErrorKind::AddrInUse => {
            " (another process serves DNS on that address: stop it, or give this cell a bridge and subnet of its own)"
        }
        _ => "",
    }
}

/// The records the server answers from, for one internal domain; shared between
/// the BBS feed (writer) and the server (readers).
#[derive(Debug)]
pub struct Table {
    domain: String,
    records: RwLock<Records>,
    /// Fixed names outside the domain the cell answers itself (lowercase, no
    /// trailing dot): `file-server.service.cf.internal`, see [`crate::fileserver`].
    statics: RwLock<std::collections::BTreeMap<String, Ipv4Addr>>,
}

impl Table {
    /// An empty table for `domain` (case-insensitive, with or without the trailing
    /// dot).
    pub fn new(domain: &str) -> Result<Arc<Table>, DnsError> {
        let bad = |reason: &str| DnsError::Domain {
            domain: domain.into(),
            reason: reason.into(),
        };
        let trimmed = domain.trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(bad("it is empty"));
        }
        if trimmed.len() > 253 {
            return Err(bad("it is longer than 253 characters"));
        }
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(bad("each label must have 1 to 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad("labels hold only a-z, 0-9, - and _"));
            }
        }
        Ok(Arc::new(Table {
            domain: trimmed.to_ascii_lowercase(),
            records: RwLock::new(Records::new()),
            statics: Default::default(),
        }))
    }

    /// The internal domain (lowercase, no trailing dot).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The answer to a query name: a fixed name's address, or the records'.
    pub fn answer(&self, name: &str) -> Answer {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(ip) = self.statics.read().unwrap().get(&key) {
            return Answer::Addresses(vec![*ip]);
        }
        self.records.read().unwrap().answer(name, &self.domain)
    }

    /// Answers `name` (case-insensitive, with or without the trailing dot) with `ip`
    /// from now on, whatever the domain.
    pub fn add_static(&self, name: &str, ip: Ipv4Addr) {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        self.statics.write().unwrap().insert(key, ip);
    }

    /// Changes the records.
    pub fn update(&self, f: impl FnOnce(&mut Records)) {
        f(&mut self.records.write().unwrap())
    }

    /// How many instances answer.
    pub fn len(&self) -> usize {
        self.records.read().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a cell's DNS server needs.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Where it listens (the bridge's gateway, port 53).
    pub listen: SocketAddr,
    /// The internal domain.
    pub domain: String,
    /// Where other names go.
    pub upstream: Upstream,
    /// How often the whole set of actual LRPs is read again (events keep it current
    /// in between).
    pub resync_every: Duration,
}

impl DnsConfig {
    /// A cell's: on its gateway address, port 53, for its network's internal domain,
    /// forwarding to the host's resolvers.
    pub fn for_network(net: &NetworkConfig) -> DnsConfig {
        DnsConfig {
            listen: SocketAddr::from((net.gateway, PORT)),
            domain: net.internal_domain.clone(),
            upstream: Upstream::System,
            resync_every: Duration::from_secs(30),
        }
    }
}

/// A running DNS server and the BBS feed of its table.
pub struct Dns {
    server: DnsServer,
    table: Arc<Table>,
    feed: tokio::task::JoinHandle<()>,
}

impl Dns {
    /// Listens at `cfg.listen` and follows `bbs`'s actual LRPs into the table; counts
    /// answers in `queries` (label `answer`, see [`AnswerKind`]). Returns once it
    /// listens: the table fills as the BBS answers (never waited for).
    pub async fn start(
        cfg: &DnsConfig,
        bbs: Arc<dyn RouterBbs>,
        queries: IntCounterVec,
    ) -> Result<Dns, DnsError> {
        let table = Table::new(&cfg.domain)?;
        let server = DnsServer::start(cfg.listen, table.clone(), &cfg.upstream, queries).await?;
        let (feed_table, every) = (table.clone(), cfg.resync_every);
        let feed = tokio::spawn(async move {
            let (ready, _) = watch::channel(false);
            lattice_bbs_client::follow(bbs.as_ref(), feed_table.as_ref(), every, &ready).await
        });
        Ok(Dns {
            server,
            table,
            feed,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The records it answers from.
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// Stops following the BBS and stops listening.
    pub async fn stop(self) {
        self.feed.abort();
        self.server.stop().await;
    }
}

/// The counter of queries by answer kind, for a cell's registry.
pub fn queries_metric() -> IntCounterVec {
    IntCounterVec::new(
        prometheus::Opts::new(
            "cell_dns_queries_total",
            "Queries to the cell's DNS server, by answer (address, nodata, nxdomain, forwarded, servfail, refused).",
        ),
        &["answer"],
    )
    .expect("a valid metric")
}

/// A container's /etc/resolv.conf: the cell's DNS server, the internal domain
/// searched (so `APP` alone resolves), one dot enough to be tried as is first.
pub fn resolv_conf(gateway: Ipv4Addr, domain: &str) -> String {
    format!(
        "nameserver {gateway}\nsearch {}\noptions ndots:1\n",
        domain.trim_end_matches('.')
    )
}

/// A container's /etc/hosts: localhost and its own name.
pub fn hosts(ip: Ipv4Addr, hostname: &str) -> String {
    format!("127.0.0.1 localhost\n::1 localhost\n{ip} {hostname}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_pointed_at_the_gateway_and_named() {
        assert_eq!(
            resolv_conf(Ipv4Addr::new(10, 255, 3, 1), "apps.internal."),
            "nameserver 10.255.3.1\nsearch apps.internal\noptions ndots:1\n"
        );
        assert_eq!(
            hosts(Ipv4Addr::new(10, 255, 3, 7), "web-0"),
            "127.0.0.1 localhost\n::1 localhost\n10.255.3.7 web-0\n"
        );
    }

    #[test]
    fn a_bad_internal_domain_is_refused_with_its_name() {
        for bad in ["", ".", "a..b", "bad domain!"] {
            let e = Table::new(bad).unwrap_err().to_string();
            assert!(
                e.contains("internal domain") && e.contains("apps.internal"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            Table::new("Apps.Internal.").unwrap().domain(),
            "apps.internal"
        );
    }

    #[test]
    fn fixed_names_answer_outside_the_domain() {
        let t = Table::new("apps.internal").unwrap();
        assert_eq!(
            t.answer("file-server.service.cf.internal."),
            Answer::Forward
        );
        t.add_static(
            "File-Server.Service.CF.Internal",
            Ipv4Addr::new(10, 9, 0, 1),
        );
        for name in [
            "file-server.service.cf.internal.",
            "FILE-SERVER.service.cf.internal",
        ] {
            assert_eq!(
                t.answer(name),
                Answer::Addresses(vec![Ipv4Addr::new(10, 9, 0, 1)]),
                "{name}"
            );
        }
        assert_eq!(t.answer("service.cf.internal"), Answer::Forward);
        assert_eq!(t.answer("nope.apps.internal"), Answer::NxDomain);
    }

    #[test]
    fn a_missing_bridge_address_is_said_plainly() {
        let e = DnsError::Bind {
            addr: "10.9.9.1:53".parse().unwrap(),
            source: std::io::ErrorKind::AddrNotAvailable.into(),
        };
        assert!(e.to_string().contains("the bridge must exist"), "{e}");
    }
}
