//! Rolling updates end to end, as a user drives them with `ltc`: real containers on
//! `lattice up`, real requests through the router. An update of image and environment
//! under a steady stream of requests loses none and ends with every instance on the
//! new generation (and a rollback on purpose brings the old one back); a generation
//! that crashes is rolled back by the brain alone and `ltc update` fails with the
//! reason; a canary serves beside the old instances until `ltc promote`; a brain
//! that takes over from a killed one carries an update on (separate processes).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lattice_tests::{
    ltc_bin, wait_for, BbsProcess, BrainProcess, CellProcess, RouterProcess, UpProcess,
};

/// The page names the app's VERSION variable, the image (a file the OCI image adds)
/// and the instance. The document root is unique to each test.
fn web_command(root: &str) -> String {
    format!(
        "mkdir -p {root} && echo \"$VERSION $(cat /etc/image-name 2>/dev/null || echo busybox) $INSTANCE_INDEX\" > {root}/index.html && exec httpd -f -p 8080 -h {root}"
    )
}

/// `lattice up` whose cell takes oci: images from the temporary directory, targeted.
fn cluster() -> UpProcess {
    // The same value for every test of this binary (they run in parallel).
    std::env::set_var("LATTICE_CELL_OCI_ROOTS", std::env::temp_dir());
    let up = UpProcess::start();
    up.target();
    up
}

/// `ltc create APP` of `n` busybox httpd instances at VERSION=v1.
fn create(up: &UpProcess, app: &str, n: usize, root: &str) {
    let out = up.ltc_ok(&[
        "create",
        app,
        "preloaded:busybox",
        "-i",
        &n.to_string(),
        "-e",
        "VERSION=v1",
        "--",
        "sh",
        "-c",
        &web_command(root),
    ]);
    assert!(out.contains(&format!("App {app} is running")), "{out}");
}

fn status(up: &UpProcess, app: &str) -> serde_json::Value {
    serde_json::from_str(&up.ltc_ok(&["status", app, "--json"])).expect("status --json")
}

/// (index, generation, presence, state) of each instance, sorted.
fn instances(s: &serde_json::Value) -> Vec<(i64, i64, String, String)> {
    let mut v: Vec<_> = s["actual_lrps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["index"].as_i64().unwrap(),
                a["generation"].as_i64().unwrap_or(0),
                a["presence"].as_str().unwrap_or("").to_string(),
                a["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// `n` ordinary RUNNING instances on `generation`, nothing else.
fn all_on(generation: i64, n: i64) -> Vec<(i64, i64, String, String)> {
    (0..n)
        .map(|i| (i, generation, "ORDINARY".into(), "RUNNING".into()))
        .collect()
}

/// One `GET /` of the app through the router on a fresh connection: status and body.
fn get(router: &str, app: &str) -> Answer {
    let mut s = std::net::TcpStream::connect(router).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {app}.lattice.localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut resp = vec![];
    s.read_to_end(&mut resp).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((code, body.trim().to_string()))
}

/// What one request got: status and page, or what went wrong.
type Answer = Result<(u16, String), String>;

/// Requests to an app, one after another, on a thread until stopped (or dropped).
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Answer>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(router: &str, app: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(vec![]));
        let (router, app) = (router.to_string(), app.to_string());
        let thread = std::thread::spawn({
            let (stop, seen) = (stop.clone(), seen.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = get(&router, &app);
                    seen.lock().unwrap().push(r);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Load {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops and gives every answer, in order.
    fn finish(mut self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every answer was a 200; the distinct pages, in the order first seen.
fn all_ok(answers: &[Answer]) -> Vec<String> {
    let bad: Vec<_> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| !matches!(a, Ok((200, _))))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests lost: {bad:?}",
        bad.len(),
        answers.len()
    );
    let mut pages = vec![];
    for (_, page) in answers.iter().flatten() {
        if !pages.contains(page) {
            pages.push(page.clone());
        }
    }
    pages
}

#[test]
fn an_update_under_load_loses_no_request_and_a_rollback_brings_the_old_one_back() {
    let up = cluster();
    let root = format!("/srv/rollout-load-{}", std::process::id());
    create(&up, "web", 3, &root);

    // The new image: busybox plus a file naming it.
    let images = tempfile::tempdir().unwrap();
    let layout = images.path().join("web");
    lattice_cell::image::write_layout(
        &layout,
        "v2",
        Some(&lattice_cell::testing::busybox_rootfs()),
        &[vec![("etc/", ""), ("etc/image-name", "oci-v2\n")]],
        &serde_json::json!({"config": {}}),
    )
    .unwrap();
    let image = format!("oci:{}:v2", layout.display());

    let load = Load::start(&up.router, "web");
    std::thread::sleep(Duration::from_millis(500));
    let out = up.ltc(&["update", "web", &image, "-e", "VERSION=v2"]);
    std::thread::sleep(Duration::from_millis(500));
    let answers = load.finish();
    assert!(out.ok, "{out:#?}");
    assert!(
        out.stderr
            .contains("Rolling out generation 2 of web: image preloaded:busybox → oci:")
            && out.stderr.contains("env ~VERSION"),
        "{out:#?}"
    );
    assert!(
        out.stdout
            .contains("App web runs generation 2, 3 instance(s)."),
        "{out:#?}"
    );
    let pages = all_ok(&answers);
    let old: BTreeSet<_> = (0..3).map(|i| format!("v1 busybox {i}")).collect();
    let new: BTreeSet<_> = (0..3).map(|i| format!("v2 oci-v2 {i}")).collect();
    assert!(
        pages.iter().all(|p| old.contains(p) || new.contains(p)),
        "{pages:?}"
    );
    assert!(
        old.contains(&pages[0]) && new.contains(pages.last().unwrap()),
        "old pages first, new ones last: {pages:?}"
    );
    eprintln!("{} requests during the update, all answered", answers.len());

    // Every instance on generation 2, no old copy left; the router reaches them all.
    let s = wait_for("no replaced copy left", Duration::from_secs(15), || {
        let s = status(&up, "web");
        (instances(&s) == all_on(2, 3)).then_some(s)
    });
    assert_eq!(s["desired_lrp"]["generation"], 2);
    assert_eq!(s["desired_lrp"]["deployment"]["state"], "succeeded");
    let seen: BTreeSet<String> = (0..12).map(|_| get(&up.router, "web").unwrap().1).collect();
    assert_eq!(seen, new);
    let table = up.ltc_ok(&["status", "web"]);
    assert!(table.contains("Generation: 2"), "{table}");
    let list = up.ltc_ok(&["list"]);
    let row: Vec<&str> = list
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row.get(1..3), Some(&["3/3", "2"][..]), "{list}");
    let history = up.ltc_ok(&["history", "web"]);
    assert!(
        history.contains("created") && history.contains("image preloaded:busybox → oci:"),
        "{history}"
    );

    // The same definition again changes nothing.
    let out = up.ltc_ok(&["update", "web", &image, "-e", "VERSION=v2"]);
    assert!(out.contains("Nothing to change"), "{out}");

    // Back to generation 1 on purpose, under load again.
    let load = Load::start(&up.router, "web");
    let out = up.ltc(&["rollback", "web"]);
    std::thread::sleep(Duration::from_millis(500));
    let answers = load.finish();
    assert!(out.ok, "{out:#?}");
    assert!(
        out.stdout
            .contains("App web is back on generation 1, 3 instance(s)."),
        "{out:#?}"
    );
    all_ok(&answers);
    wait_for("all back on generation 1", Duration::from_secs(15), || {
        (instances(&status(&up, "web")) == all_on(1, 3)).then_some(())
    });
    let seen: BTreeSet<String> = (0..12).map(|_| get(&up.router, "web").unwrap().1).collect();
    assert_eq!(seen, old);
    let history = up.ltc_ok(&["history", "web"]);
    assert!(history.contains("rolled back"), "{history}");
}

#[test]
fn a_crashing_generation_is_rolled_back_alone_and_update_says_why() {
    let up = cluster();
    let root = format!("/srv/rollout-crash-{}", std::process::id());
    create(&up, "web", 2, &root);

    let load = Load::start(&up.router, "web");
    let out = up.ltc(&[
        "update",
        "web",
        "-e",
        "VERSION=v2",
        "--",
        "sh",
        "-c",
        "echo broken; exit 3",
    ]);
    let answers = load.finish();
    assert!(!out.ok, "the update must fail: {out:#?}");
    assert!(
        out.stderr
            .contains("generation 2 was rolled back to generation 1 because instance")
            && out.stderr.contains("crashed: exited with status 3"),
        "{out:#?}"
    );
    // The old instances served throughout.
    let pages: BTreeSet<String> = all_ok(&answers).into_iter().collect();
    assert_eq!(
        pages,
        BTreeSet::from(["v1 busybox 0".to_string(), "v1 busybox 1".into()])
    );

    let s = wait_for("both back on generation 1", Duration::from_secs(20), || {
        let s = status(&up, "web");
        (instances(&s) == all_on(1, 2)).then_some(s)
    });
    assert_eq!(s["desired_lrp"]["generation"], 1);
    let dep = &s["desired_lrp"]["deployment"];
    assert_eq!(
        (&dep["state"], &dep["failed"]),
        (&"failed".into(), &true.into())
    );
    assert!(
        dep["reason"]
            .as_str()
            .unwrap()
            .contains("exited with status 3"),
        "{dep}"
    );
    let history = up.ltc_ok(&["history", "web"]);
    let line = history.lines().find(|l| l.starts_with("2 ")).unwrap_or("");
    assert!(
        line.contains("failed") && line.contains("command"),
        "{history}"
    );
    // The app still takes a good update after the failed one.
    let out = up.ltc_ok(&["update", "web", "-e", "VERSION=v3"]);
    assert!(out.contains("runs generation 3"), "{out}");
}

#[test]
fn a_canary_serves_beside_the_old_instances_until_promoted() {
    let up = cluster();
    let root = format!("/srv/rollout-canary-{}", std::process::id());
    create(&up, "web", 3, &root);

    let out = up.ltc(&["update", "web", "-e", "VERSION=v2", "--canary", "1"]);
    assert!(out.ok, "{out:#?}");
    assert!(
        out.stdout.contains("1 canary instance(s) of generation 2")
            && out.stdout.contains("`ltc promote web`"),
        "{out:#?}"
    );
    // Paused, and it stays so: one new instance, the old copy beside it still routed.
    for _ in 0..2 {
        let s = status(&up, "web");
        assert_eq!(s["desired_lrp"]["deployment"]["state"], "paused", "{s}");
        let on_2: Vec<_> = instances(&s)
            .into_iter()
            .filter(|(_, g, p, st)| *g == 2 && p == "ORDINARY" && st == "RUNNING")
            .collect();
        assert_eq!(on_2.len(), 1, "{s}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let pages: BTreeSet<String> = (0..30)
        .map(|_| get(&up.router, "web").unwrap())
        .map(|(code, page)| {
            assert_eq!(code, 200);
            page.split(' ').next().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        pages,
        BTreeSet::from(["v1".to_string(), "v2".into()]),
        "old and new serve side by side"
    );
    assert!(up
        .ltc_ok(&["status", "web"])
        .contains("paused to generation 2"));
    let again = up.ltc(&["update", "web", "-e", "VERSION=v3"]);
    assert!(
        !again.ok && again.stderr.contains("DeploymentInProgress"),
        "{again:#?}"
    );

    let load = Load::start(&up.router, "web");
    let out = up.ltc(&["promote", "web"]);
    let answers = load.finish();
    assert!(out.ok, "{out:#?}");
    assert!(
        out.stdout
            .contains("App web runs generation 2, 3 instance(s)."),
        "{out:#?}"
    );
    all_ok(&answers);
    wait_for("all on generation 2", Duration::from_secs(15), || {
        (instances(&status(&up, "web")) == all_on(2, 3)).then_some(())
    });
    let out = up.ltc(&["promote", "web"]);
    assert!(
        !out.ok && out.stderr.contains("no canary waiting for promotion"),
        "{out:#?}"
    );
}

/// `ltc ARGS` with its config in `home`, as a child to wait for.
fn ltc_child(home: &std::path::Path, args: &[&str]) -> std::process::Child {
    std::process::Command::new(ltc_bin())
        .args(args)
        .env("LTC_HOME", home)
        .env_remove("LTC_TARGET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running ltc")
}

fn ltc_done(child: std::process::Child) -> (bool, String) {
    let out = child.wait_with_output().expect("ltc ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Ordinary RUNNING instances of `app` on `generation`, read from the API.
fn running_on(api: &str, app: &str, generation: i64) -> usize {
    let body = UpProcess::http_get(api, &format!("/v1/actual_lrps/{app}"));
    let all: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    all.iter()
        .filter(|a| {
            a["state"] == "RUNNING" && a["presence"] == "ORDINARY" && a["generation"] == generation
        })
        .count()
}

#[test]
fn a_brain_that_takes_over_mid_update_carries_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let bbs = BbsProcess::start(
        &format!("file:{}", dir.path().join("bbs.db").display()),
        &[],
    );
    let mut first = BrainProcess::start(&bbs.grpc, "brain-a", &["--lock-ttl", "2"]);
    let _cell = CellProcess::start(&bbs.grpc, "cell-1", &[]);
    let router = RouterProcess::start(&bbs.grpc);
    let home = dir.path().join("ltc");
    let port = router.listen.rsplit(':').next().unwrap();
    let run = |args: &[&str]| {
        let (ok, out) = ltc_done(ltc_child(&home, args));
        assert!(ok, "ltc {args:?}: {out}");
        out
    };
    run(&[
        "target",
        &format!("http://{}", bbs.api),
        "--domain",
        &format!("lattice.localhost:{port}"),
    ]);
    let root = format!("/srv/rollout-takeover-{}", std::process::id());
    run(&[
        "create",
        "web",
        "preloaded:busybox",
        "-i",
        "3",
        "-e",
        "VERSION=v1",
        "--",
        "sh",
        "-c",
        &web_command(&root),
    ]);
    let _standby = BrainProcess::start(&bbs.grpc, "brain-b", &["--lock-ttl", "2"]);

    // Each new instance takes a second to answer, so the update is seen under way.
    let slow = format!("sleep 1 && {}", web_command(&root));
    let update = ltc_child(
        &home,
        &["update", "web", "-e", "VERSION=v2", "--", "sh", "-c", &slow],
    );
    // The first new instance runs: the update is under way. Its brain dies.
    let updated = wait_for("a first instance updated", Duration::from_secs(60), || {
        let n = running_on(&bbs.api, "web", 2);
        (n >= 1).then_some(n)
    });
    first.process.kill();
    assert!(
        updated < 3,
        "the update was over before the brain was killed"
    );
    let (ok, out) = ltc_done(update);
    assert!(ok, "{out}");
    assert!(
        out.contains("App web runs generation 2, 3 instance(s)."),
        "{out}"
    );
    assert_eq!(running_on(&bbs.api, "web", 2), 3);
    let seen: BTreeSet<String> = (0..12)
        .map(|_| get(&router.listen, "web").unwrap().1)
        .collect();
    assert_eq!(
        seen,
        (0..3)
            .map(|i| format!("v2 busybox {i}"))
            .collect::<BTreeSet<_>>()
    );
}
