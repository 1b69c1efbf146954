//! Backups against Debian's `restic`, on the same data on the same disk in one run
//! (issue 25's goals: throughput ≥ 1.0× restic's, repository ≤ restic's):
//!
//! - the data: a volume of the cell's own `local` driver (thin XFS in the pool on this
//!   disk) holding `--size` MB (default 1024) of mixed files (`data.rs`: many small text
//!   files, log files, a few large tables and incompressible media, some modes and
//!   symlinks; the same bytes every run);
//! - ours: the cell's repository helper (`lattice-shim --repo`, rustic_core; the job
//!   as the shim gives it, but no chroot and a local directory repository), the peer:
//!   `restic -r DIR` (its default compression; ours uses its default too), the same
//!   password, the same chunker polynomial (restic's repository is made with
//!   `--copy-chunker-params` from ours, so both cut the same chunks); each repository in
//!   a directory on the same disk;
//! - timed, page caches dropped before each: first backup, second backup after a 1%
//!   change (`data.rs`), full restore of the second snapshot into an empty directory
//!   (both restores compared with the data: paths, contents, modes, owners, mtimes,
//!   symlinks);
//! - printed: each time and throughput, the ratio restic time / ours (≥ 1.0: ours is at
//!   least as fast), each repository's size after each backup and the ratio ours /
//!   restic (≤ 1.0: ours is no larger); and the snapshot time (fsfreeze + reflink) of
//!   the data volume (goal < 100 ms).
//!
//! Failover time (issue 25's other number) is not measured here yet.
//!
//! `cargo build --release -p lattice-cell --bin lattice-shim -p lattice-bench --bin backup
//! && sudo target/release/backup [--size MB] [--dir DIR] [--shim PATH] [--peer-only]`:
//! `--dir` is where everything goes (default /var/tmp); `--shim` the helper's binary
//! (default: `lattice-shim` next to this one); `--peer-only` measures restic alone.

mod data;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lattice_bench::{arg, bin};
use lattice_specs::repo::RepoOutcome;

const PASSWORD: &str = "lattice-bench-backup-key-0123456789abcdef";

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// The value after `--name`, if given.
fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

/// One timed backup: how long, and the snapshot it made.
struct Run {
    time: Duration,
    snapshot: String,
}

/// Runs `cmd` (stdin from `input`), timed after dropping the page caches; its stdout.
fn timed(cmd: &mut Command, input: &[u8]) -> (Duration, String) {
    drop_caches();
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let time = t0.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (time, String::from_utf8(out.stdout).unwrap())
}

/// Debian's restic on a local repository.
struct Restic {
    repo: PathBuf,
    cache: PathBuf,
}

impl Restic {
    fn command(&self) -> Command {
        let mut c = Command::new("restic");
        c.arg("-r")
            .arg(&self.repo)
            .arg("--cache-dir")
            .arg(&self.cache)
            .env("RESTIC_PASSWORD", PASSWORD);
        c
    }

    /// Makes the repository; with `chunker_from`, with that repository's chunker
    /// polynomial, so that both cut the data into the same chunks (each repository draws
    /// its own at random, which made the sizes after a change differ by a few MiB either
    /// way from run to run).
    fn init(&self, chunker_from: Option<&Path>) {
        let mut c = self.command();
        c.arg("init");
        if let Some(from) = chunker_from {
            c.arg("--from-repo")
                .arg(from)
                .arg("--copy-chunker-params")
                .env("RESTIC_FROM_PASSWORD", PASSWORD);
        }
        let st = c.stdout(Stdio::null()).status();
        assert!(
            st.expect("restic not found: scripts/setup.sh installs it")
                .success(),
            "restic init"
        );
    }

    fn backup(&self, path: &Path) -> Run {
        let (time, out) = timed(
            self.command()
                .args(["backup", "--json", "--host", "bench"])
                .arg(path),
            b"",
        );
        let summary: serde_json::Value = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message_type"] == "summary")
            .unwrap_or_else(|| panic!("restic printed no summary: {out}"));
        Run {
            time,
            snapshot: summary["snapshot_id"].as_str().unwrap().to_string(),
        }
    }

    /// Restores `snapshot` under `into` (restic recreates the backed-up path there).
    fn restore(&self, snapshot: &str, into: &Path) -> Duration {
        timed(
            self.command()
                .args(["restore", snapshot, "--target"])
                .arg(into),
            b"",
        )
        .0
    }
}

/// The cell's repository helper on a local repository, fed its job as the shim does.
struct Ours {
    shim: PathBuf,
    repo: PathBuf,
}

impl Ours {
    fn job(&self, job: serde_json::Value) -> (Duration, RepoOutcome) {
        let mut c = Command::new(&self.shim);
        c.arg("--repo");
        let (time, out) = timed(&mut c, &serde_json::to_vec(&job).unwrap());
        let outcome: RepoOutcome = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("the helper's outcome {out:?}: {e}"));
        assert!(outcome.error.is_none(), "{outcome:?}");
        (time, outcome)
    }

    fn backup(&self, path: &Path) -> Run {
        let (time, o) = self.job(serde_json::json!({
            "op": "backup",
            "repository": self.repo,
            "password": PASSWORD,
            "path": path,
            "host": "bench",
        }));
        Run {
            time,
            snapshot: o.snapshot,
        }
    }

    fn restore(&self, snapshot: &str, into: &Path) -> Duration {
        self.job(serde_json::json!({
            "op": "restore",
            "repository": self.repo,
            "password": PASSWORD,
            "path": into,
            "snapshot": snapshot,
        }))
        .0
    }
}

/// The data volume in a pool of the cell's driver, unmounted on drop.
struct Pool {
    v: lattice_cell::volume::Volumes,
    dir: PathBuf,
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.v.close();
        lattice_cell::volume::unmount_all(&self.dir);
    }
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

/// What one side measured.
#[derive(Default)]
struct Side {
    first: Option<Run>,
    second: Option<Run>,
    restore: Duration,
    /// Repository bytes after the first and the second backup.
    repo: (u64, u64),
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Prints each run's time and throughput (of the data's `bytes`) and what it added to
/// its repository (the repository's growth, the same measure for both), and the ratios.
fn report(bytes: u64, changed: u64, ours: Option<&Side>, peer: &Side) {
    let rate = |d: Duration| mib(bytes) / d.as_secs_f64();
    let run = |d: Duration, added: Option<u64>| {
        let added = added.map_or(String::new(), |a| format!(", +{:.1} MiB", mib(a)));
        format!("{:.1}s ({:.0} MiB/s{added})", d.as_secs_f64(), rate(d))
    };
    let line = |what: &str, o: Option<(Duration, Option<u64>)>, p: (Duration, Option<u64>)| match o
    {
        Some(o) => println!(
            "{what}: ours {}, restic {}: speed ratio {:.2} (goal >= 1.0)",
            run(o.0, o.1),
            run(p.0, p.1),
            p.0.as_secs_f64() / o.0.as_secs_f64()
        ),
        None => println!("{what}: restic {}", run(p.0, p.1)),
    };
    let first = |s: &Side| (s.first.as_ref().unwrap().time, Some(s.repo.0));
    let second = |s: &Side| (s.second.as_ref().unwrap().time, Some(s.repo.1 - s.repo.0));
    line("first backup", ours.map(first), first(peer));
    line(
        &format!("second backup ({:.1} MiB changed)", mib(changed)),
        ours.map(second),
        second(peer),
    );
    line(
        "full restore",
        ours.map(|o| (o.restore, None)),
        (peer.restore, None),
    );
    let sizes = |s: &Side| format!("{:.1} / {:.1} MiB", mib(s.repo.0), mib(s.repo.1));
    match ours {
        Some(o) => println!(
            "repository after the first / second backup: ours {}, restic {}: size ratio {:.3} (goal <= 1.0)",
            sizes(o),
            sizes(peer),
            o.repo.1 as f64 / peer.repo.1 as f64
        ),
        None => println!(
            "repository after the first / second backup: restic {}",
            sizes(peer)
        ),
    }
}

/// Restic restores the backed-up path under its target; ours restores its contents.
fn restic_restored(into: &Path, data: &Path) -> PathBuf {
    into.join(data.strip_prefix("/").unwrap())
}

fn main() {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    assert!(unsafe { libc::geteuid() } == 0, "run as root");
    let total = arg("--size", 1024) as u64 * (1 << 20);
    let peer_only = std::env::args().any(|a| a == "--peer-only");
    let base = flag("--dir").unwrap_or_else(|| "/var/tmp".into());
    let work = tempfile::tempdir_in(&base).unwrap();
    let w = work.path().canonicalize().unwrap();

    let pool_dir = w.join("pool");
    let v = lattice_cell::volume::Volumes::open(&pool_dir, total * 2 + (2 << 30)).unwrap();
    let pool = Pool { v, dir: pool_dir };
    let size = (total + total / 2).max(lattice_cell::volume::MIN_SIZE);
    let data = pool.v.create("data", size).unwrap().path;
    let t0 = Instant::now();
    let files = data::write_set(&data, total);
    let bytes = data::tree_bytes(&data);
    println!(
        "data: {files} files, {:.0} MiB, written in {:.1}s",
        mib(bytes),
        t0.elapsed().as_secs_f64()
    );
    println!(
        "snapshot of the data volume: {:.1} ms (best of 5; goal < 100 ms)",
        snapshot_ms(&pool.v, "data")
    );

    let restic = Restic {
        repo: w.join("restic-repo"),
        cache: w.join("restic-cache"),
    };
    let ours = (!peer_only).then(|| Ours {
        shim: flag("--shim").map_or_else(|| bin("lattice-shim"), PathBuf::from),
        repo: w.join("ours-repo"),
    });
    let mut peer = Side::default();
    let mut our = ours.as_ref().map(|_| Side::default());

    if let (Some(o), Some(s)) = (&ours, &mut our) {
        s.first = Some(o.backup(&data));
        s.repo.0 = data::tree_bytes(&o.repo);
    }
    // Initialised untimed, with our repository's chunker when there is one.
    restic.init(ours.as_ref().map(|o| o.repo.as_path()));
    peer.first = Some(restic.backup(&data));
    peer.repo.0 = data::tree_bytes(&restic.repo);

    let changed = data::change_one_percent(&data, bytes);
    if let (Some(o), Some(s)) = (&ours, &mut our) {
        s.second = Some(o.backup(&data));
        s.repo.1 = data::tree_bytes(&o.repo);
    }
    peer.second = Some(restic.backup(&data));
    peer.repo.1 = data::tree_bytes(&restic.repo);

    if let (Some(o), Some(s)) = (&ours, &mut our) {
        let into = w.join("ours-restore");
        s.restore = o.restore(&s.second.as_ref().unwrap().snapshot, &into);
        data::same_tree(&data, &into).unwrap_or_else(|e| panic!("our restore: {e}"));
    }
    let into = w.join("restic-restore");
    peer.restore = restic.restore(&peer.second.as_ref().unwrap().snapshot, &into);
    data::same_tree(&data, &restic_restored(&into, &data))
        .unwrap_or_else(|e| panic!("restic's restore: {e}"));
    println!("both restores hold the data byte for byte (paths, modes, owners, mtimes, links)");

    report(bytes, changed, our.as_ref(), &peer);
    drop(pool);
}
