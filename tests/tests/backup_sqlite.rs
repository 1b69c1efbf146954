//! A sqlite app's hook produces a consistent dump under writes, on `lattice up`: an
//! image of busybox and Debian's sqlite3 (with the libraries it loads) pulled from a
//! real registry; an app writes to its database on a volume without pause, one row in
//! each of two tables per transaction; `ltc backup create --pre 'sqlite3 … .backup …'`
//! dumps it in the app's instance before the snapshot (the post hook removes the
//! dump), and the dump restored from the backup passes sqlite's integrity check with
//! as many rows in one table as in the other. A failing sqlite3 hook fails the backup
//! with sqlite's message and leaves the app writing. Real processes, real containers,
//! a real repository.

use std::time::Duration;

use lattice_tests::backups::{backup, failed, on_volume_in, wait_hooks_ok};
use lattice_tests::{wait_for, UpProcess};

/// The number of transactions the app has committed, as it serves it (`/n`); none
/// while the app is not answering, or rewriting the file.
fn committed(up: &UpProcess) -> Option<u64> {
    match up.get_path("sqlapp", "/n")? {
        (200, body) => String::from_utf8_lossy(&body).trim().parse().ok(),
        _ => None,
    }
}

/// Waits (generously) for the app to commit more transactions than it has now; how
/// many it has then.
fn still_writes(up: &UpProcess, what: &str) -> u64 {
    let then = wait_for(what, Duration::from_secs(60), || committed(up));
    wait_for(what, Duration::from_secs(60), || {
        committed(up).filter(|&now| now > then)
    })
}

#[test]
fn a_sqlite_apps_hook_produces_a_consistent_dump_under_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    lattice_tests::images::busybox_with_host_binaries(
        &layout,
        "v1",
        &["/usr/bin/sqlite3"],
        "sqlite3",
        &serde_json::json!({"config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}}),
    );
    let registry = lattice_cell::testing::Registry::start();
    registry.push(&layout, "v1", "lattice/sqlite");
    // The cell of `lattice up` reads its flags from the environment too.
    std::env::set_var("LATTICE_CELL_INSECURE_REGISTRIES", &registry.addr);
    let image = format!("docker://{}/lattice/sqlite:v1", registry.addr);

    let up = UpProcess::start();
    up.target();
    up.ltc_ok(&["volume", "create", "db", "--size", "1G"]);
    // The app commits transactions one after the other, each a row in `a` and a row in
    // `b` (the invariant: as many rows in both), and publishes how many it committed.
    // WAL: the database is app.db and its log (app.db-wal); the dump is one file, made
    // whole by sqlite itself.
    let out = up.ltc_ok(&[
        "create",
        "sqlapp",
        &image,
        "--volume",
        "db:/data",
        "--",
        "sh",
        "-c",
        "set -e; mkdir -p /data/www; \
         sqlite3 /data/app.db 'PRAGMA journal_mode=WAL; \
           CREATE TABLE IF NOT EXISTS a(i INTEGER, t TEXT); \
           CREATE TABLE IF NOT EXISTS b(i INTEGER, t TEXT);' >/dev/null; \
         (i=0; while :; do \
           sqlite3 -cmd '.timeout 10000' /data/app.db \
             \"BEGIN; INSERT INTO a VALUES($i, hex(randomblob(100))); \
              INSERT INTO b VALUES($i, hex(randomblob(100))); COMMIT;\" || exit 1; \
           i=$((i+1)); echo $i > /data/www/n; done) & \
         exec httpd -f -p 8080 -h /data/www",
    ]);
    assert!(out.contains("App sqlapp is running"), "{out}");
    still_writes(&up, "the app commits");

    // The pre hook dumps the database with sqlite's online backup (waiting for the
    // writer's lock rather than failing) and says how many rows the dump holds; the
    // post hook removes the dump from the live volume.
    let b = backup(
        &up,
        "db",
        &[
            "--pre",
            "sqlite3 /data/app.db '.timeout 10000' '.backup /data/dump.sqlite' && \
             echo dumped $(sqlite3 /data/dump.sqlite 'SELECT count(*) FROM a')",
            "--post",
            "rm /data/dump.sqlite && echo removed",
            "--app",
            "sqlapp",
            "--hook-timeout",
            "60s",
        ],
    );
    let id = b["id"].as_str().unwrap().to_string();
    let b = wait_hooks_ok(&up, "db", &id);
    assert_eq!(b["hook_instance"], "sqlapp/0", "{b}");
    let output = b["hook_output"].as_str().unwrap();
    let dumped: u64 = output
        .split("[pre hook]\ndumped ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the pre hook's count: {b}"));
    assert!(output.contains("[post hook]\nremoved"), "{b}");
    let now = still_writes(&up, "the app commits after the backup");
    assert!(
        now > dumped,
        "the app wrote past the dump ({dumped} rows): {now}"
    );

    // The dump restored from the snapshot: whole, the invariant kept, and the very dump
    // the pre hook wrote (same count), which the post hook had removed from the live
    // volume: it was taken between the two hooks.
    up.ltc_ok(&["backup", "restore", &id, "--to", "db-copy"]);
    let check = on_volume_in(
        &up,
        &image,
        "check-dump",
        "db-copy",
        "sqlite3 /data/dump.sqlite 'PRAGMA integrity_check; \
           SELECT count(*) FROM a; SELECT count(*) FROM b; \
           SELECT count(*) FROM a WHERE i NOT IN (SELECT i FROM b);'",
    );
    let lines: Vec<&str> = check.lines().collect();
    assert_eq!(lines.len(), 4, "{check}");
    assert_eq!(
        lines[0], "ok",
        "the dump passes sqlite's integrity check: {check}"
    );
    let (a, b_rows): (u64, u64) = (lines[1].parse().unwrap(), lines[2].parse().unwrap());
    assert!(a > 0, "rows in the dump: {check}");
    assert_eq!(a, b_rows, "as many rows in a as in b: {check}");
    assert_eq!(lines[3], "0", "every row of a has its row in b: {check}");
    assert_eq!(a, dumped, "the dump the pre hook wrote: {check}; {output}");

    // A sqlite3 hook that fails: the backup fails with sqlite's message, no snapshot
    // is taken, and the app goes on writing.
    let snapshots = up.data_dir.path().join("lattice/blobs/restic/db/snapshots");
    let before = std::fs::read_dir(&snapshots).unwrap().count();
    let out = up.ltc(&[
        "backup",
        "create",
        "db",
        "--pre",
        "sqlite3 /data/missing-dir/x.db 'SELECT 1'",
        "--app",
        "sqlapp",
    ]);
    assert!(
        !out.ok && out.stderr.contains("unable to open database"),
        "{out:#?}"
    );
    let failed = failed(&up, "db");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["hook_status"], "pre hook failed", "{}", failed[0]);
    let hook_output = failed[0]["hook_output"].as_str().unwrap();
    assert!(
        hook_output.contains("Error: unable to open database \"/data/missing-dir/x.db\""),
        "sqlite's own message: {}",
        failed[0]
    );
    assert_eq!(std::fs::read_dir(&snapshots).unwrap().count(), before);
    still_writes(&up, "the app still commits after the failed backup");
}
