//! Containers from OCI images (as root): an OCI image layout on disk (`oci:PATH:TAG`)
//! and the same image pushed with skopeo to a real registry on loopback and pulled
//! (`docker://HOST:PORT/REPO:TAG`): layers stacked copy-on-write, a whiteout hiding a
//! file of the layer below, the image's env and working directory as defaults, layers
//! unpacked once and shared, pull progress reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lattice_cell::image::{write_layout, write_layout_with};
use lattice_cell::shim::ShimEvent;
use lattice_cell::testing::*;

/// busybox, plus a layer with /srv/hello and a whiteout of /etc/group.
fn layout(dir: &std::path::Path) -> std::path::PathBuf {
    layout_at(&dir.join("layout"), false)
}

/// The test image (busybox plus a layer with a file and a whiteout) at `path`.
fn layout_at(path: &std::path::Path, zstd: bool) -> std::path::PathBuf {
    write_layout_with(
        path,
        "v1",
        Some(&busybox_rootfs()),
        &[vec![
            ("srv/", ""),
            ("srv/hello", "from layer 2\n"),
            ("etc/.wh.group", ""),
        ]],
        &serde_json::json!({"config": {"Env": ["GREETING=hi", "PATH=/bin"], "WorkingDir": "/srv"}}),
        zstd,
    )
    .unwrap();
    path.to_path_buf()
}

const SCRIPT: &str = "{ cat hello; echo $GREETING; test -e /etc/group && echo group || echo nogroup; pwd; test -e /etc/passwd && echo passwd; } > /tmp/result";

async fn run_image(t: &TestExecutor, handle: &str, rootfs: &str) -> Vec<String> {
    let mut req = request(handle, sh(SCRIPT));
    req.rootfs = rootfs.into();
    let said = Arc::new(Mutex::new(Vec::<String>::new()));
    let s2 = said.clone();
    t.exec
        .create_with_progress(req, &move |m| s2.lock().unwrap().push(m))
        .await
        .unwrap();
    match wait_event(&t.exec, handle, Duration::from_secs(30), |e| {
        matches!(e, ShimEvent::Exited { .. })
    })
    .await
    {
        ShimEvent::Exited { failed, reason, .. } => assert!(!failed, "{reason}"),
        _ => unreachable!(),
    }
    assert_eq!(
        t.exec.read_file(handle, "/tmp/result").await.unwrap(),
        "from layer 2\nhi\nnogroup\n/srv\npasswd\n"
    );
    t.exec.destroy(handle).await;
    assert!(leftovers(&t.exec, handle).is_empty());
    let v = said.lock().unwrap().clone();
    v
}

#[tokio::test]
async fn an_oci_layout_runs_with_its_layers_whiteouts_and_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let path = layout(tmp.path());
    let t = TestExecutor::new();
    let rootfs = format!("oci:{}:v1", path.display());
    run_image(&t, "oci-1", &rootfs).await;
    // The second container shares the unpacked layers.
    run_image(&t, "oci-2", &rootfs).await;
    let layers = std::fs::read_dir(t.dir.join("images/layers/sha256"))
        .unwrap()
        .count();
    assert_eq!(layers, 2, "each layer unpacked once");
    // The image's entrypoint and cmd when the action names no command.
    let cmd_layout = tmp.path().join("cmd");
    write_layout(
        &cmd_layout,
        "v1",
        Some(&busybox_rootfs()),
        &[],
        &serde_json::json!({"config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo from-cmd > /tmp/result"]}}),
    )
    .unwrap();
    let mut req = request("oci-cmd", run("", &[]));
    req.rootfs = format!("oci:{}:v1", cmd_layout.display());
    t.exec.create(req).await.unwrap();
    wait_event(&t.exec, "oci-cmd", Duration::from_secs(20), |e| {
        matches!(e, ShimEvent::Exited { failed: false, .. })
    })
    .await;
    assert_eq!(
        t.exec.read_file("oci-cmd", "/tmp/result").await.unwrap(),
        "from-cmd\n"
    );
    t.exec.destroy("oci-cmd").await;
    let mut none = request("oci-none", run("", &[]));
    none.rootfs = rootfs.clone();
    let e = format!("{:#}", t.exec.create(none).await.unwrap_err());
    assert!(e.contains("no entrypoint or cmd"), "{e}");

    // Only layouts under the cell's --oci-root directories (here: the temp dir).
    let mut outside = request("oci-outside", sh("true"));
    outside.rootfs = "oci:/proc:v1".into();
    let e = format!("{:#}", t.exec.create(outside).await.unwrap_err());
    assert!(e.contains("not under this cell's --oci-root"), "{e}");

    let mut bad = request("oci-bad", sh("true"));
    bad.rootfs = format!("oci:{}:v9", path.display());
    let e = format!("{:#}", t.exec.create(bad).await.unwrap_err());
    assert!(e.contains("no image tagged \"v9\""), "{e}");
}

#[tokio::test]
async fn an_image_is_pulled_from_a_real_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let path = layout(tmp.path());
    let registry = Registry::start();
    registry.push(&path, "v1", "lattice/busybox");
    let t = TestExecutor::with_insecure_registries(vec![registry.addr.clone()]);
    let rootfs = format!("docker://{}/lattice/busybox:v1", registry.addr);
    let said = run_image(&t, "pull-1", &rootfs).await;
    assert!(
        said.iter().any(|m| m.starts_with("Downloading layer 1/2"))
            && said.iter().any(|m| m.starts_with("Downloaded ")),
        "progress: {said:?}"
    );
    // Cached: nothing downloaded the second time.
    let said = run_image(&t, "pull-2", &rootfs).await;
    assert!(said.is_empty(), "{said:?}");
    // Diego's form of the same reference.
    let said = run_image(
        &t,
        "pull-3",
        &format!("docker://{}/lattice/busybox#v1", registry.addr),
    )
    .await;
    assert!(said.is_empty(), "{said:?}");
    // The same image with zstd-compressed layers.
    let zstd = layout_at(&tmp.path().join("zstd"), true);
    registry.push(&zstd, "v1", "lattice/busybox-zstd");
    let manifest = reqwest::Client::new()
        .get(format!(
            "http://{}/v2/lattice/busybox-zstd/manifests/v1",
            registry.addr
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(manifest.contains("tar+zstd"), "layers not zstd: {manifest}");
    let said = run_image(
        &t,
        "pull-zstd",
        &format!("docker://{}/lattice/busybox-zstd:v1", registry.addr),
    )
    .await;
    assert!(
        said.iter().any(|m| m.starts_with("Downloaded ")),
        "{said:?}"
    );
    // Garbage collection: layers a live container uses stay, unused ones go, and the
    // next pull fetches them again.
    let mut live = request("gc-live", sh("sleep 60"));
    live.rootfs = rootfs.clone();
    t.exec.create(live).await.unwrap();
    let layers = |t: &TestExecutor| {
        std::fs::read_dir(t.exec.config().data_dir.join("images/layers/sha256"))
            .unwrap()
            .count()
    };
    assert_eq!(layers(&t), 4, "two images of two layers each");
    assert_eq!(
        t.exec.collect_layers(Duration::ZERO).await,
        2,
        "the zstd image's"
    );
    assert_eq!(layers(&t), 2);
    assert_eq!(t.exec.collect_layers(Duration::from_secs(3600)).await, 0);
    // Destroyed right after it started its process: nothing may be left (a process
    // libcontainer forked midway used to stay frozen in the container's cgroup).
    t.exec.destroy("gc-live").await;
    assert!(
        leftovers(&t.exec, "gc-live").is_empty(),
        "{:?}",
        leftovers(&t.exec, "gc-live")
    );
    assert_eq!(
        t.exec.collect_layers(Duration::from_secs(3600)).await,
        0,
        "recently used layers are kept"
    );
    assert_eq!(t.exec.collect_layers(Duration::ZERO).await, 2);
    let said = run_image(&t, "pull-again", &rootfs).await;
    assert!(
        said.iter().any(|m| m.starts_with("Downloaded ")),
        "{said:?}"
    );

    let mut missing = request("pull-missing", sh("true"));
    missing.rootfs = format!("docker://{}/lattice/nope:v1", registry.addr);
    let e = format!("{:#}", t.exec.create(missing).await.unwrap_err());
    assert!(e.contains("pulling the manifest"), "{e}");
}

#[tokio::test]
async fn a_registry_that_wants_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let path = layout(tmp.path());
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let registry = Registry::start_with_htpasswd(Some(&format!("alice:{hash}")));
    registry.push_with(
        &path,
        "v1",
        "private/busybox",
        &["--dest-creds", "alice:s3cret"],
    );
    let rootfs = format!("docker://{}/private/busybox:v1", registry.addr);

    // Without credentials: a clear refusal that says what to do.
    let t = TestExecutor::with_insecure_registries(vec![registry.addr.clone()]);
    let mut req = request("anon", sh("true"));
    req.rootfs = rootfs.clone();
    let e = format!("{:#}", t.exec.create(req).await.unwrap_err());
    assert!(
        e.contains("--registry-credential HOST=USER:PASSWORD"),
        "{e}"
    );
    assert!(leftovers(&t.exec, "anon").is_empty());

    // With the wrong ones: said so.
    let wrong = TestExecutor::with_registry_credentials(
        vec![registry.addr.clone()],
        [(registry.addr.clone(), ("alice".into(), "nope".into()))].into(),
    );
    let mut req = request("wrong", sh("true"));
    req.rootfs = rootfs.clone();
    let e = format!("{:#}", wrong.exec.create(req).await.unwrap_err());
    assert!(e.contains("refused this cell's credentials"), "{e}");

    // With them: pulled and run.
    let t = TestExecutor::with_registry_credentials(
        vec![registry.addr.clone()],
        [(registry.addr.clone(), ("alice".into(), "s3cret".into()))].into(),
    );
    let said = run_image(&t, "authed", &rootfs).await;
    assert!(
        said.iter().any(|m| m.starts_with("Downloaded ")),
        "{said:?}"
    );
}

#[tokio::test]
async fn an_image_is_pulled_over_https_trusting_the_extra_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let path = layout(tmp.path());
    let ca = lattice_bbs::test_pki::TestCa::new("registry test CA");
    let (cert, key) = ca.server(&["127.0.0.1"]).write(tmp.path());
    let registry = Registry::start_with_tls(&cert, &key);
    registry.push(&path, "v1", "lattice/busybox");
    let rootfs = format!("docker://{}/lattice/busybox:v1", registry.addr);

    // The system's roots alone: refused, saying what to do.
    let t = TestExecutor::new();
    let mut req = request("https-untrusted", sh("true"));
    req.rootfs = rootfs.clone();
    let e = format!("{:#}", t.exec.create(req).await.unwrap_err());
    assert!(e.contains("--extra-ca CA.pem"), "{e}");
    assert!(leftovers(&t.exec, "https-untrusted").is_empty());

    // Trusting the registry's CA besides them: pulled over HTTPS.
    let t = TestExecutor::with_extra_ca(vec![ca.pem.clone()]);
    let said = run_image(&t, "https-pull", &rootfs).await;
    assert!(
        said.iter().any(|m| m.starts_with("Downloaded ")),
        "{said:?}"
    );
}
