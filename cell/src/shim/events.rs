//! The events-file protocol: the shim appends one JSON line per lifecycle event to
//! `DIR/events.jsonl`; the executor reads them incrementally, by byte offset.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A lifecycle event, one JSON line each in `DIR/events.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ShimEvent {
    /// The container exists and its init runs.
    Created { init_pid: i32 },
    /// A Run action's process started.
    RunStarted { path: String, pid: i32 },
    /// An EmitProgress message.
    Progress { message: String },
    /// The action tree finished (or was stopped); the container is being deleted.
    Exited {
        failed: bool,
        reason: String,
        /// Whether it was stopped (SIGTERM to the shim) rather than finishing.
        stopped: bool,
        /// The result file's content, when the work succeeded and names one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    /// The container is gone: cgroups, processes and libcontainer state.
    Destroyed,
    /// The container could not be created.
    CreateFailed { reason: String },
}

/// The events file, open for appending.
pub(super) struct Events {
    file: std::fs::File,
}

impl Events {
    pub(super) fn open(dir: &Path) -> anyhow::Result<Events> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("events.jsonl"))?;
        Ok(Events { file })
    }

    pub(super) fn emit(&self, e: &ShimEvent) {
        let mut line = serde_json::to_vec(e).expect("events serialize");
        line.push(b'\n');
        let _ = (&self.file).write_all(&line);
    }
}

/// Reads the events a shim wrote, from byte `offset`; returns them and the new offset
/// (a trailing partial line is left for next time).
pub fn read_events(dir: &Path, offset: u64) -> std::io::Result<(Vec<ShimEvent>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(dir.join("events.jsonl")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], offset)),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let events = buf[..complete]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    Ok((events, offset + complete as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_incrementally() {
        let dir = std::env::temp_dir().join(format!("events-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ev = Events::open(&dir).unwrap();
        ev.emit(&ShimEvent::Created { init_pid: 7 });
        let (got, off) = read_events(&dir, 0).unwrap();
        assert_eq!(got, vec![ShimEvent::Created { init_pid: 7 }]);
        ev.emit(&ShimEvent::Destroyed);
        let (got, _) = read_events(&dir, off).unwrap();
        assert_eq!(got, vec![ShimEvent::Destroyed]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
