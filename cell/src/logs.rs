//! Container logs: every stdout/stderr line, tagged with its log guid, source and time,
//! kept in a bounded recent-history buffer per log guid and streamed to followers.
//!
//! Shims send lines to a Unix datagram socket (see [`crate::shim::LogLine`]); the rep
//! adds its own `CELL` lines (creating, healthy, crashed…).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::shim::LogLine;

/// Lines kept per log guid.
pub const HISTORY: usize = 1000;

/// A log message as followers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMessage {
    pub log_guid: String,
    /// `APP/0`, `CELL`, `TASK`, …
    pub source: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub message: String,
    /// Unix nanoseconds.
    pub timestamp: i64,
}

#[derive(Default)]
struct Inner {
    /// Container handle → log guid.
    guids: HashMap<String, String>,
    history: HashMap<String, VecDeque<LogMessage>>,
}

/// The cell's log store and fan-out.
#[derive(Clone)]
pub struct Logs {
    inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<LogMessage>,
}

impl Default for Logs {
    fn default() -> Self {
        Logs::new()
    }
}

impl Logs {
    pub fn new() -> Logs {
        Logs {
            inner: Arc::default(),
            tx: broadcast::channel(4096).0,
        }
    }

    /// Lines from container `handle` belong to `log_guid` from now on.
    pub fn register(&self, handle: &str, log_guid: &str) {
        self.inner
            .lock()
            .unwrap()
            .guids
            .insert(handle.to_string(), log_guid.to_string());
    }

    pub fn unregister(&self, handle: &str) {
        self.inner.lock().unwrap().guids.remove(handle);
    }

    /// Records a line and sends it to followers.
    pub fn push(&self, msg: LogMessage) {
        {
            let mut inner = self.inner.lock().unwrap();
            let h = inner.history.entry(msg.log_guid.clone()).or_default();
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(msg.clone());
        }
        let _ = self.tx.send(msg);
    }

    /// A line from the cell itself about `log_guid`'s work.
    pub fn cell(&self, log_guid: &str, message: impl Into<String>) {
        if log_guid.is_empty() {
            return;
        }
        self.push(LogMessage {
            log_guid: log_guid.to_string(),
            source: "CELL".into(),
            stream: "stdout".into(),
            message: message.into(),
            timestamp: lattice_specs::now_nanos(),
        });
    }

    fn container_line(&self, line: LogLine) {
        let guid = self.inner.lock().unwrap().guids.get(&line.handle).cloned();
        if let Some(log_guid) = guid {
            self.push(LogMessage {
                log_guid,
                source: line.source,
                stream: line.stream,
                message: line.line,
                timestamp: line.time,
            });
        }
    }

    /// The recent lines of a log guid, oldest first.
    pub fn recent(&self, log_guid: &str) -> Vec<LogMessage> {
        self.inner
            .lock()
            .unwrap()
            .history
            .get(log_guid)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every line from now on (filter by log guid on the receiving side).
    pub fn follow(&self) -> broadcast::Receiver<LogMessage> {
        self.tx.subscribe()
    }

    /// Receives the shims' lines on `socket` until the task is dropped.
    pub fn listen(&self, socket: &Path) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let _ = std::fs::remove_file(socket);
        let sock = tokio::net::UnixDatagram::bind(socket)?;
        let logs = self.clone();
        Ok(tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok(n) = sock.recv(&mut buf).await else {
                    continue;
                };
                if let Ok(line) = serde_json::from_slice::<LogLine>(&buf[..n]) {
                    logs.container_line(line);
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_per_guid() {
        let logs = Logs::new();
        logs.register("h1", "g1");
        for i in 0..HISTORY + 5 {
            logs.container_line(LogLine {
                handle: "h1".into(),
                source: "APP/0".into(),
                stream: "stdout".into(),
                line: format!("line {i}"),
                time: i as i64,
            });
        }
        logs.container_line(LogLine {
            handle: "unknown".into(),
            source: "APP/0".into(),
            stream: "stdout".into(),
            line: "dropped".into(),
            time: 0,
        });
        let recent = logs.recent("g1");
        assert_eq!(recent.len(), HISTORY);
        assert_eq!(recent[0].message, "line 5");
        assert_eq!(recent.last().unwrap().source, "APP/0");
        logs.cell("g2", "Creating container");
        assert_eq!(logs.recent("g2")[0].source, "CELL");
        assert!(logs.recent("nope").is_empty());
    }
}
