//! The HTTP reverse proxy: `Host: APP.DOMAIN` → a RUNNING instance.
//!
//! - HTTP/1.1 and HTTP/2 (h2c) from clients; keep-alive pools to backends
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

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backend::{ExchangeError, Outgoing, Pool};
use crate::emitter::Routes;
use crate::metrics as m;
use crate::table::{Endpoint, HostEntry};
use crate::timeouts::{Clock, Slot};

pub use crate::body::{Body, BoxError};

pub const INSTANCE_HEADER: &str = "x-lattice-instance";
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Header names as values: a `&str` is parsed into a name at every lookup,
/// and inserting by `&str` copies a custom name.
const INSTANCE: HeaderName = HeaderName::from_static(INSTANCE_HEADER);
const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Instances in the order to try them (inline: no allocation for a few).
type Candidates<'e> = smallvec::SmallVec<[&'e Endpoint; 8]>;

/// A request's id: the client's when usable, else one made here, kept as
/// text (it goes into the instance's request head as bytes).
enum RequestId {
    Kept(HeaderValue),
    Made([u8; uuid::fmt::Hyphenated::LENGTH]),
}

impl RequestId {
    fn as_str(&self) -> &str {
        match self {
            RequestId::Kept(v) => v.to_str().unwrap_or("-"),
            RequestId::Made(text) => std::str::from_utf8(text).unwrap_or("-"),
        }
    }
}

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
        }
    }
}

pub struct Proxy {
    /// This event loop's view of the routes.
    routes: Arc<crate::emitter::View>,
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

/// Hop-by-hop headers, never forwarded (RFC 9110 §7.6.1).
pub(crate) fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The host a request is for: the URI authority (HTTP/2, absolute form) or
/// the Host header, without port, lowercased (copied only when it was not).
pub fn host_of<'r>(uri: &'r Uri, headers: &'r HeaderMap) -> Option<Cow<'r, str>> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => headers.get(header::HOST)?.to_str().ok()?,
    };
    let raw = raw.rsplit_once('@').map(|(_, h)| h).unwrap_or(raw);
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        raw.split(':').next().unwrap_or("")
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        None
    } else if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Counts a request in flight to an instance until dropped (least-connections
/// only: every loop touching one shared counter per request costs throughput).
struct InFlight<'a>(Option<&'a std::sync::atomic::AtomicUsize>);

impl InFlight<'_> {
    fn new(e: &Endpoint, balance: Balance) -> InFlight<'_> {
        if balance != Balance::LeastConnections {
            return InFlight(None);
        }
        e.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Some(&e.in_flight))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.0 {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What the access log and metrics record about one request.
struct Access<'a> {
    started: Instant,
    method: &'a Method,
    uri: &'a Uri,
    host: &'a str,
    app: &'a str,
    /// The host's entry, when it is routed (holds the app's metric handles).
    entry: Option<&'a HostEntry>,
    log_guid: &'a str,
    request_id: &'a str,
    logs: Option<&'a crate::logs::LogSink>,
}

impl Access<'_> {
    fn path(&self) -> &str {
        self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    }

    fn done(&self, status: StatusCode, served_by: Option<&Endpoint>) {
        let instance = served_by.map(|e| e.index);
        // The instance's own app, when several share the host.
        let log_guid = match served_by {
            Some(e) if !e.log_guid.is_empty() => e.log_guid.as_str(),
            _ => self.log_guid,
        };
        let elapsed = self.started.elapsed();
        match self.entry {
            Some(entry) => {
                let app = entry.metrics.get_or_init(|| m::AppMetrics::new(self.app));
                if status != StatusCode::OK {
                    m::REQUESTS
                        .with_label_values(&[self.app, status.as_str()])
                        .inc();
                }
                app.observe(status == StatusCode::OK, elapsed.as_secs_f64());
            }
            None => {
                m::REQUESTS
                    .with_label_values(&[self.app, status.as_str()])
                    .inc();
                m::LATENCY
                    .with_label_values(&[self.app])
                    .observe(elapsed.as_secs_f64());
            }
        }
        tracing::info!(
            target: "rtr",
            source = "RTR",
            app = self.app,
            host = self.host,
            method = %self.method,
            path = %self.path(),
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1e3,
            instance = instance.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            request_id = self.request_id,
            "request"
        );
        if let (Some(logs), false) = (self.logs, log_guid.is_empty()) {
            let line = format!(
                "{} - \"{} {}\" {} response_time:{:.6} app_index:{} x_request_id:{}",
                self.host,
                self.method,
                self.path(),
                status.as_u16(),
                elapsed.as_secs_f64(),
                instance
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
                self.request_id,
            );
            if logs
                .try_send(lattice_specs::logs::LogMessage::new(
                    self.log_guid,
                    "RTR",
                    line,
                ))
                .is_err()
            {
                m::ACCESS_LINES_DROPPED.inc();
            }
        }
    }
}

impl Proxy {
    pub fn new(routes: Arc<Routes>, cfg: ProxyConfig) -> Arc<Proxy> {
        Arc::new(Proxy {
            routes: routes.view(),
            pool: Pool::new(Duration::from_secs(90), 1024),
            clock: Clock::new(),
            benched: Mutex::new(HashMap::new()),
            benched_count: Default::default(),
            id_base: uuid::Uuid::new_v4().as_u64_pair(),
            id_next: Default::default(),
            cfg,
        })
    }

    /// Serve connections from `listener` until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // One ticker per loop: timeouts, then what this loop counted into the shared metrics.
        let me = Arc::downgrade(&self);
        tokio::spawn(Clock::run(Arc::downgrade(&self.clock), move || {
            if let Some(p) = me.upgrade() {
                p.routes.flush_metrics();
            }
        }));
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
            let proxy = self.clone();
            // Formatted once per connection, not per request.
            let peer_ip = HeaderValue::try_from(peer.ip().to_string())
                .expect("an IP address is a valid header value");
            tokio::spawn(async move {
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
                    let peer_ip = peer_ip.clone();
                    let slot = slot.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(req, &peer_ip, &slot).await) }
                });
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
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

    /// The headers an instance gets, in order: the client's without hop-by-hop
    /// ones (but `Upgrade` and `Connection` for an upgrade) and without those
    /// set here, then `X-Forwarded-For` (the client appended to what came),
    /// `X-Forwarded-Proto` (unless it came) and `X-Request-Id`.
    fn forwarded_headers(
        from: &HeaderMap,
        peer_ip: &HeaderValue,
        request_id: &RequestId,
        keep_upgrade: bool,
        mut each: impl FnMut(&HeaderName, &[u8]),
    ) {
        for (k, v) in from {
            let upgrade = keep_upgrade && (k == header::UPGRADE || k == header::CONNECTION);
            if (hop_by_hop(k) && !upgrade) || k == X_FORWARDED_FOR || k == REQUEST_ID {
                continue;
            }
            each(k, v.as_bytes());
        }
        match from.get(&X_FORWARDED_FOR) {
            Some(prev) => {
                let mut v = Vec::with_capacity(prev.len() + 2 + peer_ip.len());
                v.extend_from_slice(prev.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(peer_ip.as_bytes());
                each(&X_FORWARDED_FOR, &v);
            }
            None => each(&X_FORWARDED_FOR, peer_ip.as_bytes()),
        }
        if !from.contains_key(&X_FORWARDED_PROTO) {
            each(&X_FORWARDED_PROTO, b"http");
        }
        each(&REQUEST_ID, request_id.as_str().as_bytes());
    }

    fn forward_headers(
        from: &HeaderMap,
        peer_ip: &HeaderValue,
        request_id: &RequestId,
        keep_upgrade: bool,
    ) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(from.len() + 3);
        Self::forwarded_headers(from, peer_ip, request_id, keep_upgrade, |k, v| {
            // Every value here came from a valid header value.
            if let Ok(v) = HeaderValue::from_bytes(v) {
                h.append(k.clone(), v);
            }
        });
        h
    }

    /// A request's head as an instance gets it (HTTP/1.1, whatever the client
    /// spoke), for a body of `body_len` bytes.
    fn encode_head(
        parts: &hyper::http::request::Parts,
        peer_ip: &HeaderValue,
        request_id: &RequestId,
        body_len: usize,
    ) -> bytes::BytesMut {
        let mut out = bytes::BytesMut::with_capacity(512);
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .as_bytes(),
        );
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !parts.headers.contains_key(header::HOST) {
            // HTTP/2 clients name the host in the URI.
            if let Some(a) = parts.uri.authority() {
                out.extend_from_slice(b"host: ");
                out.extend_from_slice(a.as_str().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        Self::forwarded_headers(&parts.headers, peer_ip, request_id, false, |k, v| {
            // The body is whole: its length is ours to say, and nothing waits for a 100.
            if k != header::CONTENT_LENGTH && k != header::EXPECT {
                out.extend_from_slice(k.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(v);
                out.extend_from_slice(b"\r\n");
            }
        });
        let says_length = body_len > 0
            || parts.headers.contains_key(header::CONTENT_LENGTH)
            || parts.headers.contains_key(header::TRANSFER_ENCODING)
            || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        if says_length {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(body_len.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer_ip: &HeaderValue,
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
        let Some(entry) = self.routes.lookup(&host) else {
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
            let (resp, instance) = self.upgrade(req, &candidates, peer_ip, &request_id).await;
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
            .forward(&parts, body, &candidates, peer_ip, &request_id, slot)
            .await;
        done(&parts.method, &parts.uri, &host, resp.status(), instance);
        resp
    }

    async fn forward<'e>(
        &self,
        parts: &hyper::http::request::Parts,
        body: Incoming,
        candidates: &[&'e Endpoint],
        peer_ip: &HeaderValue,
        request_id: &RequestId,
        slot: &Slot,
    ) -> (Response<Body>, Option<&'e Endpoint>) {
        let body = if hyper::body::Body::is_end_stream(&body) {
            Ok(Bytes::new())
        } else {
            Limited::new(body, self.cfg.max_body_bytes)
                .collect()
                .await
                .map(|b| b.to_bytes())
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                let too_big = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                return if too_big {
                    (
                        full(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("request body larger than {} bytes", self.cfg.max_body_bytes),
                        ),
                        None,
                    )
                } else {
                    (
                        full(
                            StatusCode::BAD_REQUEST,
                            format!("could not read the request body: {e}"),
                        ),
                        None,
                    )
                };
            }
        };
        let outgoing = Outgoing::new(
            Self::encode_head(parts, peer_ip, request_id, body.len()),
            body,
            parts.method == Method::HEAD,
            matches!(
                parts.method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
            ),
        );
        let mut last_error = String::new();
        for ep in candidates.iter().take(self.cfg.max_attempts.max(1)) {
            let guard = InFlight::new(ep, self.cfg.balance);
            let r = slot
                .within(self.cfg.request_timeout, self.pool.send(ep.addr, &outgoing))
                .await;
            drop(guard);
            match r {
                Ok(Ok(mut resp)) => {
                    resp.headers_mut().insert(INSTANCE, ep.index_header.clone());
                    return (resp, Some(*ep));
                }
                Ok(Err(ExchangeError::Connect(e))) => {
                    m::BACKEND_ERRORS.with_label_values(&["connect"]).inc();
                    tracing::warn!(instance = ep.index, addr = %ep.addr, error = %e, "instance refused the connection; trying another");
                    self.bench(ep.addr);
                    last_error = e.to_string();
                }
                Ok(Err(e)) => {
                    // The request may have reached the app: not retried.
                    m::BACKEND_ERRORS.with_label_values(&["other"]).inc();
                    return (
                        full(
                            StatusCode::BAD_GATEWAY,
                            format!("502 Bad Gateway: instance {} failed: {e}", ep.index),
                        ),
                        Some(*ep),
                    );
                }
                Err(_) => {
                    m::BACKEND_ERRORS.with_label_values(&["timeout"]).inc();
                    let secs = self.cfg.request_timeout.as_secs_f64();
                    return (
                        full(
                            StatusCode::GATEWAY_TIMEOUT,
                            format!(
                                "504 Gateway Timeout: instance {} did not answer within {secs} s",
                                ep.index
                            ),
                        ),
                        Some(*ep),
                    );
                }
            }
        }
        (
            full(
                StatusCode::BAD_GATEWAY,
                format!("502 Bad Gateway: no instance accepted the connection ({last_error})"),
            ),
            None,
        )
    }

    /// Pass an upgraded connection (WebSocket…) through to an instance.
    async fn upgrade<'e>(
        &self,
        mut req: Request<Incoming>,
        candidates: &[&'e Endpoint],
        peer_ip: &HeaderValue,
        request_id: &RequestId,
    ) -> (Response<Body>, Option<&'e Endpoint>) {
        let client_side = hyper::upgrade::on(&mut req);
        let headers = Self::forward_headers(req.headers(), peer_ip, request_id, true);
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        for ep in candidates.iter().take(self.cfg.max_attempts.max(1)) {
            let stream = match tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(ep.addr),
            )
            .await
            {
                Ok(Ok(s)) => s,
                _ => {
                    m::BACKEND_ERRORS.with_label_values(&["connect"]).inc();
                    self.bench(ep.addr);
                    continue;
                }
            };
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                    .await
            else {
                continue;
            };
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
            let mut fwd = Request::builder()
                .method(req.method().clone())
                .uri(path.clone());
            *fwd.headers_mut().unwrap() = headers.clone();
            let Ok(fwd) = fwd.body(Empty::new()) else {
                break;
            };
            let mut resp = match tokio::time::timeout(
                self.cfg.request_timeout,
                sender.send_request(fwd),
            )
            .await
            {
                Ok(Ok(r)) => r,
                _ => {
                    m::BACKEND_ERRORS.with_label_values(&["other"]).inc();
                    return (
                        full(
                            StatusCode::BAD_GATEWAY,
                            format!("502 Bad Gateway: instance {} failed the upgrade", ep.index),
                        ),
                        Some(*ep),
                    );
                }
            };
            let mut out = Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                out = out.header(k, v);
            }
            out = out.header(INSTANCE, ep.index_header.clone());
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                let backend_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    if let (Ok(c), Ok(b)) = tokio::join!(client_side, backend_side) {
                        let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
                    }
                });
                return (out.body(Body::empty()).unwrap(), Some(*ep));
            }
            let body = Body::stream(resp.into_body().map_err(|e| Box::new(e) as BoxError));
            return (out.body(body).unwrap(), Some(*ep));
        }
        (
            full(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: no instance accepted the connection".into(),
            ),
            None,
        )
    }
}

/// Serve on `threads` event loops, each a single-threaded runtime with its own
/// `SO_REUSEPORT` accept socket and its own backend connection pool, the way
/// nginx runs a worker per core: a request never hops between threads.
/// Returns the bound address once every loop listens.
pub fn serve_per_core(
    routes: Arc<Routes>,
    cfg: ProxyConfig,
    addr: SocketAddr,
    threads: usize,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, Vec<std::thread::JoinHandle<()>>)> {
    let bind = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        // Listen through std so no runtime is needed here.
        // SAFETY: the fd comes straight from the socket, which gives it up.
        let listener = unsafe {
            <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(
                std::os::fd::IntoRawFd::into_raw_fd(socket),
            )
        };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&listener);
        if unsafe { libc::listen(raw, 4096) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        listener.set_nonblocking(true)?;
        Ok(listener)
    };
    let first = bind(addr)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads.max(1) {
        listeners.push(bind(bound)?);
    }
    let mut handles = vec![];
    for (i, l) in listeners.into_iter().enumerate() {
        let (routes, cfg, shutdown) = (routes.clone(), cfg.clone(), shutdown.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("router-{i}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime per router thread");
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(l).expect("registering the listener");
                        Proxy::new(routes, cfg).serve(listener, shutdown).await;
                    });
                })?,
        );
    }
    Ok((bound, handles))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: Option<&str>, uri: &str) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap()
    }

    fn host(host: Option<&str>, uri: &str) -> Option<String> {
        let r = req(host, uri);
        host_of(r.uri(), r.headers()).map(Cow::into_owned)
    }

    #[test]
    fn host_comes_from_authority_or_header_without_port() {
        assert_eq!(
            host(Some("Hello.Lattice.Localhost:8080"), "/"),
            Some("hello.lattice.localhost".into())
        );
        assert_eq!(
            host(Some("hello.lattice.localhost."), "/"),
            Some("hello.lattice.localhost".into())
        );
        assert_eq!(host(None, "http://app.x:81/p"), Some("app.x".into()));
        assert_eq!(host(Some("[::1]:8080"), "/"), Some("::1".into()));
        assert_eq!(host(None, "/"), None);
        assert_eq!(host(Some(""), "/"), None);
        // Already lowercase: borrowed from the request, not copied.
        let r = req(Some("app.lattice.localhost:8080"), "/");
        assert!(matches!(
            host_of(r.uri(), r.headers()),
            Some(Cow::Borrowed("app.lattice.localhost"))
        ));
    }

    #[test]
    fn upgrade_requests_are_recognised() {
        let r = Request::builder()
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(r.headers()));
        let r = Request::builder()
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(!is_upgrade(r.headers()));
    }
}
