//! What the backup tests on `lattice up` share: a task that runs a script on a volume,
//! a backup made with `ltc backup create` and read back from `ltc backup list`.

use std::time::Duration;

use crate::{wait_for, UpProcess};

/// `s` as JSON; panics with the text when it is not.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Runs `script` (its stdout the result) in a busybox task with `volume` at /data; the
/// task once completed, which must not have failed.
pub fn on_volume(up: &UpProcess, guid: &str, volume: &str, script: &str) -> String {
    on_volume_in(up, "preloaded:busybox", guid, volume, script)
}

/// [`on_volume`] in the image `rootfs` (which must have `/bin/sh`).
pub fn on_volume_in(
    up: &UpProcess,
    rootfs: &str,
    guid: &str,
    volume: &str,
    script: &str,
) -> String {
    let file = up.data_dir.path().join(format!("{guid}.json"));
    let task = serde_json::json!({
        "task_guid": guid, "domain": "checks", "rootfs": rootfs,
        "memory_mb": 64, "cpu_weight": 10,
        "action": {"run": {"path": "/bin/sh", "args": ["-c", format!("set -e; ( {script} ) > /tmp/r")], "user": "root"}},
        "result_file": "/tmp/r",
        "volume_mounts": [{"volume": volume, "container_path": "/data"}],
    });
    std::fs::write(&file, task.to_string()).unwrap();
    up.ltc_ok(&["submit-task", file.to_str().unwrap()]);
    let t = wait_for(&format!("task {guid}"), Duration::from_secs(120), || {
        let t = json(&up.ltc_ok(&["task", guid, "--json"]));
        (t["state"] == "COMPLETED").then_some(t)
    });
    assert_eq!(t["failed"], false, "{t}");
    t["result"].as_str().unwrap().to_string()
}

/// `ltc backup create VOLUME ARGS…` and the backup it made (COMPLETED).
pub fn backup(up: &UpProcess, volume: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["backup", "create", volume];
    all.extend_from_slice(args);
    let out = up.ltc_ok(&all);
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("Backup ID of …: {out}"))
        .to_string();
    let b = listed(up, volume, &id).unwrap_or_else(|| panic!("backup {id} listed"));
    assert_eq!(b["state"], "COMPLETED", "{b}");
    b
}

/// Backup `id` of `volume` as `ltc backup list VOLUME --json` shows it, if listed.
pub fn listed(up: &UpProcess, volume: &str, id: &str) -> Option<serde_json::Value> {
    json(&up.ltc_ok(&["backup", "list", volume, "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .cloned()
}

/// Waits (up to a minute) for backup `id` of `volume` to say "hooks ok" (its post
/// hook ran), and returns it.
pub fn wait_hooks_ok(up: &UpProcess, volume: &str, id: &str) -> serde_json::Value {
    wait_for("the post hook ran", Duration::from_secs(60), || {
        listed(up, volume, id).filter(|b| b["hook_status"] == "hooks ok")
    })
}

/// The backups of `volume` that FAILED.
pub fn failed(up: &UpProcess, volume: &str) -> Vec<serde_json::Value> {
    json(&up.ltc_ok(&["backup", "list", volume, "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["state"] == "FAILED")
        .cloned()
        .collect()
}
