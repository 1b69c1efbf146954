//! Retention that keeps the good ones, and scheduled verification, as a user drives them
//! with `ltc` on `lattice up`: a volume backed up every minute keeping one (`--keep 1`);
//! its first backup verified good by hand; retention removes what its policy does not
//! keep but never that verified backup; the newest backup's archive is corrupted in the
//! blob store and the scheduled verification (`--verify 1m`) marks it failed; retention
//! still keeps the older verified-good backup and the failed one does not count as good.
//! Real processes, real containers, real archives.

use std::time::Duration;

use lattice_tests::{wait_for, UpProcess};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn backups(up: &UpProcess) -> Vec<serde_json::Value> {
    let all = json(&up.ltc_ok(&["backup", "list", "--json"]));
    all.as_array().cloned().unwrap_or_default()
}

fn ids(all: &[serde_json::Value]) -> Vec<String> {
    all.iter()
        .map(|b| b["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits (up to a slot and a half, the backup's time included) for a completed
/// scheduled backup of `pg` that is none of `seen`; its id.
fn next_completed(up: &UpProcess, seen: &[&str]) -> String {
    wait_for(
        "the next scheduled backup",
        Duration::from_secs(150),
        || {
            backups(up).into_iter().find_map(|b| {
                let id = b["id"].as_str()?.to_string();
                (b["state"] == "COMPLETED" && !seen.contains(&id.as_str())).then_some(id)
            })
        },
    )
}

#[test]
fn scheduled_verification_marks_a_corrupted_backup_and_retention_keeps_the_good_one() {
    let up = UpProcess::start();
    up.target();
    up.ltc_ok(&["volume", "create", "pg", "--size", "1G"]);
    let task = serde_json::json!({
        "task_guid": "fill", "domain": "checks", "rootfs": "preloaded:busybox",
        "memory_mb": 64, "cpu_weight": 10,
        "action": {"run": {"path": "/bin/sh", "args": ["-c", "head -c 2000000 /dev/urandom > /data/blob"], "user": "root"}},
        "volume_mounts": [{"volume": "pg", "container_path": "/data"}],
    });
    let file = up.data_dir.path().join("fill.json");
    std::fs::write(&file, task.to_string()).unwrap();
    up.ltc_ok(&["submit-task", file.to_str().unwrap()]);
    wait_for("the volume filled", Duration::from_secs(60), || {
        let t = json(&up.ltc_ok(&["task", "fill", "--json"]));
        (t["state"] == "COMPLETED").then_some(())
    });

    // Bad flags are named before anything is sent.
    let out = up.ltc(&[
        "backup", "schedule", "pg", "--every", "1m", "--verify", "often",
    ]);
    assert!(!out.ok && out.stderr.contains("--verify"), "{out:#?}");
    let out = up.ltc(&[
        "backup",
        "schedule",
        "pg",
        "--every",
        "1m",
        "--smaller-than",
        "2",
    ]);
    assert!(!out.ok && out.stderr.contains("--smaller-than"), "{out:#?}");

    // Every minute, keeping one; the current slot's backup is taken at once.
    up.ltc_ok(&["backup", "schedule", "pg", "--every", "1m", "--keep", "1"]);
    let a = next_completed(&up, &[]);
    let out = up.ltc_ok(&["backup", "verify", &a]);
    assert!(out.contains(&format!("Backup {a} is good")), "{out}");

    // Keep-last 1 keeps the newest, and the verified one too: the one in between goes.
    let b = next_completed(&up, &[&a]);
    let c = next_completed(&up, &[&a, &b]);
    wait_for(
        "retention removes the middle backup",
        Duration::from_secs(60),
        || (!ids(&backups(&up)).contains(&b)).then_some(()),
    );
    let left = ids(&backups(&up));
    assert!(left.contains(&a) && left.contains(&c), "{left:?}");

    // The repository's packs go bad in the store (the newest backup's data among
    // them); the scheduled verification (due at once: its first slot) finds it.
    let data = up.data_dir.path().join("lattice/blobs/restic/pg/data");
    let mut packs = 0;
    for dir in std::fs::read_dir(&data).expect("the repository's data") {
        for pack in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let pack = pack.unwrap().path();
            let mut bytes = std::fs::read(&pack).unwrap();
            let n = bytes.len();
            bytes[n / 2] ^= 0xff;
            std::fs::write(&pack, bytes).unwrap();
            packs += 1;
        }
    }
    assert!(packs > 0, "no pack in {}", data.display());
    let out = up.ltc_ok(&[
        "backup", "schedule", "pg", "--every", "1m", "--keep", "1", "--verify", "1m",
    ]);
    assert!(out.contains("verified 1m"), "{out}");
    let verdict = wait_for(
        "the scheduled verification",
        Duration::from_secs(90),
        || {
            backups(&up).into_iter().find_map(|b| {
                let v = b["verified"].as_str()?.to_string();
                (b["id"] == c.as_str() && !v.is_empty()).then_some(v)
            })
        },
    );
    assert!(verdict.starts_with("failed: "), "{verdict}");
    let table = up.ltc_ok(&["backup", "schedules"]);
    assert!(
        table.contains("last 1") && table.contains(&format!("{c}: failed: ")),
        "{table}"
    );

    // The next backup is the newest; the corrupted one holds no slot of the policy and
    // the verified-good one is still kept.
    let d = next_completed(&up, &[&a, &c]);
    let all = backups(&up);
    let left = ids(&all);
    assert!(left.contains(&a) && left.contains(&d), "{left:?}");
    let first = all.iter().find(|x| x["id"] == a.as_str()).unwrap();
    assert_eq!(first["verified"], "ok", "{first}");
    up.ltc_ok(&["backup", "schedule", "pg", "--off"]);
}
