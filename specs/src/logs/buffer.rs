//! [`LogBuffer`]: recent lines per log guid, bounded, and a live feed of new ones (a
//! tokio broadcast), as cells and the BBS keep them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::broadcast;

use super::{
    LogMessage, FOLLOW_QUEUE, HISTORY, HISTORY_BYTES, MAX_GUIDS, MAX_TAG_BYTES, TOTAL_BYTES,
};

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
    /// [`MAX_MESSAGE_BYTES`](super::MAX_MESSAGE_BYTES) is cut; a line whose log guid, source or stream is longer
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::MAX_MESSAGE_BYTES;

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
}
