//! The DNS server itself (hickory-server), UDP and TCP on one address: names in the
//! internal domain answered from the [`Table`], everything else forwarded to the
//! upstream resolvers (hickory-resolver), SERVFAIL at once when there are none.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::{Time, TokioRuntimeProvider};
use hickory_resolver::TokioResolver;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use prometheus::IntCounterVec;

use super::records::Answer;
use super::{DnsError, Table, TTL_SECONDS};

/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// How long stopping waits for answers in flight (a cell's stop never waits longer).
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Where names outside the internal domain are forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The resolvers of this host's /etc/resolv.conf.
    System,
    /// These servers (UDP, then TCP on truncation).
    Servers(Vec<SocketAddr>),
}

/// What a query was answered with (the metric's `answer` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// Addresses of an app's instances.
    Address,
    /// A name in the domain with no record of the asked type.
    NoData,
    NxDomain,
    /// Forwarded, and the upstream answered (whatever it answered).
    Forwarded,
    /// Forwarding failed, or no upstream.
    ServFail,
    /// Not a query this server answers (an update, a malformed message).
    Refused,
}

impl AnswerKind {
    pub fn label(self) -> &'static str {
        match self {
            AnswerKind::Address => "address",
            AnswerKind::NoData => "nodata",
            AnswerKind::NxDomain => "nxdomain",
            AnswerKind::Forwarded => "forwarded",
            AnswerKind::ServFail => "servfail",
            AnswerKind::Refused => "refused",
        }
    }
}

/// Builds the forwarding resolver; `None` (SERVFAIL for outside names) when there
/// is no upstream. Upstreams at `listen` itself are left out (no loop).
fn resolver(upstream: &Upstream, listen: SocketAddr) -> Option<TokioResolver> {
    let (mut config, mut opts) = match upstream {
        Upstream::System => match hickory_resolver::system_conf::read_system_conf() {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "no resolvers in /etc/resolv.conf: names outside the internal domain get SERVFAIL");
                return None;
            }
        },
        Upstream::Servers(servers) => {
            let config = ResolverConfig::from_name_servers(
                servers.iter().map(|s| name_server(*s)).collect(),
            );
            let opts = ResolverOpts::default();
            (config, opts)
        }
    };
    let servers: Vec<NameServerConfig> = config
        .name_servers()
        .iter()
        .filter(|s| {
            !s.connections
                .iter()
                .any(|c| SocketAddr::new(s.ip, c.port) == listen)
        })
        .cloned()
        .collect();
    if servers.is_empty() {
        tracing::warn!("no upstream resolver: names outside the internal domain get SERVFAIL");
        return None;
    }
    config = ResolverConfig::from_name_servers(servers);
    // Names reach us fully qualified: no search list, no hosts file, the
    // intermediate records (CNAMEs) kept for the client.
    opts.use_hosts_file = ResolveHosts::Never;
    opts.preserve_intermediates = true;
    opts.timeout = opts.timeout.min(Duration::from_secs(2));
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    *builder.options_mut() = opts;
    match builder.build() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the forwarding resolver: names outside the internal domain get SERVFAIL");
            None
        }
    }
}

fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// Answers queries: from the table, or forwarded.
pub struct Handler {
    table: Arc<Table>,
    upstream: Option<TokioResolver>,
    queries: IntCounterVec,
    /// Rotates an app's addresses between answers (clients mostly take the first).
    turn: AtomicUsize,
}

/// The records and response code of one answer.
struct Reply {
    kind: AnswerKind,
    code: ResponseCode,
    answers: Vec<Record>,
    authoritative: bool,
}

impl Reply {
    fn empty(kind: AnswerKind, code: ResponseCode, authoritative: bool) -> Reply {
        Reply {
            kind,
            code,
            answers: Vec::new(),
            authoritative,
        }
    }
}

impl Handler {
    async fn reply(&self, request: &Request) -> Reply {
        let refused = Reply::empty(AnswerKind::Refused, ResponseCode::Refused, false);
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            return Reply {
                code: ResponseCode::NotImp,
                ..refused
            };
        }
        let Ok(info) = request.request_info() else {
            return Reply {
                code: ResponseCode::FormErr,
                ..refused
            };
        };
        let query = info.query;
        let name = query.original().name().clone();
        let rtype = query.query_type();
        match self.table.answer(&name.to_ascii()) {
            Answer::Addresses(ips)
                if ips.is_empty() || !matches!(rtype, RecordType::A | RecordType::ANY) =>
            {
                Reply::empty(AnswerKind::NoData, ResponseCode::NoError, true)
            }
            Answer::Addresses(mut ips) => {
                let n = ips.len();
                ips.rotate_left(self.turn.fetch_add(1, Ordering::Relaxed) % n);
                Reply {
                    kind: AnswerKind::Address,
                    code: ResponseCode::NoError,
                    answers: ips
                        .into_iter()
                        .map(|ip| Record::from_rdata(name.clone(), TTL_SECONDS, RData::A(A(ip))))
                        .collect(),
                    authoritative: true,
                }
            }
            Answer::NxDomain => Reply::empty(AnswerKind::NxDomain, ResponseCode::NXDomain, true),
            Answer::Forward => self.forward(name, rtype).await,
        }
    }

    async fn forward(&self, mut name: hickory_proto::rr::Name, rtype: RecordType) -> Reply {
        let servfail = Reply::empty(AnswerKind::ServFail, ResponseCode::ServFail, false);
        let Some(resolver) = &self.upstream else {
            return servfail;
        };
        name.set_fqdn(true);
        match resolver.lookup(name.clone(), rtype).await {
            Ok(lookup) => Reply {
                kind: AnswerKind::Forwarded,
                code: ResponseCode::NoError,
                answers: lookup.answers().to_vec(),
                authoritative: false,
            },
            Err(e) if e.is_nx_domain() => {
                Reply::empty(AnswerKind::Forwarded, ResponseCode::NXDomain, false)
            }
            Err(e) if e.is_no_records_found() => {
                Reply::empty(AnswerKind::Forwarded, ResponseCode::NoError, false)
            }
            Err(e) => {
                tracing::debug!(%name, error = %e, "forwarding failed");
                servfail
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self.reply(request).await;
        self.queries.with_label_values(&[reply.kind.label()]).inc();
        tracing::trace!(answer = reply.kind.label(), code = %reply.code, "dns query");
        let edns = request.edns.as_ref().map(|asked| {
            let mut e = Edns::new();
            e.set_max_payload(asked.max_payload().max(512));
            e
        });
        let mut metadata = hickory_proto::op::Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = self.upstream.is_some();
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            reply.answers.iter(),
            None.iter(),
            None.iter(),
            None.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "could not send a DNS answer");
                let mut metadata = metadata;
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// A running DNS server; [`DnsServer::stop`] stops it.
pub struct DnsServer {
    server: hickory_server::Server<Handler>,
    addr: SocketAddr,
}

/// UDP and TCP sockets on one port of `listen`. With port 0, UDP's free port may
/// be taken for TCP: another port is tried then (a few times).
async fn bind_both(
    listen: SocketAddr,
) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener, SocketAddr)> {
    let mut tries = if listen.port() == 0 { 8 } else { 1 };
    loop {
        let udp = tokio::net::UdpSocket::bind(listen).await?;
        let addr = udp.local_addr()?;
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp, addr)),
            Err(e) if tries > 1 && e.kind() == std::io::ErrorKind::AddrInUse => tries -= 1,
            Err(e) => return Err(e),
        }
    }
}

impl DnsServer {
    /// Listens on `listen` (UDP and TCP, the same port), answering from `table` and
    /// forwarding the rest to `upstream`; counts answers in `queries` (label
    /// `answer`).
    pub async fn start(
        listen: SocketAddr,
        table: Arc<Table>,
        upstream: &Upstream,
        queries: IntCounterVec,
    ) -> Result<DnsServer, DnsError> {
        let bind_err = |source: std::io::Error| DnsError::Bind {
            addr: listen,
            source,
        };
        let (udp, tcp, addr) = bind_both(listen).await.map_err(bind_err)?;
        let handler = Handler {
            table,
            upstream: resolver(upstream, addr),
            queries,
            turn: AtomicUsize::new(0),
        };
        let mut server = hickory_server::Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, 64);
        tracing::info!(%addr, "DNS server listening (udp, tcp)");
        Ok(DnsServer { server, addr })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and waits (a little) for the answers in flight.
    pub async fn stop(mut self) {
        match tokio::time::timeout(STOP_WAIT, self.server.shutdown_gracefully()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "the DNS server stopped with an error"),
            Err(_) => tracing::debug!("the DNS server's connections outlived its stop; dropped"),
        }
    }
}
