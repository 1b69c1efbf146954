//! Stateful failover on the multi-host harness (issue 25 item 5): a volume with
//! `--failover restore` on a cell host, an app serving a file from it, a backup of it.
//! The cell host cut off the LAN stops the app itself once its presence lapsed (the
//! self-fence); after the volume's grace period the volume is recreated on the other
//! cell host from the backup and the app serves the backed-up data from there. Back on
//! the LAN, the old cell fences its copy off (never mounted again, kept, listed on the
//! volume) and the app keeps being served from the new cell only.
//!
//! With `--failover standby`, the volume's copy on the other cell host holds the backup
//! before the cut, and after the grace that copy becomes the volume: no refill task
//! runs, and a new standby copy is placed once the old cell is back.

use std::time::{Duration, Instant};

use lattice_bbs::testing::fixtures;
use lattice_specs::bbs_api::DesireLrpRequest;
use lattice_specs::models::VolumeMount;
use lattice_tests::lan_cluster::LanCluster;
use lattice_tests::lrps::{cell_of, wait_running_where};
use lattice_tests::{sh, BbsClient};

/// `admin:pw`, the BBS's `--basic-auth` in this test.
const AUTH: &str = "Basic YWRtaW46cHc=";
/// The cells' presence lease (the harness's `--lease-ttl 3`).
const LEASE_TTL: Duration = Duration::from_secs(3);
/// The volume's grace period: the least the API takes for the default presence TTL
/// (15 s) plus the fence margin (10 s).
const GRACE: Duration = Duration::from_secs(25);

/// The public API over HTTPS from the outside host: (status, JSON body).
fn api(cluster: &LanCluster, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    cluster.api(AUTH, method, path, body)
}

fn volume(cluster: &LanCluster) -> serde_json::Value {
    let (status, v) = api(cluster, "GET", "/v1/volumes/pg", "");
    assert_eq!(status, 200, "{v}");
    v
}

/// The handles of the containers a cell reports.
async fn containers_of(cell: &lattice_tests::CellProcess) -> Vec<String> {
    cell.containers()
        .await
        .iter()
        .map(|c| c["handle"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Records volume `pg` on cell 0 failing over by `mode` (once cell 0 is present with
/// its volume driver) and waits for it READY.
fn create_volume(cluster: &LanCluster, mode: &str) {
    let req = serde_json::json!({
        "name": "pg",
        "size_bytes": lattice_specs::volume::MIN_SIZE,
        "cell_id": "cell-0",
        "failover": mode,
        "failover_grace_ns": GRACE.as_nanos() as i64,
    });
    lattice_tests::wait_for("volume pg recorded", Duration::from_secs(30), || match api(
        cluster,
        "POST",
        "/v1/volumes",
        &req.to_string(),
    ) {
        (201, _) => Some(()),
        (409, b) if b["name"] == "CellNotFound" => None,
        other => panic!("{other:?}"),
    });
    lattice_tests::wait_for("volume pg READY", Duration::from_secs(60), || {
        (volume(cluster)["state"] == "READY").then_some(())
    });
    assert_eq!(volume(cluster)["failover"], mode);
}

/// App `web` mounting `pg`: it writes, the first time, which cell it wrote on, and
/// serves it; running on cell 0.
async fn serve_from_the_volume(cluster: &LanCluster, c: &mut BbsClient) {
    let mut web = fixtures::routed_lrp("web", 1, "web.lattice.localhost");
    web.memory_mb = 32;
    web.volume_mounts = vec![VolumeMount {
        driver: "local".into(),
        volume: "pg".into(),
        container_path: "/data".into(),
        ..Default::default()
    }];
    web.action = Some(sh(
        "[ -f /data/index.html ] || echo \"written on $CELL_ID\" > /data/index.html; exec httpd -f -p $PORT -h /data",
    ));
    c.desire_lrp(DesireLrpRequest {
        desired_lrp: Some(web),
    })
    .await
    .unwrap();
    wait_running_where(c, "web", 1, Duration::from_secs(60), |a| {
        cell_of(a) == "cell-0"
    })
    .await;
    lattice_tests::wait_for("web served from cell 0", Duration::from_secs(20), || {
        matches!(cluster.get("web"), Some((200, b)) if b.trim() == "written on cell-0")
            .then_some(())
    });
}

/// A backup of `pg`, once COMPLETED: its id.
fn backup(cluster: &LanCluster) -> String {
    let (status, b) = api(cluster, "POST", "/v1/backups", r#"{"volume":"pg"}"#);
    assert_eq!(status, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    lattice_tests::wait_for("the backup COMPLETED", Duration::from_secs(120), || {
        let (_, b) = api(cluster, "GET", &format!("/v1/backups/{id}"), "");
        assert_ne!(b["state"], "FAILED", "{b}");
        (b["state"] == "COMPLETED").then_some(())
    });
    id
}

/// Cuts cell 0 off the LAN and waits until it stopped the app itself (its presence
/// lapsed): when it was cut.
async fn cut_cell_0(cluster: &LanCluster) -> Instant {
    let cut = Instant::now();
    cluster.cell_hosts[0].link_down();
    let t0 = Instant::now();
    while !containers_of(&cluster.cells[0]).await.is_empty() {
        assert!(
            t0.elapsed() < LEASE_TTL + Duration::from_secs(10),
            "cell 0 did not fence itself: {:?}",
            containers_of(&cluster.cells[0]).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(volume(cluster)["cell_id"], "cell-0", "not before the grace");
    cut
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_failover_volume_serves_its_backup_from_another_cell_and_the_old_copy_is_fenced()
{
    let blobs = tempfile::tempdir().unwrap();
    let blob_dir = format!("--blob-dir={}", blobs.path().display());
    // The backup goes into the blob store's repository, under the cluster's key.
    let keys = tempfile::tempdir().unwrap();
    let key = format!(
        "--backup-key-file={}",
        keys.path().join("backup.key").display()
    );
    let mut cluster = LanCluster::start_opts(2, 0, &["--basic-auth", "admin:pw", &blob_dir, &key]);
    let pool = ["--volume-pool-size", "3G"];
    cluster.start_cell(0, &[&pool[..], &["--zone", "z1"]].concat());
    let mut c = cluster.bbs.client().await;

    // The volume on cell 0, failing over by restore.
    create_volume(&cluster, "restore");
    // The app writes, the first time, which cell it wrote on, and serves it.
    serve_from_the_volume(&cluster, &mut c).await;

    // A backup of it.
    let id = backup(&cluster);

    // The other cell host, in another zone.
    cluster.start_cell(1, &[&pool[..], &["--zone", "z2"]].concat());

    // Cell 0 cut off: once its presence lapsed it stops the app itself.
    let cut = cut_cell_0(&cluster).await;

    // After the grace, the volume is refilled on cell 1 and the app serves the
    // backed-up data from there.
    let bound = LEASE_TTL + GRACE + Duration::from_secs(60);
    lattice_tests::wait_for("web served from cell 1", bound, || {
        matches!(cluster.get("web"), Some((200, b)) if b.trim() == "written on cell-0")
            .then_some(())
            .filter(|_| volume(&cluster)["cell_id"] == "cell-1")
    });
    let took = cut.elapsed();
    assert!(
        took >= GRACE,
        "failed over after {took:?}, before the grace"
    );
    let running = wait_running_where(&mut c, "web", 1, Duration::from_secs(5), |_| true).await;
    assert_eq!(cell_of(&running[0]), "cell-1");
    let v = volume(&cluster);
    assert_eq!(v["epoch"], 1, "{v}");
    assert_eq!(v["failed_over_from"], "cell-0", "{v}");
    assert_eq!(v["failed_over_backup"], id.as_str(), "{v}");
    assert_eq!(v["restoring"], "", "{v}");
    assert!(v["data_loss_window_ns"].as_i64().unwrap() > 0, "{v}");

    // Back on the LAN: cell 0 fences its copy off and lists it; the app is served
    // from cell 1 only meanwhile.
    cluster.cell_hosts[0].link_up();
    let t0 = Instant::now();
    loop {
        if let Some((200, body)) = cluster.get("web") {
            assert_eq!(body.trim(), "written on cell-0");
        }
        let v = volume(&cluster);
        let fenced: Vec<String> = v["fenced_copies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        if let Some(copy) = fenced.iter().find(|f| f.starts_with("cell-0:")) {
            let path = copy.trim_start_matches("cell-0:");
            assert!(path.contains("pg@fenced-e0-"), "{copy}");
            assert!(std::path::Path::new(path).exists(), "{copy} is kept");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(45),
            "cell 0's copy not fenced: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(containers_of(&cluster.cells[0]).await.is_empty());
    let running = wait_running_where(&mut c, "web", 1, Duration::from_secs(5), |_| true).await;
    assert_eq!(cell_of(&running[0]), "cell-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_copy_takes_over_without_a_restore() {
    let blobs = tempfile::tempdir().unwrap();
    let blob_dir = format!("--blob-dir={}", blobs.path().display());
    let keys = tempfile::tempdir().unwrap();
    let key = format!(
        "--backup-key-file={}",
        keys.path().join("backup.key").display()
    );
    let mut cluster = LanCluster::start_opts(2, 0, &["--basic-auth", "admin:pw", &blob_dir, &key]);
    let pool = ["--volume-pool-size", "3G"];
    cluster.start_cell(0, &[&pool[..], &["--zone", "z1"]].concat());
    cluster.start_cell(1, &[&pool[..], &["--zone", "z2"]].concat());
    let mut c = cluster.bbs.client().await;

    create_volume(&cluster, "standby");
    // The brain keeps its standby copy on the other cell, made there.
    lattice_tests::wait_for(
        "the standby copy made on cell 1",
        Duration::from_secs(30),
        || {
            let v = volume(&cluster);
            (v["standby_cell_id"] == "cell-1" && v["standby_ready"] == true).then_some(())
        },
    );
    serve_from_the_volume(&cluster, &mut c).await;
    let id = backup(&cluster);
    // The backup is restored into the copy.
    lattice_tests::wait_for(
        "the standby copy holds the backup",
        Duration::from_secs(90),
        || {
            let v = volume(&cluster);
            assert!(
                !v["standby_reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("failed"),
                "{v}"
            );
            (v["standby_backup"] == id.as_str()).then_some(())
        },
    );

    let cut = cut_cell_0(&cluster).await;
    // After the grace, the copy on cell 1 is the volume: no refill ever.
    let bound = LEASE_TTL + GRACE + Duration::from_secs(45);
    let t0 = Instant::now();
    loop {
        let v = volume(&cluster);
        assert_eq!(v["restoring"], "", "the standby copy is not refilled: {v}");
        let served =
            matches!(cluster.get("web"), Some((200, b)) if b.trim() == "written on cell-0");
        if served && v["cell_id"] == "cell-1" {
            break;
        }
        assert!(t0.elapsed() < bound, "web not served from cell 1: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = cut.elapsed();
    assert!(
        took >= GRACE,
        "failed over after {took:?}, before the grace"
    );
    eprintln!(
        "standby failover: served from cell 1 {:?} after the cut ({:?} after the grace)",
        took,
        took - GRACE
    );
    let v = volume(&cluster);
    assert_eq!(v["epoch"], 1, "{v}");
    assert_eq!(v["failed_over_backup"], id.as_str(), "{v}");
    assert!(
        v["reason"].as_str().unwrap_or_default().is_empty()
            || v["reason"].as_str().unwrap().contains("takes over"),
        "{v}"
    );
    let (_, tasks) = api(&cluster, "GET", "/v1/tasks?domain=lattice-backups", "");
    let restores: Vec<&serde_json::Value> = tasks
        .as_array()
        .unwrap_or_else(|| panic!("a task list: {tasks}"))
        .iter()
        .filter(|t| {
            t["task_guid"]
                .as_str()
                .unwrap_or_default()
                .starts_with("restore-")
        })
        .collect();
    assert!(restores.is_empty(), "no restore task ran: {restores:?}");

    // Cell 0 back: its old copy is fenced off and it keeps the new standby copy.
    cluster.cell_hosts[0].link_up();
    lattice_tests::wait_for(
        "a new standby copy on cell 0",
        Duration::from_secs(60),
        || {
            let v = volume(&cluster);
            let fenced = v["fenced_copies"].to_string().contains("cell-0:");
            (fenced && v["standby_cell_id"] == "cell-0" && v["standby_backup"] == id.as_str())
                .then_some(())
        },
    );
    let running = wait_running_where(&mut c, "web", 1, Duration::from_secs(5), |_| true).await;
    assert_eq!(cell_of(&running[0]), "cell-1");
}
