//! Stateful failover, timed (issue 25's goals: with a standby copy < 10 s, restore-based
//! < 60 s for 1 GB): on the multi-host harness (`lattice_tests::lan_cluster`: etcd, BBS,
//! brain, router and two cell hosts in network namespaces on one bridge), for each mode:
//!
//! - volume `pg` (2 GB) on cell 0 (zone z1) with `--failover restore|standby` and the
//!   least grace the API takes (25 s), filled with `--size` MB (default 1024) of mixed
//!   data (9/10 random, 1/10 text) by a task, an app serving a file from it, a backup
//!   (and, standby, that backup restored into the copy on cell 1, zone z2);
//! - cell 0's host cut off the LAN: the time until the app serves the volume's file
//!   again through the router from cell 1, printed whole and after the grace (what the
//!   mode costs: the grace is the operator's setting);
//! - the peer, in the same run: Debian's `restic restore` of the same snapshot from the
//!   same repository on the same disk (the floor of any restore-based failover), and
//!   the ratio of its time to each mode's time after the grace.
//!
//! `cargo build --release -p lattice-cli -p lattice-ltc -p lattice-bench --bin lattice
//! --bin ltc --bin failover && sudo target/release/failover [--size MB] [--only restore|standby]`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lattice_bbs::testing::fixtures;
use lattice_bench::{arg, bin};
use lattice_specs::bbs_api::DesireLrpRequest;
use lattice_specs::models::VolumeMount;
use lattice_tests::lan_cluster::LanCluster;

/// `admin:pw`.
const AUTH: &str = "Basic YWRtaW46cHc=";
const GRACE: Duration = Duration::from_secs(25);

fn wait<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn volume(c: &LanCluster) -> serde_json::Value {
    let (status, v) = c.api(AUTH, "GET", "/v1/volumes/pg", "");
    assert_eq!(status, 200, "{v}");
    v
}

/// Runs `script` in a task mounting `pg` at /data until it completes.
fn task(c: &LanCluster, guid: &str, script: &str) -> Duration {
    let t = serde_json::json!({
        "task_guid": guid, "domain": "bench", "rootfs": "preloaded:busybox",
        "memory_mb": 256, "cpu_weight": 100,
        "action": {"run": {"path": "/bin/sh", "args": ["-c", script], "user": "root"}},
        "volume_mounts": [{"volume": "pg", "container_path": "/data"}],
    });
    let t0 = Instant::now();
    let (status, b) = c.api(AUTH, "POST", "/v1/tasks", &t.to_string());
    assert_eq!(status, 201, "{b}");
    wait(guid, Duration::from_secs(600), || {
        let (_, t) = c.api(AUTH, "GET", &format!("/v1/tasks/{guid}"), "");
        assert_ne!(t["failed"], true, "{t}");
        (t["state"] == "COMPLETED").then_some(())
    });
    t0.elapsed()
}

/// What one mode measured: the first backup, the standby refresh (standby), the
/// failover (whole, after the grace), and the repository's directory with the key.
struct Run {
    backup: Duration,
    refresh: Option<Duration>,
    failover: Duration,
}

async fn measure(mode: &str, mb: usize, blobs: &Path, key: &Path) -> Run {
    let blob_dir = format!("--blob-dir={}", blobs.display());
    let key_flag = format!("--backup-key-file={}", key.display());
    let mut c = LanCluster::start_opts(2, 0, &["--basic-auth", "admin:pw", &blob_dir, &key_flag]);
    let pool = ["--volume-pool-size", "6G"];
    c.start_cell(0, &[&pool[..], &["--zone", "z1"]].concat());
    c.start_cell(1, &[&pool[..], &["--zone", "z2"]].concat());
    let req = serde_json::json!({
        "name": "pg", "size_bytes": 2u64 << 30, "cell_id": "cell-0",
        "failover": mode, "failover_grace_ns": GRACE.as_nanos() as i64,
    });
    wait("volume pg recorded", Duration::from_secs(30), || {
        match c.api(AUTH, "POST", "/v1/volumes", &req.to_string()) {
            (201, _) => Some(()),
            (409, b) if b["name"] == "CellNotFound" => None,
            other => panic!("{other:?}"),
        }
    });
    wait("volume pg READY", Duration::from_secs(60), || {
        (volume(&c)["state"] == "READY").then_some(())
    });
    let random = mb * 9 / 10 / 8;
    let text = (mb / 10).max(1);
    let filled = task(
        &c,
        "fill",
        &format!(
            "set -e; mkdir -p /data/media /data/text; \
             for i in $(seq 1 {random}); do dd if=/dev/urandom of=/data/media/f$i bs=1M count=8 2>/dev/null; done; \
             for i in $(seq 1 {text}); do seq $((i*100000)) $((i*100000+120000)) > /data/text/t$i; done; \
             echo served-from-the-volume > /data/index.html; sync"
        ),
    );
    eprintln!("{mode}: filled {mb} MB in {filled:.1?}");
    let mut web = fixtures::routed_lrp("web", 1, "web.lattice.localhost");
    web.memory_mb = 32;
    web.volume_mounts = vec![VolumeMount {
        driver: "local".into(),
        volume: "pg".into(),
        container_path: "/data".into(),
        ..Default::default()
    }];
    web.action = Some(lattice_tests::sh("exec httpd -f -p $PORT -h /data"));
    let mut g = c.bbs.client().await;
    g.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(web),
    })
    .await
    .unwrap();
    let served = |c: &LanCluster| matches!(c.get("web"), Some((200, b)) if b.trim() == "served-from-the-volume");
    wait("web served", Duration::from_secs(60), || {
        served(&c).then_some(())
    });

    let t0 = Instant::now();
    let (status, b) = c.api(AUTH, "POST", "/v1/backups", r#"{"volume":"pg"}"#);
    assert_eq!(status, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    wait("the backup", Duration::from_secs(900), || {
        let (_, b) = c.api(AUTH, "GET", &format!("/v1/backups/{id}"), "");
        assert_ne!(b["state"], "FAILED", "{b}");
        (b["state"] == "COMPLETED").then_some(())
    });
    let backup = t0.elapsed();
    let refresh = (mode == "standby").then(|| {
        wait(
            "the standby copy refreshed",
            Duration::from_secs(900),
            || (volume(&c)["standby_backup"] == id.as_str()).then_some(()),
        );
        t0.elapsed() - backup
    });

    let cut = Instant::now();
    c.cell_hosts[0].link_down();
    wait(
        "web served from cell 1",
        GRACE + Duration::from_secs(900),
        || (served(&c) && volume(&c)["cell_id"] == "cell-1").then_some(()),
    );
    let failover = cut.elapsed();
    c.cell_hosts[0].link_up();
    Run {
        backup,
        refresh,
        failover,
    }
}

/// Debian's restic restoring the newest snapshot of `repo` (password in `key`).
fn restic_restore(repo: &Path, key: &Path, into: &Path) -> Duration {
    let t0 = Instant::now();
    let out = Command::new("restic")
        .args(["--no-cache", "-q", "-r"])
        .arg(repo)
        .args(["restore", "latest", "--target"])
        .arg(into)
        .env("RESTIC_PASSWORD_FILE", key)
        .output()
        .expect("restic not found: run scripts/setup.sh");
    assert!(
        out.status.success(),
        "restic restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed()
}

#[tokio::main]
async fn main() {
    lattice_cell::testing::require_root();
    std::env::set_var("LATTICE_BIN", bin("lattice"));
    let mb = arg("--size", 1024);
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let secs = |d: Duration| d.as_secs_f64();
    println!("failover of a {mb} MB volume, grace {}s", GRACE.as_secs());
    for mode in ["restore", "standby"] {
        if only.as_deref().is_some_and(|o| o != mode) {
            continue;
        }
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let key = dir.path().join("backup.key");
        let blobs = dir.path().join("blobs");
        let run = measure(mode, mb, &blobs, &key).await;
        let peer = restic_restore(&blobs.join("restic/pg"), &key, &dir.path().join("peer"));
        let after = run.failover.saturating_sub(GRACE);
        println!(
            "{mode:>8}: backup {:.1}s{}; cut → served from cell 1 {:.1}s, after the grace {:.1}s; \
             restic restore {:.1}s; ratio restic restore / ours after the grace {:.2}",
            secs(run.backup),
            run.refresh
                .map(|r| format!(", standby refreshed {:.1}s later", secs(r)))
                .unwrap_or_default(),
            secs(run.failover),
            secs(after),
            secs(peer),
            secs(peer) / secs(after).max(0.001)
        );
    }
}
