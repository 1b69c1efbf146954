//! Log lines as every component passes them around: an app's stdout/stderr, the cell's
//! and the router's lines about it, tagged with its log guid, source and time; and the
//! bounded recent-history buffer with live fan-out that cells and the BBS keep.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Lines kept per log guid.
pub const HISTORY: usize = 1000;

/// Bytes kept per log guid (of its lines' [`LogMessage::cost`]); past this, its oldest
/// lines go, whatever their count.
pub const HISTORY_BYTES: usize = 1024 * 1024;

/// Bytes kept over every log guid; past this, the log guid written to longest ago is
/// forgotten.
pub const TOTAL_BYTES: usize = 64 * 1024 * 1024;

/// A message longer than this is cut (and says so), as Diego's log streamer cuts them.
pub const MAX_MESSAGE_BYTES: usize = 61_440;

/// A log guid, source or stream longer than this: the line is dropped (no app has one).
pub const MAX_TAG_BYTES: usize = 255;

/// Lines a follower may fall behind by before it skips (each at most
/// [`MAX_MESSAGE_BYTES`]: a stalled follower pins at most ~60 MiB).
pub const FOLLOW_QUEUE: usize = 1024;

/// Log guids kept; past this, the one written to longest ago is forgotten (apps and
/// tasks come and go; their history must not pile up for ever).
pub const MAX_GUIDS: usize = 1000;

/// The log guid under which the components' own logs (`ltc debug-logs`) are kept.
pub const DEBUG_LOG_GUID: &str = "lattice-debug";

/// A log message as followers see it (one NDJSON line on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMessage {
    pub log_guid: String,
    /// `APP/0`, `CELL`, `TASK`, `RTR`, …
    pub source: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub message: String,
    /// Unix nanoseconds.
    pub timestamp: i64,
}

impl LogMessage {
    pub fn new(log_guid: &str, source: &str, message: impl Into<String>) -> LogMessage {
        LogMessage {
            log_guid: log_guid.to_string(),
            source: source.to_string(),
            stream: "stdout".into(),
            message: message.into(),
            timestamp: crate::now_nanos(),
        }
    }

    /// What the line costs in a buffer: its text and tags.
    pub fn cost(&self) -> usize {
        self.message.len() + self.log_guid.len() + self.source.len() + self.stream.len()
    }

    /// Cuts a message longer than [`MAX_MESSAGE_BYTES`] (at a character boundary),
    /// saying how much went.
    pub fn truncate(&mut self) {
        if self.message.len() <= MAX_MESSAGE_BYTES {
            return;
        }
        let total = self.message.len();
        let note = format!(" [message truncated: {total} bytes, {MAX_MESSAGE_BYTES} kept]");
        let mut keep = MAX_MESSAGE_BYTES - note.len();
        while !self.message.is_char_boundary(keep) {
            keep -= 1;
        }
        self.message.truncate(keep);
        self.message.push_str(&note);
    }

    /// The message as one NDJSON line (with its newline).
    pub fn to_ndjson(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// A log guid's recent lines, their bytes and when it was last written to (a counter).
#[derive(Default)]
struct History {
    written: u64,
    bytes: usize,
    lines: VecDeque<LogMessage>,
}

#[derive(Default)]
struct Histories {
    clock: u64,
    /// Of every history.
    bytes: usize,
    by_guid: HashMap<String, History>,
}

impl Histories {
    /// Forgets the log guid written to longest ago, except `keep`.
    fn forget_stalest(&mut self, keep: &str) -> bool {
        let stalest = self
            .by_guid
            .iter()
            .filter(|(k, _)| k.as_str() != keep)
            .min_by_key(|(_, g)| g.written)
            .map(|(k, _)| k.clone());
        match stalest.and_then(|k| self.by_guid.remove(&k)) {
            Some(g) => {
                self.bytes -= g.bytes;
                true
            }
            None => false,
        }
    }

    fn record(&mut self, msg: LogMessage) {
        self.clock += 1;
        let now = self.clock;
        if !self.by_guid.contains_key(&msg.log_guid) && self.by_guid.len() >= MAX_GUIDS {
            self.forget_stalest(&msg.log_guid);
        }
        let cost = msg.cost();
        let g = self.by_guid.entry(msg.log_guid.clone()).or_default();
        g.written = now;
        g.bytes += cost;
        g.lines.push_back(msg);
        let mut freed = 0;
        while g.lines.len() > HISTORY || (g.bytes > HISTORY_BYTES && g.lines.len() > 1) {
            let old = g.lines.pop_front().map_or(0, |m| m.cost());
            g.bytes -= old;
            freed += old;
        }
        self.bytes = self.bytes + cost - freed;
        let guid = g
            .lines
            .back()
            .map(|m| m.log_guid.clone())
            .unwrap_or_default();
        while self.bytes > TOTAL_BYTES && self.forget_stalest(&guid) {}
    }
}

/// Recent lines per log guid (at most [`HISTORY`] and [`HISTORY_BYTES`] each, at most
/// [`TOTAL_BYTES`] in all) and a live feed of new ones.
#[derive(Clone)]
pub struct LogBuffer {
    history: Arc<Mutex<Histories>>,
    tx: broadcast::Sender<LogMessage>,
}

impl Default for LogBuffer {
    fn default() -> Self {
        LogBuffer {
            history: Arc::default(),
            tx: broadcast::channel(FOLLOW_QUEUE).0,
        }
    }
}

impl std::fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBuffer").finish_non_exhaustive()
    }
}

impl LogBuffer {
    /// Records a line and sends it to followers (see [`LogBuffer::offer`]).
    pub fn push(&self, msg: LogMessage) {
        self.offer(msg);
    }

    /// Records a line and sends it to followers. A message longer than
    /// [`MAX_MESSAGE_BYTES`] is cut; a line whose log guid, source or stream is longer
    /// than [`MAX_TAG_BYTES`] is dropped (false).
    pub fn offer(&self, mut msg: LogMessage) -> bool {
        if [&msg.log_guid, &msg.source, &msg.stream]
            .iter()
            .any(|t| t.len() > MAX_TAG_BYTES)
        {
            return false;
        }
        msg.truncate();
        // Sent under the lock, so a follower that takes history and subscribes under it
        // sees each line exactly once.
        let mut h = self.history.lock().unwrap();
        h.record(msg.clone());
        let _ = self.tx.send(msg);
        true
    }

    /// Bytes held in history, over every log guid.
    pub fn bytes(&self) -> usize {
        self.history.lock().unwrap().bytes
    }

    /// Followers subscribed now (each live stream is one until it is dropped).
    pub fn followers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The recent lines of a log guid, oldest first.
    pub fn recent(&self, log_guid: &str) -> Vec<LogMessage> {
        self.history
            .lock()
            .unwrap()
            .by_guid
            .get(log_guid)
            .map(|g| g.lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every line from now on, of every log guid.
    pub fn subscribe(&self) -> broadcast::Receiver<LogMessage> {
        self.tx.subscribe()
    }

    /// `log_guid`'s lines: the recent ones (if `recent`), then, if `follow`, every new
    /// one as it comes (a follower too slow to keep up skips what it missed).
    pub fn stream(
        &self,
        log_guid: &str,
        recent: bool,
        follow: bool,
    ) -> BoxStream<'static, LogMessage> {
        // History and subscription under one lock: no line missed, none twice.
        let (live, history) = {
            let h = self.history.lock().unwrap();
            let recent = match (recent, h.by_guid.get(log_guid)) {
                (true, Some(g)) => g.lines.iter().cloned().collect(),
                _ => vec![],
            };
            (self.tx.subscribe(), recent)
        };
        let history = futures::stream::iter(history);
        if !follow {
            return history.boxed();
        }
        let guid = log_guid.to_string();
        let live = tokio_stream::wrappers::BroadcastStream::new(live).filter_map(move |m| {
            let keep = m.ok().filter(|m| m.log_guid == guid);
            async move { keep }
        });
        history.chain(live).boxed()
    }
}

/// Splits a byte stream of newline-delimited JSON into log messages (bad lines are
/// skipped).
pub fn decode_ndjson<S, B, E>(body: S) -> impl Stream<Item = LogMessage>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    stream::unfold(
        (body, Vec::<u8>::new(), false),
        |(mut body, mut buf, mut done)| async move {
            loop {
                if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    match serde_json::from_slice::<LogMessage>(&line) {
                        Ok(m) => return Some((m, (body, buf, done))),
                        Err(_) => continue,
                    }
                }
                if done {
                    return None;
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(chunk.as_ref()),
                    _ => {
                        done = true;
                        buf.push(b'\n');
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_per_guid() {
        let logs = LogBuffer::default();
        for i in 0..HISTORY + 5 {
            logs.push(LogMessage::new("g1", "APP/0", format!("line {i}")));
        }
        logs.push(LogMessage::new("g2", "RTR", "other"));
        let recent = logs.recent("g1");
        assert_eq!(recent.len(), HISTORY);
        assert_eq!(recent[0].message, "line 5");
        assert_eq!(logs.recent("g2")[0].source, "RTR");
        assert!(logs.recent("nope").is_empty());
        // Past MAX_GUIDS guids, the stalest is forgotten.
        for i in 0..MAX_GUIDS {
            logs.push(LogMessage::new(&format!("app-{i}"), "APP/0", "x"));
        }
        assert!(logs.recent("g1").is_empty() && logs.recent("g2").is_empty());
        assert_eq!(logs.recent("app-0").len(), 1);
        assert_eq!(logs.history.lock().unwrap().by_guid.len(), MAX_GUIDS);
    }

    #[test]
    fn history_is_bounded_by_bytes_per_guid_and_in_all() {
        let logs = LogBuffer::default();
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        // 300 lines of 60 KiB into one guid: about 1 MiB stays, the newest.
        for i in 0..300 {
            logs.push(LogMessage::new("g", "APP/0", format!("{i} {big}")));
        }
        let kept = logs.recent("g");
        assert!(kept.len() < 20, "{}", kept.len());
        assert!(kept.last().unwrap().message.starts_with("299 "));
        assert!(logs.bytes() <= HISTORY_BYTES, "{}", logs.bytes());
        assert_eq!(
            logs.bytes(),
            kept.iter().map(LogMessage::cost).sum::<usize>()
        );
        // Into many guids: at most TOTAL_BYTES in all, the stalest guids forgotten.
        for i in 0..(TOTAL_BYTES / HISTORY_BYTES) * 2 {
            for _ in 0..20 {
                logs.push(LogMessage::new(&format!("app-{i}"), "APP/0", big.clone()));
            }
        }
        assert!(logs.bytes() <= TOTAL_BYTES, "{}", logs.bytes());
        assert!(logs.bytes() > TOTAL_BYTES - 2 * HISTORY_BYTES);
        assert!(logs.recent("g").is_empty() && logs.recent("app-0").is_empty());
        assert!(!logs
            .recent(&format!("app-{}", TOTAL_BYTES / HISTORY_BYTES * 2 - 1))
            .is_empty());
        let h = logs.history.lock().unwrap();
        let sum: usize = h.by_guid.values().map(|g| g.bytes).sum();
        assert_eq!(sum, h.bytes);
    }

    #[test]
    fn long_messages_are_cut_and_say_so_and_huge_tags_dropped() {
        let logs = LogBuffer::default();
        let long = "é".repeat(1_000_000); // 2 MB, two bytes a character
        assert!(logs.offer(LogMessage::new("g", "APP/0", long)));
        let m = &logs.recent("g")[0];
        assert!(m.message.len() <= MAX_MESSAGE_BYTES, "{}", m.message.len());
        assert!(
            m.message
                .ends_with("[message truncated: 2000000 bytes, 61440 kept]"),
            "{}",
            &m.message[m.message.len() - 60..]
        );
        assert!(!logs.offer(LogMessage::new(&"g".repeat(256), "APP/0", "x")));
        assert!(!logs.offer(LogMessage::new("g", &"s".repeat(256), "x")));
        assert_eq!(logs.recent("g").len(), 1);
    }

    #[tokio::test]
    async fn stream_gives_history_then_live_lines_of_one_guid() {
        let logs = LogBuffer::default();
        logs.push(LogMessage::new("g", "APP/0", "old"));
        let mut s = Box::pin(logs.stream("g", true, true));
        logs.push(LogMessage::new("other", "APP/0", "not mine"));
        logs.push(LogMessage::new("g", "RTR", "new"));
        assert_eq!(s.next().await.unwrap().message, "old");
        assert_eq!(s.next().await.unwrap().message, "new");
        let done: Vec<_> = logs.stream("g", true, false).collect().await;
        assert_eq!(done.len(), 2);
        let none: Vec<_> = logs.stream("g", false, false).collect().await;
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn ndjson_is_split_across_chunks_and_bad_lines_skipped() {
        let a = LogMessage::new("g", "APP/0", "one");
        let b = LogMessage::new("g", "RTR", "two");
        let mut bytes = a.to_ndjson();
        bytes.extend_from_slice(b"not json\n");
        bytes.extend_from_slice(&b.to_ndjson());
        bytes.pop(); // the last line may come without its newline
        let chunks: Vec<Result<Vec<u8>, ()>> = bytes.chunks(7).map(|c| Ok(c.to_vec())).collect();
        let got: Vec<_> = decode_ndjson(futures::stream::iter(chunks)).collect().await;
        assert_eq!(got, vec![a, b]);
    }
}
