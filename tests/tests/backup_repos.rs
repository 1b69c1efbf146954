//! Backups in restic-format repositories as a user drives them with `ltc`, on `lattice
//! up`: a second backup after a 1% change adds roughly the change, not the volume; the
//! Debian `restic` binary, with the key `ltc backup key export` prints, lists and
//! restores our snapshot byte for byte (contents, modes, owners, symlinks) from the
//! blob store's directory where it lies; hooks: an app that updates two files that must
//! agree, frozen by a pre hook and thawed by a post hook in its own instance, backs up a
//! consistent pair while it keeps writing; a failing pre hook fails the backup with its
//! output, takes no snapshot, and leaves the app running. Real processes, real
//! containers, real repositories.
//!
//! An app with sqlite3 in its image, dumped by its pre hook under writes, is
//! backup_sqlite.rs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lattice_tests::backups::{backup, failed, json, on_volume, wait_hooks_ok};
use lattice_tests::{wait_for, UpProcess};

/// Every entry under the data as `PATH MODE UID:GID [SHA256|-> TARGET]`, by path
/// (what a container printed with busybox, or the host's restore, alike).
fn tree_listing(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (path, rest) = l.split_once(' ').expect("PATH REST");
            (path.to_string(), rest.to_string())
        })
        .collect()
}

/// The shell that lists a tree as [`tree_listing`] reads it (busybox and GNU alike).
const LIST_TREE: &str = "cd \"$1\" && find . ! -name . | while read -r p; do \
    if [ -L \"$p\" ]; then echo \"$p link $(stat -c '%u:%g' \"$p\") -> $(readlink \"$p\")\"; \
    elif [ -d \"$p\" ]; then echo \"$p $(stat -c '%a %u:%g' \"$p\") dir\"; \
    else echo \"$p $(stat -c '%a %u:%g' \"$p\") $(sha256sum \"$p\" | cut -d' ' -f1)\"; fi; done";

/// A shell line printing the number of entries of the tree at `$1` and the sha256 of
/// its sorted listing (a task's result is too small for the listing itself), the
/// listing kept in `$2`.
const TREE_DIGEST: &str = "{ LIST; } | LC_ALL=C sort > \"$2\"; echo $(wc -l < \"$2\") $(sha256sum < \"$2\" | cut -d' ' -f1)";

fn tree_digest_script() -> String {
    TREE_DIGEST.replace("LIST", LIST_TREE)
}

fn list_host_tree(dir: &Path) -> BTreeMap<String, String> {
    let out = Command::new("sh")
        .args(["-c", LIST_TREE, "sh"])
        .arg(dir)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    tree_listing(&String::from_utf8(out.stdout).unwrap())
}

/// `TREE_DIGEST` of a host directory: (entries and digest, the listing itself).
fn host_tree_digest(dir: &Path) -> (String, String) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("sh")
        .args(["-c", &tree_digest_script(), "sh"])
        .arg(dir)
        .arg(tmp.path())
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listing = std::fs::read_to_string(tmp.path()).unwrap();
    (
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
        listing,
    )
}

fn restic(repo: &Path, key_file: &Path, args: &[&str]) -> String {
    let out = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .arg("--password-file")
        .arg(key_file)
        .args(["--no-cache", "--quiet"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("Debian's restic ({e}): scripts/setup.sh installs it (package restic)")
        });
    assert!(
        out.status.success(),
        "restic {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn an_incremental_backup_adds_the_change_and_restic_restores_it_byte_for_byte() {
    let up = UpProcess::start();
    up.target();
    up.ltc_ok(&["volume", "create", "inc", "--size", "1G"]);
    // ~20 MB of mixed data: small text files, medium random files, a large
    // compressible one; a file of another owner and mode, a symlink, an empty dir.
    on_volume(
        &up,
        "fill",
        "inc",
        "mkdir -p /data/small /data/medium /data/empty; \
         i=0; while [ $i -lt 200 ]; do seq $i $((i+150)) > /data/small/f$i.txt; i=$((i+1)); done; \
         i=0; while [ $i -lt 10 ]; do head -c 1000000 /dev/urandom > /data/medium/m$i; i=$((i+1)); done; \
         seq 1 1000000 > /data/large.txt; \
         echo hello > /data/hello.txt; chown 1000:1000 /data/hello.txt; chmod 604 /data/hello.txt; \
         ln -s hello.txt /data/link",
    );
    let first = backup(&up, "inc", &[]);
    let total = first["total_bytes"].as_u64().unwrap();
    assert!(total > 17_000_000, "{first}");
    assert!(first["files"].as_u64().unwrap() >= 212, "{first}");
    let first_added = first["added_bytes"].as_u64().unwrap();
    assert!(
        first_added > 10_000_000 && first_added < total,
        "the random data as it is, the text compressed: {first}"
    );

    // A 1% change: a new 200 KB file, and one small file rewritten.
    on_volume(
        &up,
        "change",
        "inc",
        "head -c 200000 /dev/urandom > /data/medium/new; echo changed >> /data/small/f7.txt",
    );
    let second = backup(&up, "inc", &[]);
    let added = second["added_bytes"].as_u64().unwrap();
    assert!(
        (150_000..2_000_000).contains(&added),
        "the second backup adds about the change (200 KB), not the volume ({total}): {second}"
    );
    assert!(second["total_bytes"].as_u64().unwrap() > total, "{second}");
    let out = up.ltc_ok(&["backup", "list", "inc"]);
    let snapshot = second["snapshot"].as_str().unwrap();
    assert!(out.contains(&snapshot[..8]), "{out}");

    // What the volume holds, as a container sees it.
    let script = format!("set -- /data /tmp/tree\n{}", tree_digest_script());
    let in_container = on_volume(&up, "list", "inc", &script).trim().to_string();
    let entries: usize = in_container.split(' ').next().unwrap().parse().unwrap();
    assert!(entries > 212, "{in_container}");

    // Debian's restic opens the repository where it lies, with the cluster's key.
    let key = up.ltc_ok(&["backup", "key", "export", "--quiet"]);
    let key_file = up.data_dir.path().join("backup-key.txt");
    std::fs::write(&key_file, key.trim()).unwrap();
    let repo = up.data_dir.path().join("lattice/blobs/restic/inc");
    let snapshots = json(&restic(&repo, &key_file, &["snapshots", "--json"]));
    let ids: Vec<&str> = snapshots
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{snapshots}");
    assert!(ids.contains(&snapshot), "{snapshots}");
    let target = tempfile::tempdir().unwrap();
    restic(
        &repo,
        &key_file,
        &[
            "restore",
            snapshot,
            "--target",
            target.path().to_str().unwrap(),
        ],
    );
    // The snapshot's paths read as the volume's data (/data), or its root.
    let root = if target.path().join("data/hello.txt").exists() {
        target.path().join("data")
    } else {
        target.path().to_path_buf()
    };
    let (digest, listing) = host_tree_digest(&root);
    assert_eq!(
        digest, in_container,
        "restic restores our snapshot byte for byte, with modes, owners and links; restored:\n{listing}"
    );
    let restored = list_host_tree(&root);
    assert_eq!(
        restored["./hello.txt"]
            .split(' ')
            .take(2)
            .collect::<Vec<_>>(),
        ["604", "1000:1000"]
    );
}

#[test]
fn hooks_freeze_an_app_for_a_consistent_backup_and_a_failing_pre_hook_takes_none() {
    let up = UpProcess::start();
    up.target();
    up.ltc_ok(&["volume", "create", "pair", "--size", "1G"]);
    // The app keeps two files equal, writing one, then (20 ms later) the other, under
    // a lock (a directory made atomically), free 5 ms between updates; a snapshot taken
    // mid-update sees them differ. It serves its volume.
    up.ltc_ok(&[
        "create",
        "writer",
        "preloaded:busybox",
        "--volume",
        "pair:/data",
        "--",
        "sh",
        "-c",
        "rmdir /data/lock 2>/dev/null; (i=0; while :; do \
           until mkdir /data/lock 2>/dev/null; do usleep 1000; done; \
           echo $i > /data/a; usleep 20000; echo $i > /data/b; rmdir /data/lock; \
           i=$((i+1)); usleep 5000; done) & exec httpd -f -p 8080 -h /data",
    ]);
    wait_for("the writer writes", Duration::from_secs(60), || {
        matches!(up.get_path("writer", "/b"), Some((200, _))).then_some(())
    });

    // The pre hook takes the lock (the app waits), the post hook gives it back.
    let b = backup(
        &up,
        "pair",
        &[
            "--pre",
            "until mkdir /data/lock 2>/dev/null; do usleep 1000; done; echo frozen at $(cat /data/a)",
            "--post",
            "rmdir /data/lock && echo thawed",
            "--app",
            "writer",
            "--hook-timeout",
            "30s",
        ],
    );
    let b = wait_hooks_ok(&up, "pair", b["id"].as_str().unwrap());
    assert_eq!(b["hook_instance"], "writer/0", "{b}");
    let output = b["hook_output"].as_str().unwrap();
    assert!(
        output.contains("[pre hook]\nfrozen at") && output.contains("[post hook]\nthawed"),
        "{b}"
    );
    let id = b["id"].as_str().unwrap().to_string();
    let list = up.ltc_ok(&["backup", "list", "pair"]);
    assert!(list.contains("hooks ok (writer/0)"), "{list}");

    // Thawed: the app goes on writing.
    let a_then = up.get_path("writer", "/a").unwrap().1;
    let a_now = wait_for("the writer writes again", Duration::from_secs(30), || {
        let now = up.get_path("writer", "/a").unwrap().1;
        (now != a_then).then_some(now)
    });
    assert_ne!(a_now, a_then);

    // The restored pair agrees.
    up.ltc_ok(&["backup", "restore", &id, "--to", "pair-copy"]);
    let pair = on_volume(
        &up,
        "check-pair",
        "pair-copy",
        "cat /data/a /data/b; ls -A /data",
    );
    let lines: Vec<&str> = pair.lines().collect();
    assert_eq!(lines[0], lines[1], "a consistent pair: {pair}");
    assert!(
        lines.contains(&"lock"),
        "the snapshot was taken while the pre hook held the lock: {pair}"
    );

    // A failing pre hook: the backup fails with its output, no snapshot, the app runs.
    let snapshots = up
        .data_dir
        .path()
        .join("lattice/blobs/restic/pair/snapshots");
    let before = std::fs::read_dir(&snapshots).unwrap().count();
    let out = up.ltc(&[
        "backup",
        "create",
        "pair",
        "--pre",
        "echo cannot dump the database >&2; exit 3",
    ]);
    assert!(
        !out.ok
            && out.stderr.contains("cannot dump the database")
            && out.stderr.contains("exited with status 3"),
        "{out:#?}"
    );
    assert_eq!(std::fs::read_dir(&snapshots).unwrap().count(), before);
    let failed = failed(&up, "pair");
    assert_eq!(failed.len(), 1, "one FAILED backup: {failed:?}");
    let failed = &failed[0];
    assert_eq!(failed["hook_status"], "pre hook failed", "{failed}");
    assert!(
        failed["hook_output"]
            .as_str()
            .unwrap()
            .contains("cannot dump the database"),
        "{failed}"
    );
    let a_then = up.get_path("writer", "/a").unwrap().1;
    wait_for(
        "the app still runs and writes",
        Duration::from_secs(30),
        || (up.get_path("writer", "/a").unwrap().1 != a_then).then_some(()),
    );

    // A hook that hangs is bounded by its timeout.
    let out = up.ltc(&[
        "backup",
        "create",
        "pair",
        "--pre",
        "sleep 600",
        "--hook-timeout",
        "2s",
    ]);
    assert!(
        !out.ok && out.stderr.contains("did not finish within 2s"),
        "{out:#?}"
    );
}
