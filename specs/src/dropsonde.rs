//! Loggregator's doppler, read side, as the original Lattice `ltc` reads it: our log
//! lines and container metrics as dropsonde [`events::Envelope`]s (the public sonde-go
//! protobuf definitions, `proto/dropsonde/`), and the `multipart/x-protobuf` body
//! that `recentlogs` and `containermetrics` answer with. Pure: the BBS's API serves
//! them (`lattice_bbs::api::doppler`).
//!
//! Debug lines (log guid [`DEBUG_LOG_GUID`]) carry the component the way Lattice's
//! `tee2metron` tagged them: a `source_type` whose basename is the component's Diego
//! name (`rep`, `garden-linux`, `bbs`, …) and a `source_instance` naming its machine
//! (`lattice-cell-0`, `lattice-brain-0`), which `ltc debug-logs` prints as
//! `[rep|lattice-cell-0]` (and `ltc test` looks for).

use prost::Message;

use crate::logs::{LogMessage, DEBUG_LOG_GUID};

/// The generated dropsonde messages (package `events`).
#[allow(clippy::all)]
pub mod events {
    include!(concat!(env!("OUT_DIR"), "/events.rs"));
}

use events::envelope::EventType;
use events::log_message::MessageType;

/// The envelopes' `origin` for app lines and metrics.
pub const ORIGIN: &str = "lattice-rs";

/// The machine a one-machine cluster's cell lines are said to come from.
pub const CELL_INSTANCE: &str = "lattice-cell-0";
/// The machine of the BBS, brain, router and API lines (Lattice's brain VM).
pub const BRAIN_INSTANCE: &str = "lattice-brain-0";

/// A debug line's source (as the `lattice` binary's debug log layer and the API's
/// audit trail tag them) as Diego's component and Lattice's machine:
/// `(source_type, source_instance)`.
pub fn debug_source(source: &str) -> (String, &'static str) {
    let (name, instance) = match source {
        "CELL" => ("rep", CELL_INSTANCE),
        // The cell's container runtime: what garden-linux was to Diego's cells.
        "EXECUTOR" => ("garden-linux", CELL_INSTANCE),
        "BBS" => ("bbs", BRAIN_INSTANCE),
        // The public API's audit trail: the receptor's job.
        "AUDIT" => ("receptor", BRAIN_INSTANCE),
        "BRAIN" => ("brain", BRAIN_INSTANCE),
        "RTR" => ("router", BRAIN_INSTANCE),
        "LATTICE" => ("lattice", BRAIN_INSTANCE),
        other => return (other.to_ascii_lowercase(), BRAIN_INSTANCE),
    };
    (name.to_string(), instance)
}

/// An app line's source (`APP/0`, `CELL`, `RTR`, `TASK`) as `(source_type,
/// source_instance)`: what comes before the first `/`, and the rest.
pub fn app_source(source: &str) -> (String, String) {
    match source.split_once('/') {
        Some((kind, instance)) => (kind.to_string(), instance.to_string()),
        None => (source.to_string(), String::new()),
    }
}

/// A log line as an Envelope of eventType LogMessage: app id = its log guid, `stderr`
/// as ERR, the line's own time.
pub fn log_envelope(m: &LogMessage) -> events::Envelope {
    let debug = m.log_guid == DEBUG_LOG_GUID;
    let (source_type, source_instance) = if debug {
        let (t, i) = debug_source(&m.source);
        (t, i.to_string())
    } else {
        app_source(&m.source)
    };
    let origin = if debug {
        format!("{source_instance}/{source_type}")
    } else {
        ORIGIN.to_string()
    };
    let message_type = if m.stream == "stderr" {
        MessageType::Err
    } else {
        MessageType::Out
    };
    events::Envelope {
        origin,
        event_type: EventType::LogMessage as i32,
        timestamp: Some(m.timestamp),
        log_message: Some(events::LogMessage {
            message: m.message.clone().into_bytes(),
            message_type: message_type as i32,
            timestamp: m.timestamp,
            app_id: Some(m.log_guid.clone()),
            source_type: Some(source_type),
            source_instance: Some(source_instance),
        }),
        ..Default::default()
    }
}

/// One instance's latest resource use, as `ltc status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceMetric {
    /// The LRP's metrics guid (its process guid when it has none).
    pub application_id: String,
    pub index: i32,
    /// Percent of one core (100.0 = one core busy).
    pub cpu_percentage: f64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// When it was sampled, Unix nanoseconds.
    pub timestamp: i64,
}

/// A metric as an Envelope of eventType ContainerMetric.
pub fn metric_envelope(m: &InstanceMetric) -> events::Envelope {
    events::Envelope {
        origin: ORIGIN.to_string(),
        event_type: EventType::ContainerMetric as i32,
        timestamp: Some(m.timestamp),
        container_metric: Some(events::ContainerMetric {
            application_id: m.application_id.clone(),
            instance_index: m.index,
            cpu_percentage: m.cpu_percentage,
            memory_bytes: m.memory_bytes,
            disk_bytes: m.disk_bytes,
        }),
        ..Default::default()
    }
}

/// A CPU time sample of one container: (Unix nanoseconds, CPU seconds used so far).
pub type CpuSample = (i64, f64);

/// Percent of one core used between two samples of the same container; None when
/// they are too close in time to say (under 50 ms apart) or out of order. A counter
/// that went back (a restarted container) counts as 0.
pub fn cpu_percentage(before: CpuSample, after: CpuSample) -> Option<f64> {
    let elapsed = (after.0 - before.0) as f64 / 1e9;
    if elapsed < 0.05 {
        return None;
    }
    Some(((after.1 - before.1) / elapsed * 100.0).max(0.0))
}

/// `multipart/x-protobuf`'s body: each envelope marshalled into a part of its own (no
/// part headers), as loggregator's traffic controller wrote them with Go's
/// `mime/multipart`. `boundaries` proposes boundaries until one occurs in no part.
pub fn multipart(
    envelopes: &[events::Envelope],
    mut boundaries: impl FnMut() -> String,
) -> (String, Vec<u8>) {
    let parts: Vec<Vec<u8>> = envelopes.iter().map(Message::encode_to_vec).collect();
    let boundary = loop {
        let b = boundaries();
        let delimiter = format!("--{b}");
        if !parts.iter().any(|p| {
            p.windows(delimiter.len())
                .any(|w| w == delimiter.as_bytes())
        }) {
            break b;
        }
    };
    let mut body = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}\r\n\r\n").as_bytes());
        body.extend_from_slice(p);
    }
    if !parts.is_empty() {
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_lines_keep_their_guid_source_instance_and_stream() {
        let mut m = LogMessage::new("web", "APP/2", "hello");
        m.timestamp = 1_700_000_000_123_456_789;
        m.stream = "stderr".into();
        let bytes = log_envelope(&m).encode_to_vec();
        let e = events::Envelope::decode(bytes.as_slice()).unwrap();
        assert_eq!(e.event_type(), EventType::LogMessage);
        assert_eq!(e.origin, ORIGIN);
        let l = e.log_message.unwrap();
        assert_eq!(l.message, b"hello");
        assert_eq!(l.message_type(), MessageType::Err);
        assert_eq!(l.timestamp, 1_700_000_000_123_456_789);
        assert_eq!(l.app_id.as_deref(), Some("web"));
        assert_eq!(l.source_type.as_deref(), Some("APP"));
        assert_eq!(l.source_instance.as_deref(), Some("2"));
        assert_eq!(app_source("RTR"), ("RTR".into(), String::new()));
    }

    #[test]
    fn debug_lines_name_diegos_components_and_lattices_machines() {
        let line = |source: &str| {
            let e = log_envelope(&LogMessage::new(DEBUG_LOG_GUID, source, "x"));
            let l = e.log_message.unwrap();
            (e.origin, l.source_type.unwrap(), l.source_instance.unwrap())
        };
        assert_eq!(
            line("CELL"),
            (
                "lattice-cell-0/rep".into(),
                "rep".into(),
                "lattice-cell-0".into()
            )
        );
        assert_eq!(line("EXECUTOR").1, "garden-linux");
        assert_eq!(line("EXECUTOR").2, "lattice-cell-0");
        assert_eq!(line("BBS").1, "bbs");
        assert_eq!(line("AUDIT").1, "receptor");
        assert_eq!(line("RTR").2, "lattice-brain-0");
        assert_eq!(line("SOMETHING").1, "something");
    }

    #[test]
    fn zero_values_of_required_fields_are_on_the_wire() {
        // proto2 `required`: a metric of instance 0 at 0 % CPU still says so (the
        // original client drops an envelope missing any required field).
        let m = InstanceMetric {
            application_id: "web".into(),
            index: 0,
            cpu_percentage: 0.0,
            memory_bytes: 0,
            disk_bytes: 0,
            timestamp: 1,
        };
        let bytes = metric_envelope(&m).encode_to_vec();
        let c = events::Envelope::decode(bytes.as_slice())
            .unwrap()
            .container_metric
            .unwrap()
            .encode_to_vec();
        // Tags 1..=5 each present: applicationId, instanceIndex, cpuPercentage
        // (fixed64), memoryBytes, diskBytes.
        assert_eq!(
            c,
            [
                &[0x0a, 3][..],
                b"web",
                &[0x10, 0],
                &[0x19, 0, 0, 0, 0, 0, 0, 0, 0],
                &[0x20, 0],
                &[0x28, 0]
            ]
            .concat()
        );
    }

    #[test]
    fn cpu_percentage_of_two_samples() {
        assert_eq!(cpu_percentage((0, 1.0), (2_000_000_000, 1.5)), Some(25.0));
        assert_eq!(cpu_percentage((0, 1.0), (10_000_000, 1.5)), None);
        assert_eq!(cpu_percentage((5, 1.0), (0, 1.5)), None);
        assert_eq!(cpu_percentage((0, 9.0), (1_000_000_000, 1.0)), Some(0.0));
    }

    #[test]
    fn multipart_parts_are_delimited_by_a_boundary_none_contains() {
        let e = metric_envelope(&InstanceMetric {
            application_id: "--b0".into(),
            index: 1,
            cpu_percentage: 1.0,
            memory_bytes: 2,
            disk_bytes: 3,
            timestamp: 4,
        });
        let mut n = 0;
        let (boundary, body) = multipart(&[e.clone(), e.clone()], || {
            n += 1;
            format!("b{}", n - 1)
        });
        assert_eq!(boundary, "b1", "b0 occurs in a part");
        let part = e.encode_to_vec();
        let want = [
            b"--b1\r\n\r\n".as_slice(),
            &part,
            b"\r\n--b1\r\n\r\n",
            &part,
            b"\r\n--b1--\r\n",
        ]
        .concat();
        assert_eq!(body, want);
        let (_, empty) = multipart(&[], || "z".into());
        assert_eq!(empty, b"--z--\r\n");
    }
}
