//! Backups and restores through the cluster, against `tar | gzip` on the same data in
//! the same run, and snapshot time against volume size:
//!
//! - a 1 GiB volume's data (256 files of 4 MiB: half random text, half log-like lines)
//!   is backed up with `ltc backup create` (a Task: snapshot, manifest, streamed tgz
//!   into the blob store) and restored with `ltc backup restore` into a new volume; the peer is
//!   `tar -cf - . | gzip > FILE` and `gzip -dc FILE | tar -x` of the same directory.
//!   Printed as throughput and peer time / our time (goal ≥ 0.8). Page caches are
//!   dropped before each run.
//! - snapshot (fsfreeze + reflink of the volume image) of a volume holding 64 MiB and
//!   one holding 1 GiB, through the cell's own volume driver (goal < 100 ms, flat).
//!
//! `cargo build --release --workspace --bins && sudo target/release/backup`

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use lattice_bench::{bin, ltc, up_args, Up, UpAddrs};

const FILES: usize = 256;
const FILE_BYTES: usize = 4 << 20;

/// Deterministic pseudo-random bytes (xorshift).
fn fill(seed: u64, out: &mut [u8], text: bool) {
    let mut x = seed | 1;
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for b in out.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = if text {
            ALPHA[(x & 63) as usize]
        } else {
            x as u8
        };
    }
}

/// Writes the data set into `dir`: each file half random text, half log lines.
fn write_data(dir: &std::path::Path, files: usize) {
    let mut buf = vec![0u8; FILE_BYTES / 2];
    for i in 0..files {
        let mut f = std::fs::File::create(dir.join(format!("file-{i:04}"))).unwrap();
        fill(i as u64 + 7, &mut buf, true);
        f.write_all(&buf).unwrap();
        let mut written = 0;
        let mut n = 0u64;
        while written < FILE_BYTES / 2 {
            let line = format!(
                "2026-11-22T05:{:02}:{:02}Z INFO request id={n} path=/api/items/{} status=200 ms={}\n",
                (n / 60) % 60,
                n % 60,
                n * 7919 % 10007,
                n % 97
            );
            f.write_all(line.as_bytes()).unwrap();
            written += line.len();
            n += 1;
        }
    }
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn sh(script: &str) -> Duration {
    drop_caches();
    let t0 = Instant::now();
    let st = Command::new("sh").args(["-c", script]).status().unwrap();
    assert!(st.success(), "{script}");
    t0.elapsed()
}

fn timed_ltc(home: &std::path::Path, args: &[&str]) -> Duration {
    drop_caches();
    let t0 = Instant::now();
    ltc(home, args);
    t0.elapsed()
}

fn snapshot_ms(v: &lattice_cell::volume::Volumes, name: &str) -> f64 {
    let mut best = f64::MAX;
    for i in 0..5 {
        let snap = format!("s{i}");
        let t0 = Instant::now();
        v.snapshot(name, &snap).unwrap();
        best = best.min(t0.elapsed().as_secs_f64() * 1000.0);
        v.release_snapshot(name, &snap).unwrap();
    }
    best
}

fn main() {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    assert!(unsafe { libc::geteuid() } == 0, "run as root");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let gib = (FILES * FILE_BYTES) as f64 / (1 << 30) as f64;

    // Snapshot time against the data a volume holds, through the cell's driver.
    {
        let v = lattice_cell::volume::Volumes::open(&dir.path().join("pool"), 8 << 30).unwrap();
        v.create("small", 2 << 30).unwrap();
        v.create("big", 2 << 30).unwrap();
        write_data(&v.path("small"), 16);
        write_data(&v.path("big"), FILES);
        let (small, big) = (snapshot_ms(&v, "small"), snapshot_ms(&v, "big"));
        println!(
            "snapshot: {small:.1} ms with 64 MiB written, {big:.1} ms with {gib:.0} GiB written (best of 5; goal < 100 ms)"
        );
        v.close().unwrap();
    }

    // The cluster.
    let data = dir.path().join("data");
    let (args, UpAddrs { api, .. }) = up_args(
        dir.path(),
        "bridge = \"lbench1\"\nsubnet = \"10.250.0.1/24\"\nports = \"63200-63299\"\ngrace = 2\n",
    );
    let (up, _) = Up::start(&args);
    let home = dir.path().join("ltc");
    ltc(&home, &["target", &format!("http://{api}")]);
    ltc(&home, &["volume", "create", "data", "--size", "2G"]);
    let mnt = data.join("cell/volumes/mnt/data");
    write_data(&mnt, FILES);

    let ours_backup = timed_ltc(&home, &["backup", "create", "data"]);
    let out = Command::new(bin("ltc"))
        .args(["backup", "list", "--json"])
        .env("LTC_HOME", &home)
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    let archive = list[0]["size_bytes"].as_u64().unwrap();
    let peer_file = dir.path().join("peer.tgz");
    let peer_backup = sh(&format!(
        "tar -C {} -cf - . | gzip > {}",
        mnt.display(),
        peer_file.display()
    ));
    let peer_archive = std::fs::metadata(&peer_file).unwrap().len();

    // Into a new volume: restoring in place needs room for the data twice (the
    // staged copy is swapped in only once whole).
    ltc(&home, &["volume", "create", "copy", "--size", "2G"]);
    let ours_restore = timed_ltc(&home, &["backup", "restore", &id, "--to", "copy"]);
    let into = dir.path().join("peer-restore");
    std::fs::create_dir_all(&into).unwrap();
    let peer_restore = sh(&format!(
        "gzip -dc {} | tar -x -C {}",
        peer_file.display(),
        into.display()
    ));
    up.stop();
    let _ = Command::new("ip").args(["link", "del", "lbench1"]).status();

    let mbs = |d: Duration| gib * 1024.0 / d.as_secs_f64();
    println!(
        "backup of {gib:.0} GiB: ours {:.1}s ({:.0} MB/s, archive {} MiB), tar|gzip {:.1}s ({:.0} MB/s, {} MiB): ratio {:.2} (goal >= 0.8)",
        ours_backup.as_secs_f64(),
        mbs(ours_backup),
        archive >> 20,
        peer_backup.as_secs_f64(),
        mbs(peer_backup),
        peer_archive >> 20,
        peer_backup.as_secs_f64() / ours_backup.as_secs_f64()
    );
    println!(
        "restore of {gib:.0} GiB: ours {:.1}s ({:.0} MB/s), gzip -d|tar {:.1}s ({:.0} MB/s): ratio {:.2} (goal >= 0.8)",
        ours_restore.as_secs_f64(),
        mbs(ours_restore),
        peer_restore.as_secs_f64(),
        mbs(peer_restore),
        peer_restore.as_secs_f64() / ours_restore.as_secs_f64()
    );
}
