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

    /// The message as one NDJSON line (with its newline).
    pub fn to_ndjson(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// A log guid's recent lines and when it was last written to (a counter).
#[derive(Default)]
struct History {
    written: u64,
    lines: VecDeque<LogMessage>,
}

#[derive(Default)]
struct Histories {
    clock: u64,
    by_guid: HashMap<String, History>,
}

/// Recent lines per log guid (at most [`HISTORY`] each) and a live feed of new ones.
#[derive(Clone)]
pub struct LogBuffer {
    history: Arc<Mutex<Histories>>,
    tx: broadcast::Sender<LogMessage>,
}

impl Default for LogBuffer {
    fn default() -> Self {
        LogBuffer {
            history: Arc::default(),
            tx: broadcast::channel(4096).0,
        }
    }
}

impl std::fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBuffer").finish_non_exhaustive()
    }
}

impl LogBuffer {
    /// Records a line and sends it to followers.
    pub fn push(&self, msg: LogMessage) {
        // Sent under the lock, so a follower that takes history and subscribes under it
        // sees each line exactly once.
        let mut h = self.history.lock().unwrap();
        h.clock += 1;
        let now = h.clock;
        if !h.by_guid.contains_key(&msg.log_guid) && h.by_guid.len() >= MAX_GUIDS {
            let stalest = h
                .by_guid
                .iter()
                .min_by_key(|(_, g)| g.written)
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                h.by_guid.remove(&k);
            }
        }
        let g = h.by_guid.entry(msg.log_guid.clone()).or_default();
        g.written = now;
        if g.lines.len() == HISTORY {
            g.lines.pop_front();
        }
        g.lines.push_back(msg.clone());
        let _ = self.tx.send(msg);
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
