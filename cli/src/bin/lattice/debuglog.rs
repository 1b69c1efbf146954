//! The components' own logs as a log stream (`ltc debug-logs`): a tracing layer that
//! copies every event at `info` and above into the BBS's log buffer under
//! [`DEBUG_LOG_GUID`], with the component as the source.

use std::fmt::Write;

use lattice_specs::logs::{LogBuffer, LogMessage, DEBUG_LOG_GUID};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Copies events into `buffer`.
pub struct DebugLogLayer {
    pub buffer: LogBuffer,
}

/// The cell's modules that make and run containers: its container runtime (what
/// garden-linux was on Diego's cells; doppler's debug stream names them so).
const EXECUTOR_MODULES: [&str; 9] = [
    "executor", "shim", "bundle", "cgroup", "launcher", "rootfs", "image", "inroot", "network",
];

/// `BBS`, `BRAIN`, `CELL` (the rep), `EXECUTOR` (the cell's container runtime), `RTR`
/// or `LATTICE`, from an event's target.
fn component(target: &str) -> &'static str {
    let mut path = target.split("::");
    match (path.next().unwrap_or(""), path.next()) {
        ("lattice_bbs", _) => "BBS",
        ("lattice_brain", _) => "BRAIN",
        ("lattice_cell", Some(m)) if EXECUTOR_MODULES.contains(&m) => "EXECUTOR",
        ("lattice_cell", _) => "CELL",
        ("lattice_router", _) => "RTR",
        _ => "LATTICE",
    }
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for DebugLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // The router's access lines already go to the apps' own logs.
        if *meta.level() > Level::INFO || meta.target() == "rtr" {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        let mut msg = LogMessage::new(
            DEBUG_LOG_GUID,
            component(meta.target()),
            format!("{} {}{}", meta.level(), line.message, line.fields),
        );
        if *meta.level() <= Level::WARN {
            msg.stream = "stderr".into();
        }
        self.buffer.push(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_become_tagged_lines() {
        let buffer = LogBuffer::default();
        let sub = tracing_subscriber::registry().with(DebugLogLayer {
            buffer: buffer.clone(),
        });
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "lattice_cell::rep", lease_id = 7, "cell presence held");
            tracing::info!(target: "lattice_cell::executor::create", "container created");
            tracing::warn!(target: "lattice_bbs::api", "slow store");
            tracing::debug!(target: "lattice_bbs::api", "not kept");
            tracing::info!(target: "rtr", "access line, not kept");
        });
        let lines = buffer.recent(DEBUG_LOG_GUID);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0].source, "CELL");
        assert_eq!(lines[0].message, "INFO cell presence held lease_id=7");
        assert_eq!(lines[1].source, "EXECUTOR");
        assert_eq!(
            (lines[2].source.as_str(), lines[2].stream.as_str()),
            ("BBS", "stderr")
        );
    }
}
