//! Volumes and backups as a user drives them with `ltc`, on `lattice up` plus a second
//! cell: an app writes to its volume (and keeps writing); a backup Task archives a
//! snapshot; the data is destroyed; a restore Task brings it back byte for byte (read
//! back through the router) with the app's log a consistent prefix; the backup
//! verifies; it restores onto a volume on the other cell, where a task that mounts it
//! is placed; a corrupt repository fails its restore and leaves the volume as it was; a
//! mounted volume cannot be removed; a snapshot is not exported (restic reads it).
//! Real processes, real containers, real loop devices.

use std::time::Duration;

use lattice_tests::{wait_for, CellProcess, UpProcess};
use sha2::Digest;

fn sha(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The file at `path` of app `app`, through the router.
fn fetch(up: &UpProcess, app: &str, path: &str) -> Vec<u8> {
    match up.get_path(app, path) {
        Some((200, body)) => body,
        other => panic!(
            "GET {path} from {app}: {:?}",
            other.map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned()))
        ),
    }
}

/// Submits a task that mounts `volume` read-only at /data and returns it once completed.
fn read_volume(up: &UpProcess, guid: &str, volume: &str, script: &str) -> serde_json::Value {
    on_volume(up, guid, volume, script, true)
}

/// Submits a task that runs `script` (its stdout the result) with `volume` at /data, and
/// returns the task once completed.
fn on_volume(
    up: &UpProcess,
    guid: &str,
    volume: &str,
    script: &str,
    read_only: bool,
) -> serde_json::Value {
    let file = up.data_dir.path().join(format!("{guid}.json"));
    let task = serde_json::json!({
        "task_guid": guid, "domain": "checks", "rootfs": "preloaded:busybox",
        "memory_mb": 64, "cpu_weight": 10,
        "action": {"run": {"path": "/bin/sh", "args": ["-c", format!("( {script} ) > /tmp/r")], "user": "root"}},
        "result_file": "/tmp/r",
        "volume_mounts": [{"volume": volume, "container_path": "/data", "read_only": read_only}],
    });
    std::fs::write(&file, task.to_string()).unwrap();
    up.ltc_ok(&["submit-task", file.to_str().unwrap()]);
    wait_for(&format!("task {guid}"), Duration::from_secs(60), || {
        let t = json(&up.ltc_ok(&["task", guid, "--json"]));
        (t["state"] == "COMPLETED").then_some(t)
    })
}

/// Whether every line is the previous one plus one, from 0: what an app appending a
/// counter leaves in a consistent copy (a torn copy shows gaps, NULs or half lines).
fn consecutive(log: &[u8]) -> usize {
    let text = String::from_utf8(log.to_vec()).expect("the log is text");
    assert!(
        text.ends_with('\n'),
        "the log ends mid-line: {:?}",
        &text[text.len().saturating_sub(20)..]
    );
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line, i.to_string(), "line {i} of the restored log");
    }
    text.lines().count()
}

#[test]
fn backup_destroy_restore_verify_and_move_to_another_cell() {
    let up = UpProcess::start();
    up.target();
    let out = up.ltc_ok(&["volume", "create", "pg", "--size", "1G"]);
    assert!(out.contains("Volume pg (1G) is ready on cell"), "{out}");

    // The app writes a 3 MB blob and a text file once, then appends a counter to a log
    // for as long as it runs, and serves its volume.
    up.ltc_ok(&[
        "create",
        "db",
        "preloaded:busybox",
        "--volume",
        "pg:/data",
        "--",
        "sh",
        "-c",
        "[ -f /data/blob ] || { head -c 3000000 /dev/urandom > /data/blob; echo hello > /data/hello.txt; chown 1000:1000 /data/hello.txt; chmod 604 /data/hello.txt; }; \
         mkdir -p /data/logs; (i=0; while :; do echo $i >> /data/logs/counter; i=$((i+1)); usleep 300; done) & \
         exec httpd -f -p 8080 -h /data",
    ]);
    let blob = fetch(&up, "db", "/blob");
    assert_eq!(blob.len(), 3_000_000);
    let list = json(&up.ltc_ok(&["volume", "list", "--json"]));
    assert_eq!(list[0]["users"], serde_json::json!(["db"]), "{list}");
    let out = up.ltc(&["volume", "remove", "pg"]);
    assert!(
        !out.ok && out.stderr.contains("volume pg is mounted by db"),
        "{out:#?}"
    );

    // Grown online while the app uses it.
    let out = up.ltc_ok(&["volume", "grow", "pg", "--size", "2G"]);
    assert!(out.contains("Volume pg is now 2G"), "{out}");
    assert_eq!(fetch(&up, "db", "/hello.txt"), b"hello\n");
    let t = read_volume(&up, "df", "pg", "df -k /data | tail -1 | awk '{print $2}'");
    let kib: u64 = t["result"]
        .as_str()
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("df's size: {t}"));
    assert!(kib > 1_900_000, "the filesystem grew to 2G: {kib} KiB");

    // Back up while the app writes.
    std::thread::sleep(Duration::from_millis(500));
    let out = up.ltc_ok(&["backup", "create", "pg"]);
    assert!(out.starts_with("Backup pg-"), "{out}");
    let backups = json(&up.ltc_ok(&["backup", "list", "--json"]));
    let b = &backups[0];
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(b["state"], "COMPLETED", "{b}");
    assert_eq!(b["snapshot"].as_str().unwrap().len(), 64, "{b}");
    assert_eq!(b["repository"], "pg", "{b}");
    assert!(b["total_bytes"].as_u64().unwrap() > 3_000_000, "{b}");
    // Random data does not compress: all of it was added.
    assert!(b["added_bytes"].as_u64().unwrap() > 3_000_000, "{b}");
    assert_eq!(b["size_bytes"], b["added_bytes"], "{b}");
    assert!(up.ltc_ok(&["backup", "list", "pg"]).contains(&id));
    // The backup was an ordinary task, with a log.
    let task = b["task_guid"].as_str().unwrap();
    assert_eq!(json(&up.ltc_ok(&["task", task, "--json"]))["failed"], false);

    // Nothing may use a volume while a restore swaps its data.
    let out = up.ltc(&["backup", "restore", &id, "--to", "pg"]);
    assert!(
        !out.ok && out.stderr.contains("volume pg is mounted by db"),
        "{out:#?}"
    );

    // Destroy the data: the app goes (its container with it), a task empties the volume.
    up.ltc_ok(&["remove", "db"]);
    wait_for("db's container is gone", Duration::from_secs(20), || {
        (up.containers_on_disk() == 0).then_some(())
    });
    let t = on_volume(
        &up,
        "wipe",
        "pg",
        "rm -rf /data/* && echo junk > /data/junk && ls /data",
        false,
    );
    assert_eq!(t["result"], "junk\n", "{t}");

    // Restore, and serve the volume again (without writing).
    let out = up.ltc_ok(&["backup", "restore", &id, "--to", "pg"]);
    assert!(
        out.contains(&format!("Restored backup {id} into volume pg")),
        "{out}"
    );
    up.ltc_ok(&[
        "create",
        "db2",
        "preloaded:busybox",
        "--volume",
        "pg:/data:ro",
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/data",
    ]);
    assert_eq!(
        sha(&fetch(&up, "db2", "/blob")),
        sha(&blob),
        "byte for byte"
    );
    assert_eq!(fetch(&up, "db2", "/hello.txt"), b"hello\n");
    assert!(
        matches!(up.get_path("db2", "/junk"), Some((404, _))),
        "the restore replaced the volume's data"
    );
    let lines = consecutive(&fetch(&up, "db2", "/logs/counter"));
    assert!(lines > 10, "the app had written {lines} lines");

    // A backup is trusted once it restores and matches.
    let out = up.ltc_ok(&["backup", "verify", &id]);
    assert!(out.contains(&format!("Backup {id} is good")), "{out}");
    let b = json(&up.ltc_ok(&["backup", "list", "--json"]));
    assert_eq!(b[0]["verified"], "ok", "{b}");

    // Another cell joins; the backup moves data there.
    let pki = up.pki();
    let tls = pki.flags(lattice_specs::identity::Role::Cell, "cell-b");
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let cell_b = CellProcess::start(&up.grpc, "cell-b", &tls);
    wait_for("cell-b appears", Duration::from_secs(10), || {
        up.ltc_ok(&["cells"]).contains("cell-b").then_some(())
    });
    let out = up.ltc_ok(&[
        "backup", "restore", &id, "--to", "pg-b", "--size", "1G", "--cell", "cell-b",
    ]);
    assert!(
        out.contains("Made volume pg-b (1G) on cell cell-b"),
        "{out}"
    );
    let t = read_volume(
        &up,
        "check-b",
        "pg-b",
        "sha256sum /data/blob | cut -d' ' -f1",
    );
    assert_eq!(t["cell_id"], "cell-b", "placed with its volume: {t}");
    assert_eq!(t["result"].as_str().unwrap().trim(), sha(&blob), "{t}");
    // Owners and modes come back too.
    let t = read_volume(
        &up,
        "owners-b",
        "pg-b",
        "stat -c '%u:%g %a' /data/hello.txt",
    );
    assert_eq!(t["result"], "1000:1000 604\n", "{t}");

    // A corrupt repository (a byte of every data pack flipped): the restore fails, the
    // volume is as it was.
    let data = up.data_dir.path().join("lattice/blobs/restic/pg/data");
    let mut packs = 0;
    for dir in std::fs::read_dir(&data).expect("the repository's data packs") {
        for pack in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let pack = pack.unwrap().path();
            let mut bytes = std::fs::read(&pack).unwrap();
            let n = bytes.len();
            bytes[n / 2] ^= 0xff;
            std::fs::write(&pack, bytes).unwrap();
            packs += 1;
        }
    }
    assert!(packs > 0, "no pack under {}", data.display());
    let out = up.ltc(&["backup", "restore", &id, "--to", "pg-b"]);
    assert!(!out.ok && out.stderr.contains("restore failed"), "{out:#?}");
    let t = read_volume(
        &up,
        "check-b2",
        "pg-b",
        "sha256sum /data/blob | cut -d' ' -f1; ls -A /data",
    );
    assert_eq!(
        t["result"].as_str().unwrap(),
        format!("{}\nblob\nhello.txt\nlogs\n", sha(&blob)),
        "{t}"
    );
    let out = up.ltc(&["backup", "verify", &id]);
    assert!(!out.ok && out.stderr.contains("did not verify"), "{out:#?}");
    // Verifications restore into scratch volumes, gone with their tasks.
    let images = up.data_dir.path().join("lattice/cell/volumes/pool/volumes");
    wait_for("scratch volumes removed", Duration::from_secs(20), || {
        let names: Vec<String> = std::fs::read_dir(&images)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        (!names.iter().any(|n| n.starts_with("scratch"))).then_some(())
    });
    let b = json(&up.ltc_ok(&["backup", "list", "--json"]));
    assert!(
        b[0]["verified"].as_str().unwrap().starts_with("failed: "),
        "{b}"
    );

    // Removing a volume nobody mounts.
    assert!(up
        .ltc_ok(&["volume", "remove", "pg-b"])
        .contains("Removed volume pg-b"));
    drop(cell_b);
}

#[test]
fn backups_export_and_import_and_bad_input_is_refused() {
    let up = UpProcess::start();
    up.target();
    for (args, want) in [
        (
            vec!["volume", "create", "Bad", "--size", "1G"],
            "use up to 63 lowercase",
        ),
        (
            vec!["volume", "create", "tiny", "--size", "10M"],
            "at least 300M",
        ),
        (
            vec!["volume", "create", "x", "--size", "10Q"],
            "unknown unit",
        ),
        (
            vec!["volume", "create", "x", "--size", "1G", "--cell", "nope"],
            "cell nope is not present",
        ),
        (vec!["backup", "create", "ghost"], "volume ghost not found"),
        (vec!["volume", "remove", "ghost"], "volume ghost not found"),
        (
            vec!["backup", "restore", "nope", "--to", "v"],
            "backup nope not found",
        ),
        (
            vec![
                "create",
                "a",
                "preloaded:busybox",
                "--volume",
                "ghost:/d",
                "--",
                "true",
            ],
            "volume ghost does not exist",
        ),
    ] {
        let out = up.ltc(&args);
        assert!(!out.ok && out.stderr.contains(want), "{args:?}: {out:#?}");
    }

    up.ltc_ok(&["volume", "create", "src", "--size", "512M"]);
    let out = up.ltc(&["volume", "grow", "src", "--size", "400M"]);
    assert!(!out.ok && out.stderr.contains("can only grow"), "{out:#?}");
    let out = up.ltc_ok(&["volume", "list"]);
    assert!(
        out.contains("src") && out.contains("512M") && out.contains("READY"),
        "{out}"
    );
    // Quota: writing past the size fails inside the container, nothing else breaks.
    let t = on_volume(
        &up,
        "fill",
        "src",
        "echo kept > /data/kept; dd if=/dev/zero of=/data/big bs=1M count=600 oflag=direct",
        false,
    );
    assert_eq!(t["failed"], true, "dd past the quota must fail: {t}");
    let logs = up.ltc_ok(&["logs", "fill", "--no-follow"]);
    assert!(logs.contains("No space left on device"), "{logs}");
    up.ltc_ok(&["delete-task", "fill"]);

    let out = up.ltc_ok(&["backup", "create", "src"]);
    let id = out
        .split_whitespace()
        .nth(1)
        .expect("Backup ID of …")
        .to_string();
    // A snapshot is not an archive to export: restic reads it with the cluster's key.
    let file = up.data_dir.path().join("src.backup");
    let out = up.ltc(&["backup", "export", &id, file.to_str().unwrap()]);
    assert!(
        !out.ok && out.stderr.contains("ltc backup key export") && out.stderr.contains("restic -r"),
        "{out:#?}"
    );
    assert!(!file.exists());
    up.ltc_ok(&["backup", "restore", &id, "--to", "copy"]);
    let t = read_volume(&up, "check", "copy", "cat /data/kept; ls /data");
    assert_eq!(t["result"].as_str().unwrap(), "kept\nbig\nkept\n", "{t}");
    up.ltc_ok(&["backup", "delete", &id]);
    assert!(!up.ltc_ok(&["backup", "list"]).contains(&id));

    // A schedule: the brain takes the current slot's backup at once, and only once.
    let out = up.ltc(&["backup", "schedule", "src", "--every", "5s"]);
    assert!(!out.ok && out.stderr.contains("hourly, daily"), "{out:#?}");
    up.ltc_ok(&["backup", "schedule", "src", "--every", "1h", "--keep", "3"]);
    assert!(up.ltc_ok(&["backup", "schedules"]).contains("src"));
    // One kind of periodic Task: `ltc schedules` lists it with the others.
    let all = up.ltc_ok(&["schedules"]);
    assert!(
        all.lines()
            .any(|l| l.starts_with("src ") && l.contains("backup of src") && l.contains(" 1h ")),
        "{all}"
    );
    let scheduled = |up: &UpProcess| -> Vec<serde_json::Value> {
        json(&up.ltc_ok(&["backup", "list", "src", "--json"]))
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["slot"] != "")
            .cloned()
            .collect()
    };
    let b = wait_for("the scheduled backup", Duration::from_secs(60), || {
        scheduled(&up)
            .into_iter()
            .find(|b| b["state"] == "COMPLETED")
    });
    assert_eq!(
        b["id"],
        format!("src-{}", b["slot"].as_str().unwrap()),
        "{b}"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(scheduled(&up).len(), 1, "one backup per slot");
    up.ltc_ok(&["backup", "schedule", "src", "--off"]);
    assert!(up.ltc_ok(&["backup", "schedules"]).contains("No schedules"));
    assert!(up.ltc_ok(&["schedules"]).contains("No schedules"));

    // What the metrics say.
    let api = up.api.trim_start_matches("http://").to_string();
    let m = UpProcess::http_get(&api, "/metrics");
    assert!(m.contains("bbs_backups_total{state=\"COMPLETED\"}"), "{m}");
    let m = UpProcess::http_get(&up.metrics, "/metrics");
    assert!(
        m.contains("cell_volume_bytes{kind=\"size\",volume=\"src\"} 536870912"),
        "{m}"
    );
    assert!(m.contains("cell_volume_pool_bytes{kind=\"used\"}"), "{m}");

    // A file that is not an export.
    let junk = up.data_dir.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar").unwrap();
    let out = up.ltc(&["backup", "import", junk.to_str().unwrap()]);
    assert!(
        !out.ok && out.stderr.contains("not an exported backup"),
        "{out:#?}"
    );
}

#[test]
fn a_backup_cancelled_midway_leaves_no_snapshot() {
    let up = UpProcess::start();
    up.target();
    up.ltc_ok(&["volume", "create", "big", "--size", "1G"]);
    // Random data: slow to compress, so the backup is still running when cancelled.
    let t = on_volume(
        &up,
        "fill-big",
        "big",
        "head -c 300000000 /dev/urandom > /data/r && echo ok",
        false,
    );
    assert_eq!(t["result"], "ok\n", "{t}");
    let id = up
        .ltc_ok(&["backup", "create", "big", "--no-wait"])
        .trim()
        .to_string();
    let task = format!("backup-{id}");
    wait_for("the backup task runs", Duration::from_secs(30), || {
        let t = json(&up.ltc_ok(&["task", &task, "--json"]));
        (t["state"] == "RUNNING").then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    up.ltc_ok(&["cancel-task", &task]);
    let b = wait_for("the backup fails", Duration::from_secs(30), || {
        let b = json(&up.ltc_ok(&["backup", "list", "--json"]));
        (b[0]["state"] == "FAILED").then(|| b[0].clone())
    });
    assert!(
        b["failure_reason"].as_str().unwrap().contains("cancel"),
        "{b}"
    );
    let snapshots = up
        .data_dir
        .path()
        .join("lattice/blobs/restic/big/snapshots");
    let taken = std::fs::read_dir(&snapshots).map_or(0, |d| d.count());
    assert_eq!(taken, 0, "no snapshot of a cancelled backup");
    let out = up.ltc(&["backup", "restore", &id, "--to", "other"]);
    assert!(
        !out.ok && out.stderr.contains("only a COMPLETED backup"),
        "{out:#?}"
    );
    assert!(
        !up.ltc_ok(&["volume", "list"]).contains("other"),
        "nothing made for a restore that cannot happen"
    );
}

/// Issue 21 item 6: work sent to `lattice up` as soon as it says it is ready finds its
/// cell registered: a volume is created at once (not refused with "no cell offers the
/// local volume driver"), and the API says it is ready.
#[test]
fn a_volume_is_created_as_soon_as_lattice_up_is_ready() {
    let up = UpProcess::start();
    up.target();
    let out = up.ltc(&["volume", "create", "early", "--size", "1G"]);
    assert!(
        out.ok && out.stdout.contains("Volume early (1G) is ready on cell"),
        "{out:#?}"
    );
    let api = up.api.trim_start_matches("http://");
    assert_eq!(UpProcess::http_get(api, "/readyz"), "ready\n");
    // The brain (leading once it took the lock) and the router (its table loaded).
    let ready = wait_for("lattice up's brain leads", Duration::from_secs(15), || {
        let body = UpProcess::http_get(&up.metrics, "/readyz");
        body.starts_with("ready:").then_some(body)
    });
    assert!(ready.ends_with("leads; route table loaded\n"), "{ready}");
    up.ltc_ok(&["volume", "remove", "early"]);
}
