//! A cell's `GET /v1/containers` answer: one [`CellContainer`] per container on the
//! cell, with its resource use. The rep serves it; the BBS reads it for
//! `/v1/actual_lrps/GUID/usage`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One container on a cell. Fields are in alphabetical order, the order the rep's
/// answer has always had. Only `handle` is required of a cell's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CellContainer {
    /// CPU time used, in seconds.
    #[serde(default)]
    pub cpu_seconds: f64,
    /// Bytes written to its rootfs and scratch space.
    #[serde(default)]
    pub disk_bytes: u64,
    /// The container's handle: the instance guid of an LRP, the task guid of a Task.
    pub handle: String,
    /// Its address on the cell's bridge.
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub log_source: String,
    /// Memory in use now.
    #[serde(default)]
    pub memory_bytes: u64,
    /// Its memory limit.
    #[serde(default)]
    pub memory_mb: i32,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    #[serde(default)]
    pub rootfs: String,
    /// Its tags (without the `desired` one the rep keeps for itself).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A container port and the host port the cell mapped it to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPort {
    pub container_port: u32,
    pub host_port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_container_is_written_as_the_rep_always_wrote_it() {
        let c = CellContainer {
            cpu_seconds: 1.5,
            disk_bytes: 3,
            handle: "h".into(),
            ip: "10.0.0.2".into(),
            log_source: "APP".into(),
            memory_bytes: 7,
            memory_mb: 64,
            ports: vec![ContainerPort {
                container_port: 8080,
                host_port: 61000,
            }],
            rootfs: "preloaded:busybox".into(),
            tags: BTreeMap::from([("app".into(), "web".into())]),
        };
        let want = json!({
            "handle": "h", "memory_bytes": 7, "cpu_seconds": 1.5, "disk_bytes": 3,
            "rootfs": "preloaded:busybox", "ip": "10.0.0.2",
            "ports": [{"container_port": 8080, "host_port": 61000}],
            "memory_mb": 64, "log_source": "APP", "tags": {"app": "web"},
        });
        // Byte for byte: serde_json's maps are sorted, as the fields are.
        assert_eq!(serde_json::to_string(&c).unwrap(), want.to_string());
    }

    #[test]
    fn only_the_handle_is_required() {
        let c: CellContainer = serde_json::from_value(json!({"handle": "h"})).unwrap();
        assert_eq!(c.handle, "h");
        assert_eq!((c.memory_bytes, c.disk_bytes, c.cpu_seconds), (0, 0, 0.0));
        assert!(serde_json::from_value::<CellContainer>(json!({"memory_bytes": 1})).is_err());
    }
}
