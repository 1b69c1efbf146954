//! A container's output on its way from the shim to the rep: cut into bounded lines,
//! held to a rate, and sent without loss.
//!
//! - [`LineSplitter`]: bytes → lines of at most [`MAX_LINE`] bytes (a longer line is
//!   cut, as loggregator caps a message), so output without newlines costs the shim at
//!   most one line of memory.
//! - [`RateLimit`]: a token bucket per container, in lines and bytes. Past it lines are
//!   dropped and counted, and the log says how many and why; a flood costs the
//!   control plane no more than the limit.
//! - [`LogSender`]: a datagram socket connected to the rep's. A send waits while the
//!   rep's queue is full (the app's writes then wait on its pipe), so under the rate
//!   limit no line is lost; a rep that is down loses lines, which are counted too.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest line sent as one; longer ones are cut into pieces of this size.
pub const MAX_LINE: usize = 16 * 1024;

/// Lines per second a container may log, over a burst of [`BURST_LINES`].
pub const LINES_PER_SEC: f64 = 1000.0;
pub const BURST_LINES: f64 = 10_000.0;
/// Bytes per second a container may log, over a burst of [`BURST_BYTES`].
pub const BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
pub const BURST_BYTES: f64 = 8.0 * 1024.0 * 1024.0;

/// Splits a byte stream into lines (without their `\n` or trailing `\r`), none longer
/// than [`MAX_LINE`] bytes.
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `data`; calls `line` for every line it completes.
    pub fn push(&mut self, mut data: &[u8], mut line: impl FnMut(&[u8])) {
        while !data.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let window = &data[..data.len().min(room)];
            match window.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.emit(&window[..i], &mut line);
                    data = &data[i + 1..];
                }
                None if window.len() == room => {
                    // A full line without a newline: cut it here.
                    self.emit(window, &mut line);
                    data = &data[room..];
                }
                None => {
                    self.partial.extend_from_slice(window);
                    data = &[];
                }
            }
        }
    }

    /// The last line, when the stream ended without a newline.
    pub fn finish(&mut self, mut line: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            self.emit(&[], &mut line);
        }
    }

    fn emit(&mut self, tail: &[u8], line: &mut impl FnMut(&[u8])) {
        if self.partial.is_empty() {
            line(trim_cr(tail));
        } else {
            self.partial.extend_from_slice(tail);
            line(trim_cr(&self.partial));
            self.partial.clear();
        }
    }
}

fn trim_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// What to do with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Send,
    /// Send it, after a line saying this many were dropped before it.
    SendAfterDropped(u64),
    Drop,
}

/// A token bucket in lines and bytes.
pub struct RateLimit {
    lines: f64,
    bytes: f64,
    at: Instant,
    dropped: u64,
}

impl RateLimit {
    pub fn new(now: Instant) -> RateLimit {
        RateLimit {
            lines: BURST_LINES,
            bytes: BURST_BYTES,
            at: now,
            dropped: 0,
        }
    }

    /// Whether a line of `len` bytes may go now.
    pub fn admit(&mut self, len: usize, now: Instant) -> Admit {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.lines = (self.lines + dt * LINES_PER_SEC).min(BURST_LINES);
        self.bytes = (self.bytes + dt * BYTES_PER_SEC).min(BURST_BYTES);
        if self.lines < 1.0 || self.bytes < len as f64 {
            self.dropped += 1;
            return Admit::Drop;
        }
        self.lines -= 1.0;
        self.bytes -= len as f64;
        match std::mem::take(&mut self.dropped) {
            0 => Admit::Send,
            n => Admit::SendAfterDropped(n),
        }
    }

    /// Lines dropped since the last one admitted (to report when the stream ends).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

/// The log line that reports `n` lines dropped by the rate limit.
pub fn dropped_message(n: u64) -> String {
    format!(
        "lattice: {n} log line(s) dropped: this container logged faster than the limit of \
         {LINES_PER_SEC} lines/s and {} KiB/s",
        BYTES_PER_SEC as u64 / 1024
    )
}

/// Bytes and lines per second the shim reads of a container's output. Past the rate
/// limit it reads and drops (counting) without copying; past these it stops reading
/// for a while, and the app waits on its pipe: a flood costs the host's shim, outside
/// the container's cgroup, a bounded share of a core.
pub const READ_BYTES_PER_SEC: f64 = 16.0 * 1024.0 * 1024.0;
pub const READ_LINES_PER_SEC: f64 = 200_000.0;

/// Paces reading a container's output to [`READ_BYTES_PER_SEC`] and
/// [`READ_LINES_PER_SEC`] (a burst of one second's worth of each).
pub struct ReadPace {
    bytes: f64,
    lines: f64,
    at: Instant,
}

impl ReadPace {
    pub fn new(now: Instant) -> ReadPace {
        ReadPace {
            bytes: READ_BYTES_PER_SEC,
            lines: READ_LINES_PER_SEC,
            at: now,
        }
    }

    /// Records `bytes` and `lines` read at `now`; returns how long to wait before
    /// reading more.
    pub fn read(&mut self, bytes: usize, lines: usize, now: Instant) -> Duration {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.bytes = (self.bytes + dt * READ_BYTES_PER_SEC).min(READ_BYTES_PER_SEC) - bytes as f64;
        self.lines = (self.lines + dt * READ_LINES_PER_SEC).min(READ_LINES_PER_SEC) - lines as f64;
        let owed = (-self.bytes / READ_BYTES_PER_SEC).max(-self.lines / READ_LINES_PER_SEC);
        Duration::from_secs_f64(owed.max(0.0))
    }
}

/// A datagram socket connected to the rep's log socket, reconnected when the rep
/// comes back.
pub struct LogSender {
    path: PathBuf,
    sock: Option<tokio::net::UnixDatagram>,
    /// Lines lost because no rep was listening, not yet reported.
    lost: u64,
    /// A send timed out: until one goes through, lines that do not fit at once are
    /// lost rather than waited for (a stopped rep must not stall the app line by line).
    congested: bool,
    wait: Duration,
}

/// How long one send may wait for the rep to read (a rep that stops reading for
/// longer loses the line, and the lines after it until it reads again, rather than
/// stalling the app).
const SEND_WAIT: Duration = Duration::from_secs(5);

impl LogSender {
    pub fn new(path: &Path) -> LogSender {
        LogSender::with_wait(path, SEND_WAIT)
    }

    /// A sender whose sends wait at most `wait` for a full queue.
    pub fn with_wait(path: &Path, wait: Duration) -> LogSender {
        LogSender {
            path: path.to_path_buf(),
            sock: None,
            lost: 0,
            congested: false,
            wait,
        }
    }

    fn connect(&mut self) -> Option<&tokio::net::UnixDatagram> {
        if self.sock.is_none() {
            let s = tokio::net::UnixDatagram::unbound().ok()?;
            s.connect(&self.path).ok()?;
            self.sock = Some(s);
        }
        self.sock.as_ref()
    }

    /// Sends one datagram, waiting while the rep's queue is full. Returns the number
    /// of earlier lines lost to a missing rep, once it is there again.
    pub async fn send(&mut self, datagram: &[u8]) -> Result<u64, ()> {
        let wait = if self.congested {
            Duration::ZERO
        } else {
            self.wait
        };
        for _ in 0..2 {
            let Some(sock) = self.connect() else { break };
            let sent = match sock.try_send(datagram) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tokio::time::timeout(wait, sock.send(datagram)).await
                }
                r => Ok(r),
            };
            match sent {
                Ok(Ok(_)) => {
                    self.congested = false;
                    return Ok(std::mem::take(&mut self.lost));
                }
                // The rep went away (or restarted with a new socket): connect again.
                Ok(Err(_)) => self.sock = None,
                Err(_) => {
                    self.congested = true;
                    break;
                }
            }
        }
        self.lost += 1;
        Err(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(l.to_vec()));
        }
        s.finish(|l| out.push(l.to_vec()));
        out
    }

    #[tokio::test]
    async fn a_rep_that_stops_reading_costs_one_wait_then_lines_are_counted_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.sock");
        let rep = tokio::net::UnixDatagram::bind(&path).unwrap();
        let wait = Duration::from_millis(300);
        let mut sender = LogSender::with_wait(&path, wait);
        // The rep's queue fills; the send after that waits, then gives up.
        let mut sent = 0;
        while sender.send(b"line").await.is_ok() {
            sent += 1;
            assert!(sent < 10_000, "the queue never filled");
        }
        // Congested: the next lines are lost at once, not after a wait each.
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(sender.send(b"line").await, Err(()));
        }
        assert!(t0.elapsed() < wait * 5, "each lost line waited");
        // The rep reads again: the next line goes, with the count of those lost.
        let mut buf = [0u8; 64];
        for _ in 0..sent {
            rep.recv(&mut buf).await.unwrap();
        }
        assert_eq!(sender.send(b"line").await, Ok(6));
        assert_eq!(sender.send(b"line").await, Ok(0));
    }

    #[test]
    fn reading_is_paced_past_a_second_of_budget() {
        let t0 = Instant::now();
        let mut p = ReadPace::new(t0);
        let mib = 1 << 20;
        assert_eq!(p.read(8 * mib, 10, t0), Duration::ZERO);
        assert_eq!(p.read(8 * mib, 10, t0), Duration::ZERO);
        // A second's worth more bytes: a second's wait.
        let wait = p.read(16 * mib, 0, t0);
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        // After the wait the budget is back to zero, and refills with time.
        assert_eq!(p.read(0, 0, t0 + Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(
            p.read(8 * mib, 0, t0 + Duration::from_secs(2)),
            Duration::ZERO
        );
        // Lines count too: a flood of short lines waits as long as its lines take.
        let mut p = ReadPace::new(t0);
        let wait = p.read(1000, 2 * READ_LINES_PER_SEC as usize, t0);
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let got = split(&[b"a\nb", b"c\r\n\nd"]);
        assert_eq!(
            got,
            vec![b"a".to_vec(), b"bc".to_vec(), vec![], b"d".to_vec()]
        );
    }

    #[test]
    fn a_line_without_newline_is_cut_and_memory_stays_bounded() {
        let mut s = LineSplitter::default();
        let mut n = 0;
        let chunk = vec![b'x'; 100_000];
        for _ in 0..50 {
            s.push(&chunk, |l| {
                assert_eq!(l.len(), MAX_LINE);
                n += 1;
            });
            assert!(s.partial.capacity() <= 2 * MAX_LINE);
        }
        assert_eq!(n, 50 * 100_000 / MAX_LINE);
    }

    #[test]
    fn the_rate_limit_drops_past_the_burst_and_reports_the_count() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(t0);
        for _ in 0..BURST_LINES as usize {
            assert_eq!(r.admit(1, t0), Admit::Send);
        }
        assert_eq!(r.admit(1, t0), Admit::Drop);
        assert_eq!(r.admit(1, t0), Admit::Drop);
        let later = t0 + Duration::from_millis(10);
        assert_eq!(r.admit(1, later), Admit::SendAfterDropped(2));
        assert_eq!(r.take_dropped(), 0);
        // Bytes count too.
        let mut r = RateLimit::new(t0);
        assert_eq!(r.admit(BURST_BYTES as usize, t0), Admit::Send);
        assert_eq!(r.admit(10, t0), Admit::Drop);
        assert_eq!(r.take_dropped(), 1);
    }
}
