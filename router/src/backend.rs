//! HTTP/1.1 exchanges with instances over a keep-alive pool, inside the
//! request's own task.
//!
//! A general HTTP client (hyper-util's) runs every backend connection as a
//! task of its own and hands requests, responses and body chunks across
//! channels: several task wake-ups per request. Here the task serving the
//! client's connection writes the request and reads the response itself,
//! and the pool is the event loop's own (one per loop, so its lock is never
//! contended). Requests arrive with their bodies already buffered (so a
//! refused attempt can be retried), which keeps the client side simple:
//! one write per request. Responses are parsed with `httparse` and framed by
//! `Content-Length`, chunked encoding or the end of the connection; a body
//! already in the read buffer becomes one frame, a longer one streams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Frame;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::proxy::{Body, BoxError};

/// Largest response head accepted from an instance.
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted from an instance.
const MAX_HEADERS: usize = 128;
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// Why an exchange failed, which decides what the router may do next.
#[derive(Debug)]
pub enum ExchangeError {
    /// No connection: nothing reached the instance, another one may be tried.
    Connect(std::io::Error),
    /// The instance failed after the request may have reached it.
    Failed(String),
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Connect(e) => write!(f, "connecting: {e}"),
            ExchangeError::Failed(e) => f.write_str(e),
        }
    }
}

/// A connection to an instance and what was read from it beyond the last response.
struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    buf: BytesMut,
}

/// Idle keep-alive connections by instance address.
pub struct Pool {
    idle: Mutex<Idle>,
    idle_timeout: Duration,
    max_idle_per_addr: usize,
    connect_timeout: Duration,
}

struct Idle {
    by_addr: HashMap<SocketAddr, Vec<(Conn, Instant)>>,
    last_sweep: Instant,
}

/// A request to send, as it goes on the wire: its head (request line and
/// headers, ending in an empty line) and its whole body.
pub struct Outgoing {
    /// The head, followed by the body when that is small (one write).
    wire: BytesMut,
    /// The body when it is not in `wire`.
    rest: Bytes,
    /// HEAD: the response has no body whatever its headers say.
    head_only: bool,
    /// Safe to send again when a reused connection turns out closed.
    idempotent: bool,
}

impl Outgoing {
    pub fn new(mut head: BytesMut, body: Bytes, head_only: bool, idempotent: bool) -> Outgoing {
        let rest = if body.len() <= READ_CHUNK {
            head.extend_from_slice(&body);
            Bytes::new()
        } else {
            body
        };
        Outgoing {
            wire: head,
            rest,
            head_only,
            idempotent,
        }
    }
}

impl Pool {
    pub fn new(idle_timeout: Duration, max_idle_per_addr: usize) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::new(Idle {
                by_addr: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            idle_timeout,
            max_idle_per_addr,
            connect_timeout: Duration::from_secs(2),
        })
    }

    /// The most recently used idle connection to `addr` that is still open.
    fn checkout(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap();
        let list = idle.by_addr.get_mut(&addr)?;
        while let Some((mut conn, since)) = list.pop() {
            if since.elapsed() >= self.idle_timeout {
                // Older ones are older still.
                list.clear();
                break;
            }
            // Readable while idle means closed (or garbage): not reusable. No
            // syscall unless the event loop saw the socket become readable.
            let mut probe = [0u8; 1];
            match conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    conn.buf.clear();
                    return Some(conn);
                }
                _ => continue,
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap();
        if now.duration_since(idle.last_sweep) >= Duration::from_secs(10) {
            idle.last_sweep = now;
            let timeout = self.idle_timeout;
            idle.by_addr.retain(|_, list| {
                list.retain(|(_, since)| now.duration_since(*since) < timeout);
                !list.is_empty()
            });
        }
        let list = idle.by_addr.entry(conn.addr).or_default();
        if list.len() < self.max_idle_per_addr {
            list.push((conn, now));
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, ExchangeError> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(ExchangeError::Connect(e)),
                Err(_) => {
                    return Err(ExchangeError::Connect(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no connection within {} s",
                            self.connect_timeout.as_secs_f64()
                        ),
                    )))
                }
            };
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            addr,
            buf: BytesMut::with_capacity(READ_CHUNK),
        })
    }

    /// Send `req` to `addr` and return the response once its head arrived; its
    /// body follows as the client reads it, and the connection returns to the
    /// pool when the body ends.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        req: &Outgoing,
    ) -> Result<Response<Body>, ExchangeError> {
        if let Some(conn) = self.checkout(addr) {
            match self.exchange(conn, req).await {
                Err(Attempt::Stale(_)) if req.idempotent => {}
                Err(Attempt::Stale(e)) | Err(Attempt::Failed(e)) => {
                    return Err(ExchangeError::Failed(e))
                }
                Ok(r) => return Ok(r),
            }
        }
        let conn = self.connect(addr).await?;
        match self.exchange(conn, req).await {
            Ok(r) => Ok(r),
            Err(Attempt::Stale(e)) | Err(Attempt::Failed(e)) => Err(ExchangeError::Failed(e)),
        }
    }

    async fn exchange(
        self: &Arc<Self>,
        mut conn: Conn,
        req: &Outgoing,
    ) -> Result<Response<Body>, Attempt> {
        let written = match conn.stream.write_all(&req.wire).await {
            Ok(()) if !req.rest.is_empty() => conn.stream.write_all(&req.rest).await,
            r => r,
        };
        if let Err(e) = written {
            return Err(Attempt::Stale(format!("sending the request: {e}")));
        }
        loop {
            let head = loop {
                match parse_head(&mut conn.buf, req.head_only)? {
                    Some(head) => break head,
                    None => {
                        let fresh = conn.buf.is_empty();
                        let n = read_more(&mut conn).await.map_err(|e| {
                            let msg = format!("reading the response: {e}");
                            if fresh {
                                Attempt::Stale(msg)
                            } else {
                                Attempt::Failed(msg)
                            }
                        })?;
                        if n == 0 {
                            let msg = "the connection closed before a response".to_string();
                            return Err(if fresh {
                                Attempt::Stale(msg)
                            } else {
                                Attempt::Failed(msg)
                            });
                        }
                    }
                }
            };
            // Interim responses (100 Continue, 103 Early Hints) are not forwarded.
            if head.interim {
                continue;
            }
            return Ok(self.respond(conn, head));
        }
    }

    fn respond(self: &Arc<Self>, mut conn: Conn, head: Head) -> Response<Body> {
        let mut resp = Response::new(Body::default());
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        let body: Body = match head.framing {
            Framing::Empty => {
                self.finish(conn, head.reusable);
                Body::default()
            }
            Framing::Length(n) if conn.buf.len() as u64 >= n => {
                let bytes = conn.buf.split_to(n as usize).freeze();
                self.finish(conn, head.reusable);
                Body::whole(bytes)
            }
            framing => Body::stream(BackendBody {
                conn: Some(conn),
                pool: self.clone(),
                state: match framing {
                    Framing::Length(n) => State::Length(n),
                    Framing::Chunked => State::ChunkSize,
                    _ => State::UntilClose,
                },
                reusable: head.reusable,
            }),
        };
        *resp.body_mut() = body;
        resp
    }

    /// A response was read whole: keep the connection if it can carry another.
    fn finish(&self, conn: Conn, reusable: bool) {
        // Bytes beyond the response are a protocol error by the instance.
        if reusable && conn.buf.is_empty() {
            self.checkin(conn);
        }
    }
}

/// How an attempt on one connection failed.
enum Attempt {
    /// Nothing came back on a connection that may have been closed while idle.
    Stale(String),
    Failed(String),
}

async fn read_more(conn: &mut Conn) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_more(&mut conn.stream, &mut conn.buf, cx)).await
}

fn poll_read_more(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    // Through AsyncRead, whose short reads tell the event loop the socket is
    // drained (no extra read just to see it empty).
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf)
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

struct Head {
    status: StatusCode,
    headers: hyper::HeaderMap,
    framing: Framing,
    /// The connection may carry another request after this response.
    reusable: bool,
    interim: bool,
}

/// Parse a response head at the start of `buf` (consuming it), or None when more
/// bytes are needed.
fn parse_head(buf: &mut BytesMut, head_only: bool) -> Result<Option<Head>, Attempt> {
    // Uninitialised slots: zeroing 128 headers per response costs more than parsing.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(Attempt::Failed(format!(
                "the instance's response head is larger than {MAX_HEAD} bytes"
            )))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(Attempt::Failed(format!(
                "the instance sent an invalid response: {e}"
            )))
        }
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| Attempt::Failed(format!("the instance answered status {code}")))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Attempt::Failed(
            "the instance switched protocols without being asked to".into(),
        ));
    }
    let http10 = parsed.version == Some(0);
    let base = buf.as_ptr() as usize;
    // Headers kept, with where their values lie in the head (inline for a few).
    let mut kept = smallvec::SmallVec::<[(HeaderName, usize, usize); 16]>::new();
    let (mut chunked, mut other_coding, mut length, mut close, mut keep_alive) =
        (false, false, None::<u64>, false, false);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
            Attempt::Failed(format!(
                "the instance sent an invalid header name {:?}",
                h.name
            ))
        })?;
        let value = h.value;
        if name == hyper::header::TRANSFER_ENCODING {
            let last = value
                .split(|b| *b == b',')
                .rfind(|t| !t.trim_ascii().is_empty())
                .unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            other_coding = !chunked;
            continue;
        }
        if name == hyper::header::CONTENT_LENGTH {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Attempt::Failed("the instance sent an invalid Content-Length".into())
                })?;
            if length.is_some_and(|l| l != n) {
                return Err(Attempt::Failed(
                    "the instance sent conflicting Content-Lengths".into(),
                ));
            }
            length = Some(n);
        }
        if name == hyper::header::CONNECTION {
            for t in value.split(|b| *b == b',') {
                close |= t.trim_ascii().eq_ignore_ascii_case(b"close");
                keep_alive |= t.trim_ascii().eq_ignore_ascii_case(b"keep-alive");
            }
        }
        if crate::proxy::hop_by_hop(&name) {
            continue;
        }
        let start = value.as_ptr() as usize - base;
        kept.push((name, start, start + value.len()));
    }
    let raw = buf.split_to(len).freeze();
    // One more for the router's own `X-Lattice-Instance`.
    let mut headers = hyper::HeaderMap::with_capacity(kept.len() + 1);
    for (name, start, end) in kept {
        headers.append(
            name,
            HeaderValue::from_maybe_shared(raw.slice(start..end))
                .map_err(|_| Attempt::Failed("the instance sent an invalid header value".into()))?,
        );
    }
    let interim = status.is_informational();
    let framing = if interim
        || head_only
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if chunked {
        // Chunked wins over a Content-Length (RFC 9112 §6.3).
        headers.remove(hyper::header::CONTENT_LENGTH);
        Framing::Chunked
    } else if other_coding {
        Framing::UntilClose
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let reusable = !close && (!http10 || keep_alive) && framing != Framing::UntilClose;
    Ok(Some(Head {
        status,
        headers,
        framing,
        reusable,
        interim,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes left of a Content-Length body.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Bytes left of the current chunk.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    UntilClose,
    Done,
}

/// A response body read from the instance as the client takes it.
struct BackendBody {
    /// None once the body ended (the connection went back to the pool or was closed).
    conn: Option<Conn>,
    pool: Arc<Pool>,
    state: State,
    reusable: bool,
}

impl BackendBody {
    /// The next step of decoding what is buffered: a frame, the end, or None
    /// when more bytes are needed.
    fn decode(&mut self) -> Result<Option<Option<Bytes>>, BoxError> {
        let buf = &mut self.conn.as_mut().expect("a body still reading").buf;
        loop {
            match self.state {
                State::Length(0) => {
                    self.state = State::Done;
                    return Ok(Some(None));
                }
                State::Length(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = (buf.len() as u64).min(n) as usize;
                    self.state = State::Length(n - take as u64);
                    return Ok(Some(Some(buf.split_to(take).freeze())));
                }
                State::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > 4096 => {
                        return Err("the instance sent an overlong chunk size line".into())
                    }
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(_) => return Err("the instance sent an invalid chunk size".into()),
                },
                State::ChunkData(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = (buf.len() as u64).min(n) as usize;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    return Ok(Some(Some(buf.split_to(take).freeze())));
                }
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("the instance's chunk did not end with CRLF".into());
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_HEAD {
                            return Err("the instance sent overlong trailers".into());
                        }
                        return Ok(None);
                    };
                    // Trailers are not forwarded; an empty line ends the body.
                    buf.advance(end + 2);
                    if end == 0 {
                        self.state = State::Done;
                        return Ok(Some(None));
                    }
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(Some(buf.split().freeze())));
                }
                State::Done => return Ok(Some(None)),
            }
        }
    }
}

impl hyper::body::Body for BackendBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.conn.is_none() {
                return Poll::Ready(None);
            }
            match this.decode() {
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some(Some(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Some(None)) => {
                    let conn = this.conn.take().expect("checked above");
                    this.pool.finish(conn, this.reusable);
                    return Poll::Ready(None);
                }
                Ok(None) => {}
            }
            let conn = this.conn.as_mut().expect("checked above");
            match ready!(poll_read_more(&mut conn.stream, &mut conn.buf, cx)) {
                Ok(0) if this.state == State::UntilClose => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(
                        "the instance closed the connection in the middle of the body".into(),
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(format!(
                        "reading the body from the instance: {e}"
                    )
                    .into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.state == State::Done
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.state {
            State::Length(n) => hyper::body::SizeHint::with_exact(n),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, head_only: bool) -> Head {
        let mut buf = BytesMut::from(raw);
        match parse_head(&mut buf, head_only) {
            Ok(Some(h)) => h,
            Ok(None) => panic!("incomplete"),
            Err(Attempt::Failed(e)) | Err(Attempt::Stale(e)) => panic!("{e}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.reusable);
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.headers.get("content-length").is_none());
        assert!(h.headers.get("transfer-encoding").is_none());
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Empty);
        assert_eq!(h.headers["content-length"], "5");
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n", false).framing,
            Framing::Empty
        );
        assert_eq!(
            head(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            )
            .framing,
            Framing::Empty
        );
        let h = head("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.reusable);
        assert!(
            !head(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false
            )
            .reusable
        );
        assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).reusable);
        assert!(
            head(
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                false
            )
            .reusable
        );
        assert!(head("HTTP/1.1 100 Continue\r\n\r\n", false).interim);
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: x-foo\r\nKeep-Alive: 5\r\nX-App: a\r\n\r\n",
            false,
        );
        assert_eq!(
            h.headers.len(),
            1,
            "hop-by-hop headers are dropped: {:?}",
            h.headers
        );
    }

    #[test]
    fn bad_heads_are_errors_and_partial_heads_wait() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(matches!(parse_head(&mut buf, false), Ok(None)));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "NOT HTTP\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                matches!(parse_head(&mut buf, false), Err(Attempt::Failed(_))),
                "{bad:?}"
            );
        }
        let mut buf = BytesMut::from(&vec![b'a'; MAX_HEAD + 1][..]);
        buf[..9].copy_from_slice(b"HTTP/1.1 ");
        assert!(matches!(
            parse_head(&mut buf, false),
            Err(Attempt::Failed(_))
        ));
    }

    /// Decode `input` fed in pieces of `step` bytes.
    fn decode_all(state: State, input: &[u8], step: usize) -> Result<Vec<u8>, String> {
        // A connected socket pair only to satisfy the type; decoding never reads it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let stream = TcpStream::connect(addr).await.unwrap();
            let mut body = BackendBody {
                conn: Some(Conn {
                    stream,
                    addr,
                    buf: BytesMut::new(),
                }),
                pool: Pool::new(Duration::from_secs(1), 1),
                state,
                reusable: false,
            };
            let mut out = vec![];
            for piece in input.chunks(step) {
                body.conn.as_mut().unwrap().buf.extend_from_slice(piece);
                loop {
                    match body.decode().map_err(|e| e.to_string())? {
                        Some(Some(b)) => out.extend_from_slice(&b),
                        Some(None) => return Ok(out),
                        None => break,
                    }
                }
            }
            Err(format!("unfinished after {:?}: {:?}", out, body.state))
        })
    }

    #[test]
    fn chunked_bodies_decode_however_they_arrive() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            assert_eq!(
                decode_all(State::ChunkSize, wire, step).unwrap(),
                b"hello, world",
                "step {step}"
            );
        }
        assert!(decode_all(State::ChunkSize, b"5\r\nhelloXX0\r\n\r\n", 4).is_err());
        assert!(decode_all(State::ChunkSize, b"zz\r\n", 4).is_err());
        assert_eq!(
            decode_all(State::Length(4), b"abcd", 1).unwrap(),
            b"abcd".to_vec()
        );
    }
}
