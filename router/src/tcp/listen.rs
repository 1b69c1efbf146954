//! The TCP listeners: one per routed external port, opened when a route names the port
//! and closed (with its connections) when the route goes. Each accepted connection is
//! forwarded to the port's instances in turn (round-robin; an instance that refuses
//! is skipped for the next one), within a bound on open connections, and closed after
//! an idle time without a byte either way.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::table::{PortEntry, TcpPorts};
use crate::metrics as m;

/// How often a port that could not be bound is tried again.
const BIND_RETRY: Duration = Duration::from_secs(5);
/// Bytes read at a time, per direction of a connection.
const BUFFER: usize = 32 * 1024;

/// How the TCP listeners behave (`lattice router`'s `--tcp-*` flags).
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// The address every external port is opened on.
    pub host: IpAddr,
    /// Connections open at once, over every port; past it a new one is closed at once.
    pub max_connections: usize,
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// How long an instance has to accept a connection before the next one is tried.
    pub connect_timeout: Duration,
}

impl TcpConfig {
    /// The defaults, listening on `host`.
    pub fn on(host: IpAddr) -> TcpConfig {
        TcpConfig {
            host,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// One open port: its current instances, and the task accepting on it (aborted, with
/// its connections, when dropped).
struct Open {
    entry: watch::Sender<Arc<PortEntry>>,
    task: JoinHandle<()>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps a listener open for every port in `ports` until `stop` turns true.
pub async fn serve(
    cfg: TcpConfig,
    mut ports: watch::Receiver<Arc<TcpPorts>>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let mut open: HashMap<u16, Open> = HashMap::new();
    loop {
        let current = ports.borrow_and_update().clone();
        open.retain(|port, _| {
            let keep = current.contains_key(port);
            if !keep {
                tracing::info!(port, "TCP route gone: listener closed");
            }
            keep
        });
        let mut failed = false;
        for (port, entry) in current.iter() {
            if let Some(o) = open.get(port) {
                o.entry.send_if_modified(|e| {
                    let changed = e != entry;
                    *e = entry.clone();
                    changed
                });
                continue;
            }
            match TcpListener::bind(SocketAddr::new(cfg.host, *port)).await {
                Ok(l) => {
                    tracing::info!(port, app = %entry.process_guid, host = %cfg.host, "TCP route: listening");
                    let (tx, rx) = watch::channel(entry.clone());
                    let task = tokio::spawn(accept(l, *port, rx, limit.clone(), cfg.clone()));
                    open.insert(*port, Open { entry: tx, task });
                }
                Err(e) => {
                    failed = true;
                    m::TCP_LISTEN_ERRORS.inc();
                    tracing::error!(port, host = %cfg.host, error = %e, "cannot listen for a TCP route; retrying");
                }
            }
        }
        m::TCP_LISTENERS.set(open.len() as i64);
        tokio::select! {
            changed = ports.changed() => if changed.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(BIND_RETRY), if failed => {}
        }
    }
    m::TCP_LISTENERS.set(0);
}

/// Accepts on one port until aborted; its connections end with it.
async fn accept(
    listener: TcpListener,
    port: u16,
    entry: watch::Receiver<Arc<PortEntry>>,
    limit: Arc<Semaphore>,
    cfg: Arc<TcpConfig>,
) {
    let label = port.to_string();
    let mut next = 0usize;
    let mut conns = JoinSet::new();
    loop {
        let (client, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(port, error = %e, "accepting a TCP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            m::TCP_CONNECTIONS
                .with_label_values(&[&label, "refused_full"])
                .inc();
            tracing::warn!(port, %peer, max = cfg.max_connections, "too many TCP connections: closed");
            continue;
        };
        let e = entry.borrow().clone();
        if e.backends.is_empty() {
            m::TCP_CONNECTIONS
                .with_label_values(&[&label, "no_instance"])
                .inc();
            tracing::debug!(port, app = %e.process_guid, "no running instance: closed");
            continue;
        }
        let start = next;
        next = next.wrapping_add(1);
        conns.spawn(forward(
            client,
            e,
            start,
            cfg.clone(),
            label.clone(),
            permit,
        ));
    }
}

/// Connects to the instances from `start` on, in turn, until one accepts.
async fn connect(e: &PortEntry, start: usize, timeout: Duration) -> Option<TcpStream> {
    let n = e.backends.len();
    for i in 0..n {
        let addr = e.backends[(start + i) % n];
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Some(s),
            Ok(Err(err)) => {
                m::BACKEND_ERRORS.with_label_values(&["tcp_connect"]).inc();
                tracing::debug!(app = %e.process_guid, %addr, error = %err, "instance refused; trying the next");
            }
            Err(_) => {
                m::BACKEND_ERRORS.with_label_values(&["tcp_timeout"]).inc();
                tracing::debug!(app = %e.process_guid, %addr, "instance did not accept in time; trying the next");
            }
        }
    }
    None
}

async fn forward(
    client: TcpStream,
    e: Arc<PortEntry>,
    start: usize,
    cfg: Arc<TcpConfig>,
    port: String,
    _permit: OwnedSemaphorePermit,
) {
    let Some(server) = connect(&e, start, cfg.connect_timeout).await else {
        m::TCP_CONNECTIONS
            .with_label_values(&[&port, "unreachable"])
            .inc();
        return;
    };
    m::TCP_CONNECTIONS
        .with_label_values(&[&port, "forwarded"])
        .inc();
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    m::TCP_ACTIVE.inc();
    let result = pipe(client, server, cfg.idle_timeout).await;
    m::TCP_ACTIVE.dec();
    match result {
        Ok((up, down)) => {
            m::TCP_BYTES.with_label_values(&["up"]).inc_by(up);
            m::TCP_BYTES.with_label_values(&["down"]).inc_by(down);
        }
        Err(err) => {
            tracing::debug!(%port, app = %e.process_guid, error = %err, "TCP connection ended")
        }
    }
}

/// Copies both ways until both sides have closed (a side's EOF is passed on as a
/// half-close), either fails, or nothing moves for `idle`. The bytes (up, down).
/// The halves are the sockets' own (`TcpStream::split`: no lock between them).
pub async fn pipe(
    mut client: TcpStream,
    mut server: TcpStream,
    idle: Duration,
) -> std::io::Result<(u64, u64)> {
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let clock = Instant::now();
    let last = AtomicU64::new(0);
    let both = async {
        tokio::try_join!(
            copy_half(&mut cr, &mut sw, &last, clock),
            copy_half(&mut sr, &mut cw, &last, clock)
        )
    };
    let idle_ms = idle.as_millis() as u64;
    let watchdog = async {
        loop {
            tokio::time::sleep((idle / 4).max(Duration::from_millis(10))).await;
            let quiet =
                (clock.elapsed().as_millis() as u64).saturating_sub(last.load(Ordering::Relaxed));
            if quiet >= idle_ms {
                return;
            }
        }
    };
    tokio::select! {
        r = both => r,
        _ = watchdog => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no byte either way for {idle:?}"),
        )),
    }
}

/// Copies `r` to `w` until EOF, then half-closes `w`; notes each move in `last`.
async fn copy_half<R, W>(
    r: &mut R,
    w: &mut W,
    last: &AtomicU64,
    clock: Instant,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
        last.store(clock.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
