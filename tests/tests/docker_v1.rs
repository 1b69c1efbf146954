//! Issue 26's `ltc create` from a registry: `lattice up --docker-v1-upstream` answers
//! Docker's v1 registry API (what the original `ltc` v0.7 asks, through Docker 1.6's
//! registry session) from Debian's v2 `docker-registry`, and the cell pulls the image
//! through the same address. The client side here makes exactly that session's
//! requests, in its order, with its fallbacks: the HTTPS ping that fails against a
//! plain-HTTP registry, the v2-then-v1 ping, `repositories/NAME/images` with
//! `X-Docker-Token`, the tags of `library/NAME`, the image JSON whose `config` gives the
//! start command and working directory and whose `container_config` the ports. Then
//! the DesiredLRP `ltc create` builds from that runs and serves through the router.

use std::collections::BTreeMap;
use std::time::Duration;

use lattice_bbs::testing::free_port;
use lattice_cell::image::write_layout;
use lattice_cell::testing::{busybox_rootfs, Registry};
use lattice_tests::{wait_for, UpProcess};
use serde_json::{json, Value};

/// What the original `ltc` takes from an image (its `ImageMetadata`).
#[derive(Debug, PartialEq)]
struct Metadata {
    start_command: Vec<String>,
    working_dir: String,
    ports: Vec<u16>,
}

/// Docker 1.6's v1 session against `host` (HOST:PORT), for `remote` and `tag`, the
/// way the original `ltc create HOST:PORT/REMOTE:TAG` runs it.
async fn fetch_metadata(host: &str, remote: &str, tag: &str) -> Result<Metadata, String> {
    let http = reqwest::Client::new();
    // The secure attempt first: a plain-HTTP registry fails it, and ltc retries
    // insecure (the "this private registry supports only HTTP" message).
    let https = http.get(format!("https://{host}/v2/")).send().await;
    assert!(https.is_err(), "the face is plain HTTP: {https:?}");
    // Ping: v2 first (200 or 401 with a challenge), then v1.
    let v2 = http
        .get(format!("http://{host}/v2/"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !matches!(v2.status().as_u16(), 200 | 401) {
        let v1 = http
            .get(format!("http://{host}/v1/_ping"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        v1.error_for_status().map_err(|e| e.to_string())?;
    }
    let endpoint = format!("http://{host}/v1/");
    let images = http
        .get(format!("{endpoint}repositories/{remote}/images"))
        .header("X-Docker-Token", "true")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if images.status() != 200 {
        return Err(format!("HTTP code: {}", images.status()));
    }
    // No X-Docker-Endpoints: the endpoint is the same host.
    assert!(images.headers().get("X-Docker-Endpoints").is_none());
    let list: Vec<Value> = images.json().await.map_err(|e| e.to_string())?;
    // GetRemoteTags: `library/` when the name has no namespace.
    let tags_name = if remote.contains('/') {
        remote.to_string()
    } else {
        format!("library/{remote}")
    };
    let tags = http
        .get(format!("{endpoint}repositories/{tags_name}/tags"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match tags.status().as_u16() {
        200 => {}
        404 => return Err("Repository not found".into()),
        s => return Err(format!("tags: HTTP {s}")),
    }
    let tags: BTreeMap<String, String> = tags.json().await.map_err(|e| e.to_string())?;
    let id = tags
        .get(tag)
        .ok_or(format!("Unknown tag: {remote}:{tag}"))?
        .clone();
    assert!(
        list.iter().any(|i| i["id"] == json!(id)),
        "the tag's image is among the repository's: {list:?}"
    );
    let image = http
        .get(format!("{endpoint}images/{id}/json"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if image.status() != 200 {
        return Err(format!("HTTP code {}", image.status()));
    }
    let img: Value = image.json().await.map_err(|e| e.to_string())?;
    // image.NewImgJSON and ltc's reading of it.
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let config = img
        .get("config")
        .filter(|c| !c.is_null())
        .ok_or("Parsing start command failed")?;
    let mut start_command = strings(&config["Entrypoint"]);
    start_command.extend(strings(&config["Cmd"]));
    let mut ports: Vec<u16> = img["container_config"]["ExposedPorts"]
        .as_object()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_suffix("/tcp")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ports.sort();
    Ok(Metadata {
        start_command,
        working_dir: config["WorkingDir"].as_str().unwrap_or_default().into(),
        ports,
    })
}

/// The DesiredLRP the original `ltc create APP HOST:PORT/REMOTE` POSTs for `m`
/// (docker rootfs, the image's start command and directory, its first port routed).
fn ltc_docker_lrp(name: &str, rootfs: &str, m: &Metadata) -> Value {
    let port = m.ports[0];
    json!({
        "process_guid": name,
        "domain": "lattice",
        "rootfs": rootfs,
        "instances": 1,
        "env": [{"name": "PROCESS_GUID", "value": name}, {"name": "PORT", "value": port.to_string()}],
        "action": {"run": {"path": m.start_command[0], "args": m.start_command[1..],
                            "dir": m.working_dir, "user": "root"}},
        "start_timeout": 0, "disk_mb": 0, "memory_mb": 128, "cpu_weight": 100,
        "privileged": false, "ports": [port],
        "routes": {"cf-router": [{"hostnames": [format!("{name}.lattice.localhost")], "port": port}]},
        "log_guid": name, "log_source": "APP", "metrics_guid": name
    })
}

#[test]
fn the_original_ltc_create_reads_a_v2_registrys_image_through_the_v1_face_and_runs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    write_layout(
        &layout,
        "latest",
        Some(&busybox_rootfs()),
        &[vec![
            ("srv/", ""),
            ("srv/index.html", "hello from the registry\n"),
        ]],
        &json!({"config": {
            "Entrypoint": ["/bin/httpd"],
            "Cmd": ["-f", "-p", "8080"],
            "WorkingDir": "/srv",
            "ExposedPorts": {"8080/tcp": {}, "9999/udp": {}},
            "Env": ["PATH=/bin"]
        }}),
    )
    .unwrap();
    let registry = Registry::start();
    registry.push(&layout, "latest", "myapp");
    registry.push(&layout, "latest", "team/web");

    let face = format!("127.0.0.1:{}", free_port());
    let up = UpProcess::start_with(&[
        "--docker-v1-upstream",
        &format!("http://{}", registry.addr),
        "--docker-v1-listen",
        &face,
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();

    let m = rt
        .block_on(fetch_metadata(&face, "myapp", "latest"))
        .unwrap();
    assert_eq!(
        m,
        Metadata {
            start_command: vec!["/bin/httpd".into(), "-f".into(), "-p".into(), "8080".into()],
            working_dir: "/srv".into(),
            ports: vec![8080],
        }
    );
    // A namespaced name is asked for as it is.
    let team = rt
        .block_on(fetch_metadata(&face, "team/web", "latest"))
        .unwrap();
    assert_eq!(team, m);
    // What the original ltc says for what is not there.
    let missing = rt.block_on(fetch_metadata(&face, "nothing", "latest"));
    assert!(missing.is_err(), "{missing:?}");
    let no_tag = rt
        .block_on(fetch_metadata(&face, "myapp", "v9"))
        .unwrap_err();
    assert_eq!(no_tag, "Unknown tag: myapp:v9");

    // The DesiredLRP ltc builds, its rootfs naming the face (as ltc formats it).
    let lrp = ltc_docker_lrp("fromreg", &format!("docker://{face}/myapp#latest"), &m);
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/v1/desired_lrps", up.api))
            .json(&lrp)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status.as_u16(), 201);
    let (code, body) = wait_for(
        "the app from the registry serving",
        Duration::from_secs(90),
        || up.get("fromreg").filter(|(s, _)| *s == 200),
    );
    assert_eq!((code, body.as_str()), (200, "hello from the registry\n"));
}

#[test]
fn the_face_refuses_what_it_does_not_serve_and_says_why() {
    let registry = Registry::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (addr, stop_tx, task) = face_on(&registry.addr).await;
        let http = reqwest::Client::new();
        let get = |path: String| {
            let http = http.clone();
            async move {
                let r = http
                    .get(format!("http://{addr}{path}"))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.text().await.unwrap())
            }
        };
        let (s, ping) = get("/v1/_ping".into()).await;
        assert_eq!((s, ping.as_str()), (200, "true"));
        // The v2 API is the registry's, passed through (its own header included).
        let v2 = http.get(format!("http://{addr}/v2/")).send().await.unwrap();
        assert_eq!(v2.status(), 200);
        assert_eq!(
            v2.headers()["docker-distribution-api-version"],
            "registry/2.0"
        );
        let (s, body) = get("/v1/repositories/nothing/images".into()).await;
        assert_eq!(s, 404, "{body}");
        assert!(body.contains("repository nothing not found"), "{body}");
        let (s, body) = get(format!("/v1/images/{}/json", "0".repeat(64))).await;
        assert_eq!(s, 404);
        assert!(
            body.contains("ask for the repository's tags first"),
            "{body}"
        );
        let (s, body) = get(format!("/v1/images/{}/layer", "0".repeat(64))).await;
        assert_eq!(s, 404);
        assert!(body.contains("pull the image over v2"), "{body}");
        let (s, _) = get("/v1/repositories/UPPER/tags".into()).await;
        assert_eq!(s, 404);
        // Read-only, both faces.
        for path in ["/v1/repositories/x/images", "/v2/x/blobs/uploads/"] {
            let r = http
                .post(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 405, "{path}");
            assert!(r.text().await.unwrap().contains("read-only"));
        }
        // `..` does not lead out of /v2/ (sent raw: HTTP clients resolve it first).
        let raw = {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /v2/../v1/_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
        assert!(raw.contains("only /v2/"), "{raw}");
        // The registry gone: a clear 502, not a hang.
        drop(registry);
        let (s, body) = get("/v1/repositories/myapp/tags".into()).await;
        assert_eq!(s, 502, "{body}");
        assert!(
            body.contains("the v2 registry behind this face failed"),
            "{body}"
        );
        let _ = stop_tx.send(true);
        let _ = task.await;
    });
}

/// Starts the face on `upstream` (on a free loopback port): its address, its stop
/// and its task.
async fn face_on(
    upstream: &str,
) -> (
    std::net::SocketAddr,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = lattice_bbs::docker_v1::serve::DockerV1Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: format!("http://{upstream}").parse().unwrap(),
    };
    let (addr, task) = lattice_bbs::docker_v1::serve::start(&cfg, stop_rx)
        .await
        .unwrap();
    (addr, stop_tx, task)
}

#[test]
fn a_clients_credentials_serve_only_its_own_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    write_layout(
        &layout,
        "latest",
        None,
        &[vec![("hello", "private\n")]],
        &json!({"config": {"Cmd": ["/hello"]}}),
    )
    .unwrap();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let registry = Registry::start_with_htpasswd(Some(&format!("alice:{hash}")));
    registry.push_with(
        &layout,
        "latest",
        "private/app",
        &["--dest-creds", "alice:s3cret"],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (addr, stop, task) = face_on(&registry.addr).await;
        let http = reqwest::Client::new();
        let tags = |auth: Option<&'static str>| {
            let http = http.clone();
            async move {
                let mut r = http.get(format!("http://{addr}/v1/repositories/private/app/tags"));
                if let Some(a) = auth {
                    r = r.header("Authorization", a);
                }
                let r = r.send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        // base64("alice:s3cret")
        let alice = Some("Basic YWxpY2U6czNjcmV0");
        let (s, body) = tags(None).await;
        assert_eq!(s, 401, "{body}");
        assert!(body.contains("give its credentials"), "{body}");
        let (s, body) = tags(alice).await;
        assert_eq!(s, 200, "{body}");
        assert!(body.contains("\"latest\""), "{body}");
        // Alice's credentials are not kept for whoever comes next.
        let (s, body) = tags(None).await;
        assert_eq!(s, 401, "{body}");
        let _ = stop.send(true);
        let _ = task.await;
    });
}
