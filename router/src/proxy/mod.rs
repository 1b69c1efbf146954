//! The HTTP reverse proxy: `Host: APP.DOMAIN` → a RUNNING instance.
//!
//! - HTTP/1.1 and HTTP/2 (h2c, or h2 by ALPN over HTTPS: `crate::tls`) from
//!   clients, plain HTTP optionally redirected to HTTPS; keep-alive pools to backends
//!   (`backend`), driven by the task serving the client's connection.
//! - Round-robin by default, least-connections as an option.
//! - A refused connection is retried on another instance, and the refusing
//!   instance is benched briefly; 404 for an unknown host, 503 when the app has
//!   no running instance, 502 when every attempt failed, 504 on timeout.
//! - Headers: `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Request-Id` (kept or
//!   generated) to the backend; `X-Lattice-Instance` (index) on responses.
//! - WebSocket (any `Upgrade`) passed through byte for byte.
//! - A client may half-close after its request and still get the answer.
//! - Limits: header size and header read time (slowloris), request bodies
//!   buffered up to a limit (so a refused attempt can be retried), backend
//!   response timeout. A slow client or backend never stalls other requests.

mod access;
mod forward;
mod head;
mod listen;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::backend::Pool;
use crate::emitter::Routes;
use crate::metrics as m;
use crate::table::{Endpoint, HostEntry};
use crate::timeouts::{Clock, Slot};
use crate::tls::Terminator;
use access::Access;
use head::{https_location, is_upgrade, RequestId, REQUEST_ID};

pub use crate::body::{Body, BoxError};
pub(crate) use head::hop_by_hop;
pub use head::{host_of, INSTANCE_HEADER, REQUEST_ID_HEADER};
pub use listen::{serve_per_core, Bound};

/// Instances in the order to try them (inline: no allocation for a few).
type Candidates<'e> = smallvec::SmallVec<[&'e Endpoint; 8]>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConnections,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub balance: Balance,
    /// Time for a backend to answer with its response headers.
    pub request_timeout: Duration,
    /// How long an instance that refused a connection is tried last.
    pub bench_for: Duration,
    /// Instances tried per request.
    pub max_attempts: usize,
    /// Time a client has to send its request headers (slowloris bound).
    pub header_read_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Largest request body accepted (bodies are buffered to allow a retry).
    pub max_body_bytes: usize,
    /// The apps' domain, named in "unknown host" answers.
    pub domain: String,
    /// Where access lines for the apps' log streams go (none: only the router's log).
    pub logs: Option<crate::logs::LogSink>,
    /// Answer plain HTTP requests with a 308 to HTTPS on this port (`--redirect-http`).
    pub redirect_to_https: Option<u16>,
    /// Hosts served by a fixed backend ahead of any app's route, e.g. `lattice up`'s
    /// `receptor.DOMAIN` and `doppler.DOMAIN` to its API (an app cannot take them).
    pub fixed: Vec<FixedHost>,
}

/// A host the router sends to one address, whatever the apps' routes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedHost {
    /// Lowercase, without a port.
    pub host: String,
    pub addr: SocketAddr,
    /// Named so in metrics and the router's own log.
    pub name: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            balance: Balance::RoundRobin,
            request_timeout: Duration::from_secs(60),
            bench_for: Duration::from_secs(2),
            max_attempts: 3,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
            domain: "lattice.localhost".into(),
            logs: None,
            redirect_to_https: None,
            fixed: Vec::new(),
        }
    }
}

/// The client end of a connection, as the instance is told of it.
pub struct Client {
    /// Its IP address as `X-Forwarded-For` carries it (formatted once per connection).
    pub ip: HeaderValue,
    /// It came over TLS the router terminated: `X-Forwarded-Proto: https`.
    pub tls: bool,
}

pub struct Proxy {
    /// This event loop's view of the routes.
    routes: Arc<crate::emitter::View>,
    /// `cfg.fixed` as host entries (looked up first).
    fixed: HashMap<String, Arc<HostEntry>>,
    pool: Arc<Pool>,
    /// This loop's coarse clock for request timeouts.
    clock: Arc<Clock>,
    benched: Mutex<HashMap<SocketAddr, Instant>>,
    /// How many instances are benched (lets the common case skip the lock).
    benched_count: std::sync::atomic::AtomicUsize,
    /// Request ids: a random base per process plus a counter (no syscall per request).
    id_base: (u64, u64),
    id_next: std::sync::atomic::AtomicU64,
    cfg: ProxyConfig,
}

fn full(status: StatusCode, msg: String) -> Response<Body> {
    let mut r = Response::new(Body::whole(Bytes::from(msg + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Proxy {
    pub fn new(routes: Arc<Routes>, cfg: ProxyConfig) -> Arc<Proxy> {
        let fixed = cfg
            .fixed
            .iter()
            .map(|f| {
                (
                    f.host.to_ascii_lowercase(),
                    Arc::new(HostEntry::fixed(&f.name, f.addr)),
                )
            })
            .collect();
        Arc::new(Proxy {
            routes: routes.view(),
            fixed,
            pool: Pool::new(Duration::from_secs(90), 1024),
            clock: Clock::new(),
            benched: Mutex::new(HashMap::new()),
            benched_count: Default::default(),
            id_base: uuid::Uuid::new_v4().as_u64_pair(),
            id_next: Default::default(),
            cfg,
        })
    }

    /// Serve plain HTTP connections from `listener` and, when given, HTTPS ones
    /// from `https` (TLS terminated here) until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        https: Option<(TcpListener, Arc<Terminator>)>,
        shutdown: watch::Receiver<bool>,
    ) {
        // One ticker per loop: timeouts, then what this loop counted into the shared metrics.
        let me = Arc::downgrade(&self);
        tokio::spawn(Clock::run(Arc::downgrade(&self.clock), move || {
            if let Some(p) = me.upgrade() {
                p.routes.flush_metrics();
            }
        }));
        let plain = self.clone().accept_loop(
            listener,
            false,
            shutdown.clone(),
            |proxy, stream, client| {
                tokio::spawn(proxy.serve_connection(stream, client));
            },
        );
        let Some((listener, tls)) = https else {
            return plain.await;
        };
        let within = self.cfg.header_read_timeout;
        let https = self.accept_loop(listener, true, shutdown, move |proxy, stream, client| {
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Ok(stream) = tls.accept(stream, within).await {
                    proxy.serve_connection(stream, client).await;
                }
            });
        });
        tokio::join!(plain, https);
    }

    /// Accepts connections from `listener` and hands each to `serve` with what
    /// is known of its client, until `shutdown` turns true.
    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        tls: bool,
        mut shutdown: watch::Receiver<bool>,
        serve: impl Fn(Arc<Proxy>, TcpStream, Arc<Client>),
    ) {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
            };
            let _ = stream.set_nodelay(true);
            // Formatted once per connection, not per request.
            let ip = HeaderValue::try_from(peer.ip().to_string())
                .expect("an IP address is a valid header value");
            serve(self.clone(), stream, Arc::new(Client { ip, tls }));
        }
    }

    /// Serves one client connection (HTTP/1.1 or HTTP/2) until it closes.
    async fn serve_connection<I>(self: Arc<Self>, io: I, client: Arc<Client>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = self;
        let slot = proxy.clock.slot();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(slot.hyper_timer())
            .header_read_timeout(proxy.cfg.header_read_timeout)
            // A client may shut its write side after its request and
            // still get the answer (`nc -N`). It also spares hyper a read
            // for EOF while every request is in flight, which cost an
            // 8 KiB buffer per request. A client that goes away
            // mid-request is seen when its answer is written.
            .half_close(true)
            .max_buf_size(proxy.cfg.max_header_bytes.max(8192));
        let svc = service_fn(move |req| {
            let proxy = proxy.clone();
            let client = client.clone();
            let slot = slot.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, &client, &slot).await) }
        });
        let _ = builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc)
            .await;
    }

    /// Instances in the order to try them: the balancing choice first, benched ones last.
    fn candidates<'e>(&self, entry: &'e HostEntry) -> Candidates<'e> {
        let n = entry.endpoints.len();
        let start = entry.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut order: Candidates = (0..n).map(|i| &*entry.endpoints[(start + i) % n]).collect();
        if self.cfg.balance == Balance::LeastConnections {
            order.sort_by_key(|e| e.in_flight.load(Ordering::Relaxed));
        }
        if self.benched_count.load(Ordering::Relaxed) > 0 {
            let now = Instant::now();
            let mut benched = self.benched.lock().unwrap();
            benched.retain(|_, until| *until > now);
            self.benched_count.store(benched.len(), Ordering::Relaxed);
            order.sort_by_key(|e| benched.contains_key(&e.addr));
        }
        order
    }

    fn bench(&self, addr: SocketAddr) {
        let mut benched = self.benched.lock().unwrap();
        benched.insert(addr, Instant::now() + self.cfg.bench_for);
        self.benched_count.store(benched.len(), Ordering::Relaxed);
    }

    /// The client's request id when it is usable, else a new one.
    fn request_id(&self, headers: &HeaderMap) -> RequestId {
        if let Some(v) = headers.get(&REQUEST_ID) {
            if !v.is_empty() && v.len() <= 200 && v.to_str().is_ok() {
                return RequestId::Kept(v.clone());
            }
        }
        let n = self.id_next.fetch_add(1, Ordering::Relaxed);
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        uuid::Uuid::from_u64_pair(self.id_base.0, self.id_base.1.wrapping_add(n))
            .hyphenated()
            .encode_lower(&mut text);
        RequestId::Made(text)
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: &Client,
        conn_slot: &Arc<Slot>,
    ) -> Response<Body> {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let request_id = self.request_id(&parts.headers);
        let Some(host) = host_of(&parts.uri, &parts.headers) else {
            m::REQUESTS.with_label_values(&["-", "400"]).inc();
            return full(
                StatusCode::BAD_REQUEST,
                "no Host header: say which app you want, e.g. Host: APP.lattice.localhost".into(),
            );
        };
        if let Some(port) = self.cfg.redirect_to_https {
            if !client.tls {
                m::REQUESTS.with_label_values(&["-", "308"]).inc();
                let mut r = full(
                    StatusCode::PERMANENT_REDIRECT,
                    "308 Permanent Redirect: this router serves apps over HTTPS".into(),
                );
                if let Ok(to) = HeaderValue::try_from(https_location(&host, port, &parts.uri)) {
                    r.headers_mut().insert(header::LOCATION, to);
                }
                return r;
            }
        }
        let entry = match self.fixed.get(host.as_ref()) {
            Some(e) => Some(e.clone()),
            None => self.routes.lookup(&host),
        };
        let Some(entry) = entry else {
            let a = Access {
                started,
                method: &parts.method,
                uri: &parts.uri,
                host: &host,
                app: "-",
                entry: None,
                log_guid: "",
                request_id: request_id.as_str(),
                logs: None,
            };
            a.done(StatusCode::NOT_FOUND, None);
            let domain = &self.cfg.domain;
            return full(StatusCode::NOT_FOUND, format!("404 Not Found: no app is routed at {host}. Apps answer at APP.{domain}; `ltc list` shows the apps and their routes."));
        };
        let app = entry
            .process_guids
            .first()
            .map(String::as_str)
            .unwrap_or_default();
        let done = |method: &Method,
                    uri: &Uri,
                    host: &str,
                    status: StatusCode,
                    instance: Option<&Endpoint>| {
            let a = Access {
                started,
                method,
                uri,
                host,
                app,
                entry: Some(&entry),
                log_guid: &entry.log_guid,
                request_id: request_id.as_str(),
                logs: self.cfg.logs.as_ref(),
            };
            a.done(status, instance);
        };
        if entry.endpoints.is_empty() {
            done(
                &parts.method,
                &parts.uri,
                &host,
                StatusCode::SERVICE_UNAVAILABLE,
                None,
            );
            return full(StatusCode::SERVICE_UNAVAILABLE, format!("503 Service Unavailable: {app} has no running instance right now. `ltc status {app}` says why."));
        }
        let candidates = self.candidates(&entry);
        if is_upgrade(&parts.headers) {
            // The upgrade takes the request whole (its extensions carry the connection).
            let (method, uri, host) = (parts.method.clone(), parts.uri.clone(), host.into_owned());
            let req = Request::from_parts(parts, body);
            let (resp, instance) = self.upgrade(req, &candidates, client, &request_id).await;
            done(&method, &uri, &host, resp.status(), instance);
            return resp;
        }
        // HTTP/2 serves each request as a task of its own: its own slot.
        let own_slot;
        let slot = if parts.version == hyper::Version::HTTP_2 {
            own_slot = self.clock.slot();
            &own_slot
        } else {
            conn_slot
        };
        let (resp, instance) = self
            .forward(&parts, body, &candidates, client, &request_id, slot)
            .await;
        done(&parts.method, &parts.uri, &host, resp.status(), instance);
        resp
    }
}
