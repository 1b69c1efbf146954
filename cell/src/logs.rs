//! Container logs: every stdout/stderr line, tagged with its log guid, source and time,
//! kept in a bounded recent-history buffer per log guid and streamed to followers.
//!
//! Shims send lines to a Unix datagram socket (see [`crate::shim::LogLine`]); the rep
//! adds its own `CELL` lines (creating, healthy, crashed…).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use lattice_specs::logs::{LogBuffer, LogMessage};

use crate::shim::LogLine;

/// The cell's log store and fan-out: the shared [`LogBuffer`], plus which container
/// handle writes to which log guid.
#[derive(Clone, Default)]
pub struct Logs {
    /// Container handle → log guid.
    guids: Arc<Mutex<HashMap<String, String>>>,
    pub buffer: LogBuffer,
}

impl Logs {
    pub fn new() -> Logs {
        Logs::default()
    }

    /// Lines from container `handle` belong to `log_guid` from now on.
    pub fn register(&self, handle: &str, log_guid: &str) {
        self.guids
            .lock()
            .unwrap()
            .insert(handle.to_string(), log_guid.to_string());
    }

    pub fn unregister(&self, handle: &str) {
        self.guids.lock().unwrap().remove(handle);
    }

    /// A line from the cell itself about `log_guid`'s work.
    pub fn cell(&self, log_guid: &str, message: impl Into<String>) {
        if !log_guid.is_empty() {
            self.buffer.push(LogMessage::new(log_guid, "CELL", message));
        }
    }

    /// A line about `log_guid`'s work from `source` (e.g. `SSH` for sessions).
    pub fn from(&self, log_guid: &str, source: &str, message: impl Into<String>) {
        if !log_guid.is_empty() {
            self.buffer.push(LogMessage::new(log_guid, source, message));
        }
    }

    /// A sink for progress messages about `log_guid`'s work (image downloads).
    pub fn progress(&self, log_guid: &str) -> impl Fn(String) + Send + Sync + 'static {
        let (logs, guid) = (self.clone(), log_guid.to_string());
        move |m| logs.cell(&guid, m)
    }

    fn container_line(&self, line: LogLine) {
        let guid = self.guids.lock().unwrap().get(&line.handle).cloned();
        if let Some(log_guid) = guid {
            self.buffer.push(LogMessage {
                log_guid,
                source: line.source,
                stream: line.stream,
                message: line.line,
                timestamp: line.time,
            });
        }
    }

    /// Receives the shims' lines on `socket` until the task is dropped.
    pub fn listen(&self, socket: &Path) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let _ = std::fs::remove_file(socket);
        let sock = tokio::net::UnixDatagram::bind(socket)?;
        let logs = self.clone();
        Ok(tokio::spawn(async move {
            // A line of MAX_LINE bytes, JSON-escaped, fits.
            let mut buf = vec![0u8; 256 * 1024];
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
    fn container_lines_go_to_their_registered_guid() {
        let logs = Logs::new();
        logs.register("h1", "g1");
        for i in 0..3 {
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
        let recent = logs.buffer.recent("g1");
        assert_eq!(recent.len(), 3);
        assert_eq!(recent[0].message, "line 0");
        assert_eq!(recent.last().unwrap().source, "APP/0");
        logs.cell("g2", "Creating container");
        assert_eq!(logs.buffer.recent("g2")[0].source, "CELL");
        logs.unregister("h1");
        logs.container_line(LogLine {
            handle: "h1".into(),
            source: "APP/0".into(),
            stream: "stdout".into(),
            line: "after".into(),
            time: 0,
        });
        assert_eq!(logs.buffer.recent("g1").len(), 3);
    }
}
