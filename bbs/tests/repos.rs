//! Backup repositories through the BBS's restic REST server, with Debian's `restic`
//! (0.14, `/usr/bin/restic`) as the client: a backup task's own credential inits,
//! backs up, lists and restores its volume's repository but cannot delete from it; a
//! forget task's credential prunes; the blob store's repository opens with `restic -r
//! DIR` where it lies; a wrong password writes nothing; admins' credentials open every
//! repository, developers' none.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::client::{make_token, As, Auth};
use lattice_bbs::repos::grant::credential_repo_url;
use lattice_bbs::repos::S3Settings;
use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_specs::backup::DOMAIN;
use lattice_specs::models::{action, Action, RepositoryAction, TaskDefinition};

const RESTIC: &str = "/usr/bin/restic";

struct Cluster {
    bbs: RunningBbs,
    dir: tempfile::TempDir,
    key: String,
}

impl Cluster {
    async fn start(stores: Vec<(String, lattice_specs::repo::StoreUrl)>) -> Cluster {
        Cluster::start_with(stores, Default::default()).await
    }

    async fn start_with(
        stores: Vec<(String, lattice_specs::repo::StoreUrl)>,
        s3: S3Settings,
    ) -> Cluster {
        assert!(
            Path::new(RESTIC).exists(),
            "Debian's restic is needed: apt-get install restic (scripts/setup.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("backup.key");
        let cfg = BbsConfig {
            basic_auth: Some("admin:pw".into()),
            blob_dir: Some(dir.path().join("blobs")),
            backup_stores: stores,
            backup_key_file: Some(key_file.clone()),
            s3,
            ..BbsConfig::loopback(
                StoreUrl::File(dir.path().join("state").join("bbs.db")),
                Duration::from_secs(2),
            )
        };
        let bbs = server::start(cfg).await.unwrap();
        let key = std::fs::read_to_string(&key_file)
            .unwrap()
            .trim()
            .to_string();
        Cluster { bbs, dir, key }
    }

    fn base(&self) -> String {
        format!("http://{}", self.bbs.api_addr)
    }

    /// A backup-domain task doing `op` on `volume`'s repository; its `rest:` URL.
    async fn task(&self, guid: &str, op: &str, volume: &str) -> String {
        let url = credential_repo_url(&self.base(), volume, guid);
        let def = TaskDefinition {
            rootfs: "preloaded:busybox".into(),
            cpu_weight: 50,
            memory_mb: 64,
            action: Some(Action {
                action: Some(action::Action::Repository(RepositoryAction {
                    op: op.into(),
                    repository: url.clone(),
                    path: "/data".into(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        self.bbs.db.desire_task(guid, DOMAIN, def).await.unwrap();
        url
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Runs restic on `repo` with `password`, in `cwd`; its output.
async fn restic(repo: &str, password: &str, cwd: &Path, args: &[&str]) -> Output {
    restic_env(repo, password, cwd, args, &[]).await
}

/// [`restic`] with more environment (S3's keys).
async fn restic_env(
    repo: &str,
    password: &str,
    cwd: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let out = tokio::process::Command::new(RESTIC)
        .envs(env.iter().copied())
        .arg("-r")
        .arg(repo)
        .arg("--no-cache")
        .args(args)
        .env("RESTIC_PASSWORD", password)
        .env_remove("RESTIC_REPOSITORY")
        .current_dir(cwd)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .expect("restic within 3 minutes")
        .unwrap()
}

fn ok(o: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "restic failed: {text}");
    text
}

fn failed(o: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "restic should have failed: {text}");
    text
}

/// Deterministic files: text, a binary of pseudo-random bytes (a few packs' worth),
/// a subdirectory, a symlink.
fn make_data(at: &Path) {
    std::fs::create_dir_all(at.join("sub/deeper")).unwrap();
    std::fs::write(at.join("hello.txt"), "hello, repository\n".repeat(100)).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let bin: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(at.join("sub/random.bin"), bin).unwrap();
    std::fs::write(at.join("sub/deeper/empty"), "").unwrap();
    std::os::unix::fs::symlink("../hello.txt", at.join("sub/link")).unwrap();
}

/// Every file's relative path, kind and content (symlinks: their target).
fn tree(root: &Path) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                out.push((
                    rel,
                    "link".into(),
                    target.display().to_string().into_bytes(),
                ));
            } else if t.is_dir() {
                out.push((rel, "dir".into(), vec![]));
                stack.push(p);
            } else {
                out.push((rel, "file".into(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn snapshot_ids(text: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or("[]")).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The files under `dir`, at any depth, with their sizes.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restic_backs_up_and_restores_through_a_backup_tasks_credential_which_cannot_delete() {
    let c = Cluster::start(Vec::new()).await;
    let data = c.scratch("data");
    make_data(&data);
    let backup = c.task("backup-pg-1", "backup", "pg").await;

    // restic (as the cell's helper would) inits and backs up with the task's credential.
    ok(&restic(&backup, &c.key, &data, &["init"]).await);
    ok(&restic(&backup, &c.key, &data, &["backup", ".", "--host", "cell-1"]).await);
    let listed = ok(&restic(&backup, &c.key, &data, &["snapshots", "--json"]).await);
    let ids = snapshot_ids(&listed);
    assert_eq!(ids.len(), 1, "{listed}");

    // The blob store's repository lies in restic's local layout: restic opens it there.
    let on_disk = c.dir.path().join("blobs/restic/pg");
    let local = on_disk.display().to_string();
    let direct = ok(&restic(&local, &c.key, &data, &["snapshots", "--json"]).await);
    assert_eq!(snapshot_ids(&direct), ids);
    ok(&restic(&local, &c.key, &data, &["check", "--read-data"]).await);

    // A restore through the REST server gives the data back, byte for byte.
    let restored = c.scratch("restored");
    ok(&restic(
        &backup,
        &c.key,
        &data,
        &["restore", &ids[0], "--target", restored.to_str().unwrap()],
    )
    .await);
    assert_eq!(tree(&restored), tree(&data));

    // The backup credential cannot forget, nor prune: the data stays (restic retries
    // the refused delete for about 45 s before it gives up).
    let before = files_under(&on_disk);
    let refused = failed(&restic(&backup, &c.key, &data, &["forget", &ids[0], "--prune"]).await);
    assert!(
        refused.contains("403") || refused.to_lowercase().contains("forbidden"),
        "{refused}"
    );
    let after: Vec<_> = files_under(&on_disk)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(on_disk.join("locks")))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(p, _)| !p.starts_with(on_disk.join("locks")))
        .collect();
    assert_eq!(after, before, "nothing but locks changed");
    let listed = ok(&restic(&backup, &c.key, &data, &["snapshots", "--json"]).await);
    assert_eq!(snapshot_ids(&listed), ids);

    // Another repository is out of its reach.
    let elsewhere = backup.replace("/v1/repos/pg/", "/v1/repos/other/");
    failed(&restic(&elsewhere, &c.key, &data, &["init"]).await);
    assert!(!c.dir.path().join("blobs/restic/other").exists());

    // A forget task's credential prunes.
    let forget = c.task("forget-pg-1", "forget", "pg").await;
    ok(&restic(&forget, &c.key, &data, &["forget", &ids[0], "--prune"]).await);
    let listed = ok(&restic(&backup, &c.key, &data, &["snapshots", "--json"]).await);
    assert!(snapshot_ids(&listed).is_empty(), "{listed}");

    // Once its task is done, a credential opens nothing.
    c.bbs.db.cancel_task("backup-pg-1").await.unwrap();
    failed(&restic(&backup, &c.key, &data, &["snapshots"]).await);
    c.bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_writes_nothing_and_admins_open_every_repository() {
    let c = Cluster::start(Vec::new()).await;
    let data = c.scratch("data");
    make_data(&data);
    let url = c.task("backup-db-1", "backup", "db").await;
    ok(&restic(&url, &c.key, &data, &["init"]).await);
    let on_disk = c.dir.path().join("blobs/restic/db");
    let before = files_under(&on_disk);
    let said = failed(&restic(&url, "not-the-key", &data, &["backup", "."]).await);
    assert!(said.contains("wrong password"), "{said}");
    assert_eq!(files_under(&on_disk), before, "nothing written");

    // The password endpoint answers the task's credential, and only its repository's.
    let pass = reqwest::Url::parse(url.strip_prefix("rest:").unwrap())
        .unwrap()
        .password()
        .unwrap()
        .to_string();
    let http = reqwest::Client::new();
    let get = |path: &str, user: &str, pw: &str| {
        http.get(format!("{}{path}", c.base()))
            .basic_auth(user, Some(pw))
            .send()
    };
    let (user, pw) = ("lattice-task", pass.as_str());
    let r = get("/v1/repos/db/password", user, pw).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), c.key);
    assert_eq!(
        get("/v1/repos/pg/password", user, pw)
            .await
            .unwrap()
            .status(),
        401
    );

    // An admin (the --basic-auth credential, or an admin token as restic's password)
    // opens the repository with Prune scope; a developer's token is refused.
    let admin_url = format!("rest:http://admin:pw@{}/v1/repos/db/", c.bbs.api_addr);
    ok(&restic(&admin_url, &c.key, &data, &["backup", ".", "--host", "ops"]).await);
    let admin = As::new(&c.bbs, Auth::Basic("admin".into(), "pw".into()));
    let token = make_token(&admin, "ops", "admin").await;
    let token_url = format!("rest:http://ops:{token}@{}/v1/repos/db/", c.bbs.api_addr);
    let listed = ok(&restic(&token_url, &c.key, &data, &["snapshots", "--json"]).await);
    assert_eq!(snapshot_ids(&listed).len(), 1);
    let dev = make_token(&admin, "dev", "developer").await;
    let r = get("/v1/repos/db/config", "dev", &dev).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("admin"));

    // The key's export: admins only, audited, with where restic finds the stores.
    let (status, k) = admin.send("GET", "/v1/backup_key", None).await;
    assert_eq!(status, 200, "{k}");
    assert_eq!(k["key"], c.key.as_str());
    let blob_dir = c.dir.path().join("blobs/restic/VOLUME");
    assert_eq!(k["stores"][0]["restic"], blob_dir.display().to_string());
    assert_eq!(
        k["rest"],
        format!("rest:http://{}/v1/repos/VOLUME/", c.bbs.api_addr)
    );
    let audited = c.bbs.logs.recent(lattice_specs::logs::DEBUG_LOG_GUID);
    assert!(
        audited.iter().any(|l| l.source == "AUDIT"
            && l.message.contains("object=/v1/backup_key")
            && l.message.contains("basic:admin")),
        "an audit line"
    );
    let developer = As::new(&c.bbs, Auth::Bearer(dev));
    let (status, answer) = developer.send("GET", "/v1/backup_key", None).await;
    assert_eq!(status, 403, "{answer}");
    c.bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_submit_backup_domain_work_or_repository_actions() {
    let c = Cluster::start(Vec::new()).await;
    let admin = As::new(&c.bbs, Auth::Basic("admin".into(), "pw".into()));
    let task = |guid: &str, domain: &str, action: &str| {
        serde_json::json!({
            "task_guid": guid, "domain": domain, "rootfs": "preloaded:busybox",
            "action": serde_json::from_str::<serde_json::Value>(action).unwrap(),
            "cpu_weight": 10, "memory_mb": 10, "log_guid": "t",
        })
    };
    let run = r#"{"run":{"path":"sh","args":["-c","true"]}}"#;
    let repo = r#"{"serial":{"actions":[{"repository":{"op":"forget","repository":"rest:http://x/v1/repos/pg/"}}]}}"#;
    for (body, field) in [
        (task("t1", DOMAIN, run), "domain"),
        (task("t2", "apps", repo), "action"),
    ] {
        let (status, answer) = admin.send("POST", "/v1/tasks", Some(body)).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["name"], "InvalidRequest", "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    let (status, answer) = admin
        .send("POST", "/v1/tasks", Some(task("t3", "apps", run)))
        .await;
    assert_eq!(status, 201, "{answer}");
    let lrp = serde_json::json!({
        "process_guid": "web", "domain": "apps", "rootfs": "preloaded:busybox",
        "instances": 1, "cpu_weight": 10, "memory_mb": 10,
        "action": serde_json::from_str::<serde_json::Value>(run).unwrap(),
        "monitor": serde_json::from_str::<serde_json::Value>(repo).unwrap(),
    });
    let (status, answer) = admin.send("POST", "/v1/desired_lrps", Some(lrp)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().starts_with("monitor: "),
        "{answer}"
    );
    c.bbs.shutdown().await;
}

/// An S3-compatible server (moto's, from PyPI: scripts/setup.sh installs it) on a free
/// loopback port with an empty bucket; killed when dropped.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const S3_KEY: (&str, &str) = ("lattice-test", "lattice-test-secret");

impl S3Server {
    async fn start(bucket: &str) -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m moto.server (pip install 'moto[server]'; scripts/setup.sh does)");
        let s = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match http.put(format!("{}/{bucket}", s.endpoint)).send().await {
                Ok(r) if r.status().is_success() => break,
                r => assert!(
                    std::time::Instant::now() < deadline,
                    "moto's S3 server did not make bucket {bucket} within 30 s: {r:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        s
    }

    fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: self.endpoint.clone(),
            region: "us-east-1".into(),
            access_key_id: S3_KEY.0.into(),
            secret_access_key: S3_KEY.1.into(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_store_serves_restic_as_the_blob_store_does_and_restic_opens_it_there() {
    let s3 = S3Server::start("lattice-bk").await;
    let store = lattice_specs::repo::parse_named_store("s3://lattice-bk/lattice").unwrap();
    let c = Cluster::start_with(vec![store], s3.settings()).await;
    let data = c.scratch("data");
    make_data(&data);
    let backup = c.task("backup-pg-1", "backup", "pg").await;
    ok(&restic(&backup, &c.key, &data, &["init"]).await);
    ok(&restic(&backup, &c.key, &data, &["backup", ".", "--host", "cell-1"]).await);
    let ids = snapshot_ids(&ok(&restic(
        &backup,
        &c.key,
        &data,
        &["snapshots", "--json"],
    )
    .await));
    assert_eq!(ids.len(), 1);
    let restored = c.scratch("restored");
    ok(&restic(
        &backup,
        &c.key,
        &data,
        &["restore", &ids[0], "--target", restored.to_str().unwrap()],
    )
    .await);
    assert_eq!(tree(&restored), tree(&data));
    failed(&restic(&backup, &c.key, &data, &["forget", &ids[0], "--prune"]).await);

    // restic opens the repository in the bucket where it lies.
    let direct = format!("s3:{}/lattice-bk/lattice/pg", s3.endpoint);
    let keys = [
        ("AWS_ACCESS_KEY_ID", S3_KEY.0),
        ("AWS_SECRET_ACCESS_KEY", S3_KEY.1),
    ];
    let listed = ok(&restic_env(&direct, &c.key, &data, &["snapshots", "--json"], &keys).await);
    assert_eq!(snapshot_ids(&listed), ids);
    ok(&restic_env(&direct, &c.key, &data, &["check", "--read-data"], &keys).await);

    // A file larger than one part streams as a multipart upload; ranges read it back;
    // a name is never written twice.
    let http = reqwest::Client::new();
    let url = |kind: &str, name: &str| format!("{}/v1/repos/pg/{kind}/{name}", c.base());
    let big: Vec<u8> = (0..(lattice_bbs::repos::S3_PART + 1_234_567))
        .map(|i| (i % 251) as u8)
        .collect();
    let name = format!("{:064x}", 0xfeed_u64);
    let post = |body: Vec<u8>| {
        http.post(url("data", &name))
            .basic_auth("admin", Some("pw"))
            .body(body)
            .send()
    };
    assert_eq!(post(big.clone()).await.unwrap().status(), 200);
    assert_eq!(post(b"other".to_vec()).await.unwrap().status(), 403);
    let r = http
        .get(url("data", &name))
        .basic_auth("admin", Some("pw"))
        .header("Range", "bytes=8388600-8388615")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &big[8388600..8388616]);
    let r = http
        .get(url("data", &name))
        .basic_auth("admin", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), big.len());
    c.bbs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_s3_store_answers_backup_store_unavailable_with_the_reason() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = S3Settings {
        endpoint: format!("http://127.0.0.1:{port}"),
        region: "us-east-1".into(),
        access_key_id: S3_KEY.0.into(),
        secret_access_key: S3_KEY.1.into(),
    };
    let store = lattice_specs::repo::parse_named_store("s3://lattice-bk").unwrap();
    let c = Cluster::start_with(vec![store], settings).await;
    let admin = As::new(&c.bbs, Auth::Basic("admin".into(), "pw".into()));
    let began = std::time::Instant::now();
    let (status, answer) = admin.send("GET", "/v1/repos/pg/keys/", None).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["name"], "BackupStoreUnavailable", "{answer}");
    let why = answer["message"].as_str().unwrap().to_lowercase();
    assert!(
        why.contains("unavailable") && why.contains("connect"),
        "{why}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "bounded: {:?}",
        began.elapsed()
    );
    let data = c.scratch("data");
    make_data(&data);
    let url = c.task("backup-pg-1", "backup", "pg").await;
    failed(&restic(&url, &c.key, &data, &["init"]).await);
    c.bbs.shutdown().await;
}
