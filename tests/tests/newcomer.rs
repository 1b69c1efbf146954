//! The newcomer path, as the README walks it: `lattice up`, `ltc target`, `ltc create`
//! with 3 instances of a busybox httpd, traffic through the router reaching each, an
//! instance SIGKILLed and healed without help, scaling up and down, a task with a
//! result, the app's logs with app, cell and router lines, removal → 404; and a
//! cluster stopped with Ctrl-C and started again on the same data directory finds its
//! apps as they were. Real processes, real containers, real HTTP.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lattice_tests::{wait_for, UpProcess};

/// The page names the instance; a line to stdout shows in `ltc logs`. The document
/// root is unique to each test so its processes can be found (and killed) by name.
fn web_command(root: &str) -> String {
    format!(
        "mkdir -p {root} && echo \"hello from $INSTANCE_INDEX\" > {root}/index.html && echo \"instance $INSTANCE_INDEX serving\" && exec httpd -f -p 8080 -h {root}"
    )
}

fn status(up: &UpProcess, app: &str) -> serde_json::Value {
    serde_json::from_str(&up.ltc_ok(&["status", app, "--json"])).expect("status --json")
}

/// Processes whose command line starts with `pattern` (an instance's init,
/// `/.lattice/pause COMMAND…`, carries the same words later in its own).
fn pids_of(pattern: &str) -> Vec<i32> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("^{pattern}")])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn newcomer_path() {
    let up = UpProcess::start();

    // Before `ltc target`, ltc says what to do.
    let out = up.ltc(&["list"]);
    assert!(
        !out.ok && out.stderr.contains("no target set: run `ltc target"),
        "{out:#?}"
    );
    up.target();
    assert!(up.ltc_ok(&["list"]).contains("No apps yet"));
    assert!(up.ltc_ok(&["cells"]).contains("preloaded:busybox"));

    // Create: waits until all 3 run, then prints the URL.
    let root = format!("/srv/newcomer-{}", std::process::id());
    let cmd = web_command(&root);
    let out = up.ltc_ok(&[
        "create",
        "hello",
        "preloaded:busybox",
        "--instances",
        "3",
        "--",
        "sh",
        "-c",
        &cmd,
    ]);
    assert!(
        out.contains("App hello is running, 3 instance(s)."),
        "{out}"
    );
    assert!(out.contains("http://hello.lattice.localhost:"), "{out}");
    let again = up.ltc(&["create", "hello", "preloaded:busybox", "--", "true"]);
    assert!(
        !again.ok
            && again
                .stderr
                .contains("app hello already exists: use `ltc scale"),
        "{again:#?}"
    );

    // Round robin reaches every instance.
    let mut seen = BTreeSet::new();
    for _ in 0..9 {
        let (code, body) = up.get("hello").expect("router answers");
        assert_eq!(code, 200, "{body}");
        seen.insert(body.trim().to_string());
    }
    assert_eq!(
        seen,
        BTreeSet::from([
            "hello from 0".into(),
            "hello from 1".into(),
            "hello from 2".into()
        ])
    );

    // SIGKILL one instance's process: a crash, healed with nobody asking.
    let pids = pids_of(&format!("httpd -f -p 8080 -h {root}"));
    assert_eq!(pids.len(), 3, "one httpd per instance: {pids:?}");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    let healed = wait_for(
        "3 RUNNING again with one crash",
        Duration::from_secs(30),
        || {
            let s = status(&up, "hello");
            eprintln!("{s}");
            let actuals = s["actual_lrps"].as_array().unwrap().clone();
            let running = actuals.iter().filter(|a| a["state"] == "RUNNING").count();
            let crashes: i64 = actuals
                .iter()
                .map(|a| a["crash_count"].as_i64().unwrap())
                .sum();
            (running == 3 && crashes == 1).then_some(actuals)
        },
    );
    let crashed = healed.iter().find(|a| a["crash_count"] == 1).unwrap();
    assert_eq!(
        crashed["crash_reason"], "exited with status 137",
        "{crashed}"
    );
    let table = up.ltc_ok(&["status", "hello"]);
    assert!(
        table.contains("exited with status 137") && table.contains("3/3 running"),
        "{table}"
    );

    // Scale up, then down.
    let out = up.ltc_ok(&["scale", "hello", "5"]);
    assert!(out.contains("running 5 instance(s)"), "{out}");
    assert_eq!(pids_of(&format!("httpd -f -p 8080 -h {root}")).len(), 5);
    up.ltc_ok(&["scale", "hello", "1"]);
    wait_for("4 containers stopped", Duration::from_secs(20), || {
        (pids_of(&format!("httpd -f -p 8080 -h {root}")).len() == 1).then_some(())
    });
    let list = up.ltc_ok(&["list"]);
    assert!(list.contains("hello") && list.contains("1/1"), "{list}");
    assert!(up
        .ltc_ok(&["visualize", "--once"])
        .contains("(1 instances)"));

    // A command that fails is reported with its crash reason.
    let out = up.ltc(&[
        "create",
        "broken",
        "preloaded:busybox",
        "--",
        "sh",
        "-c",
        "exit 2",
    ]);
    assert!(
        !out.ok
            && out
                .stderr
                .contains("instance 0 crashed: exited with status 2"),
        "{out:#?}"
    );
    up.ltc_ok(&["remove", "broken"]);

    // Placement errors come back as the reason.
    let out = up.ltc(&[
        "create",
        "huge",
        "preloaded:busybox",
        "-m",
        "999999",
        "-t",
        "20s",
        "--",
        "true",
    ]);
    assert!(
        !out.ok && out.stderr.contains("insufficient resources"),
        "{out:#?}"
    );
    up.ltc_ok(&["remove", "huge"]);

    // A task with a result file.
    let task = up.data_dir.path().join("task.json");
    std::fs::write(
        &task,
        r#"{"task_guid": "answer", "rootfs": "preloaded:busybox", "log_guid": "answer",
            "action": {"run": {"path": "sh", "args": ["-c", "echo computing; echo 42 > /tmp/result"]}},
            "result_file": "/tmp/result", "memory_mb": 32}"#,
    )
    .unwrap();
    assert!(up
        .ltc_ok(&["submit-task", task.to_str().unwrap()])
        .contains("Submitted task answer"));
    let t = wait_for("the task completes", Duration::from_secs(30), || {
        let t: serde_json::Value =
            serde_json::from_str(&up.ltc_ok(&["task", "answer", "--json"])).unwrap();
        (t["state"] == "COMPLETED").then_some(t)
    });
    assert_eq!(
        (t["failed"].as_bool(), t["result"].as_str()),
        (Some(false), Some("42\n"))
    );
    assert!(up.ltc_ok(&["task", "answer"]).contains("Result:   42"));
    assert!(up.ltc_ok(&["list-tasks"]).contains("answer"));
    let logs = up.ltc_ok(&["logs", "answer", "--no-follow"]);
    assert!(logs.contains("computing"), "{logs}");

    // The app's logs: its own lines, the cell's, the router's.
    let logs = up.ltc_ok(&["logs", "hello", "--no-follow"]);
    for want in [
        "[APP/0] instance 0 serving",
        "[CELL]",
        "[RTR] hello.lattice.localhost - \"GET /\" 200",
    ] {
        assert!(logs.contains(want), "no {want:?} in\n{logs}");
    }
    assert!(up
        .ltc_ok(&["debug-logs", "--no-follow"])
        .contains("[BRAIN]"));

    // `ltc logs` follows: a request made now shows up while it runs.
    let mut follow = std::process::Command::new(lattice_tests::ltc_bin())
        .args(["logs", "hello"])
        .env("LTC_HOME", up.data_dir.path().join("ltc"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let marker = format!("/followed-{}", std::process::id());
    let mut s = std::net::TcpStream::connect(&up.router).unwrap();
    use std::io::Write;
    write!(
        s,
        "GET {marker} HTTP/1.1\r\nHost: hello.lattice.localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let t0 = Instant::now();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a followed line");
        if line.contains("[RTR]") && line.contains(&marker) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no access line for {marker}"
        );
    }
    let _ = follow.kill();
    let _ = follow.wait();

    // Routes move with `ltc update`.
    let out = up.ltc_ok(&["update", "hello", "-R", "www"]);
    assert!(out.contains("http://www.lattice.localhost:"), "{out}");
    wait_for("the new route", Duration::from_secs(10), || {
        matches!(up.get("www"), Some((200, _))).then_some(())
    });
    wait_for("the old route gone", Duration::from_secs(10), || {
        matches!(up.get("hello"), Some((404, _))).then_some(())
    });
    up.ltc_ok(&["update", "hello", "-R", "hello"]);
    wait_for("the route back", Duration::from_secs(10), || {
        matches!(up.get("hello"), Some((200, _))).then_some(())
    });

    // Finished tasks are deleted; the shell completes ltc's verbs.
    assert!(up
        .ltc_ok(&["delete-task", "answer"])
        .contains("Deleted task answer."));
    let out = up.ltc(&["task", "answer"]);
    assert!(
        !out.ok && out.stderr.contains("task answer not found"),
        "{out:#?}"
    );
    assert!(up.ltc_ok(&["completions", "bash"]).contains("submit-task"));

    // Remove: the route goes, the router says 404.
    assert!(up.ltc_ok(&["remove", "hello"]).contains("Removed hello."));
    wait_for("404 after remove", Duration::from_secs(10), || {
        matches!(up.get("hello"), Some((404, _))).then_some(())
    });
    let out = up.ltc(&["status", "hello"]);
    assert!(
        !out.ok && out.stderr.contains("app hello not found: `ltc list`"),
        "{out:#?}"
    );
}

#[test]
fn a_restarted_cluster_brings_its_apps_back() {
    let mut up = UpProcess::start();
    up.target();
    let root = format!("/srv/restart-{}", std::process::id());
    up.ltc_ok(&[
        "create",
        "web",
        "preloaded:busybox",
        "-i",
        "2",
        "--",
        "sh",
        "-c",
        &web_command(&root),
    ]);
    assert!(matches!(up.get("web"), Some((200, _))));

    // Ctrl-C: everything stops, containers included, even with `ltc logs` following.
    let mut follower = std::process::Command::new(lattice_tests::ltc_bin())
        .args(["logs", "web"])
        .env("LTC_HOME", up.data_dir.path().join("ltc"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    assert!(up.process.terminate().success());
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "stopping took {:?}",
        t0.elapsed()
    );
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(
        pids_of(&format!("httpd -f -p 8080 -h {root}")),
        Vec::<i32>::new()
    );
    assert_eq!(up.containers_on_disk(), 0);

    // Up again on the same data directory: the app comes back as it was.
    up.process.start_again();
    let s = wait_for(
        "web's 2 instances RUNNING again",
        Duration::from_secs(30),
        || {
            let s = status(&up, "web");
            let running = s["actual_lrps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["state"] == "RUNNING")
                .count();
            (running == 2).then_some(s)
        },
    );
    assert_eq!(s["desired_lrp"]["instances"], 2);
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let (code, body) = up.get("web").expect("router answers");
        assert_eq!(code, 200);
        seen.insert(body.trim().to_string());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn lattice_up_on_etcd() {
    let etcd = lattice_tests::EtcdServer::start();
    let store = format!("etcd://{}", etcd.endpoint());
    let up = UpProcess::start_with(&["--store", &store]);
    up.target();
    let root = format!("/srv/etcd-{}", std::process::id());
    up.ltc_ok(&[
        "create",
        "onetcd",
        "preloaded:busybox",
        "-i",
        "2",
        "--",
        "sh",
        "-c",
        &web_command(&root),
    ]);
    assert!(matches!(up.get("onetcd"), Some((200, _))));
    up.ltc_ok(&["remove", "onetcd"]);
}

#[test]
fn an_app_from_a_registry_image() {
    // A real registry on loopback with busybox plus a layer holding the page; the
    // image's cmd is httpd and its working directory (/srv) is where httpd serves from.
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    lattice_cell::image::write_layout(
        &layout,
        "v1",
        Some(&lattice_cell::testing::busybox_rootfs()),
        &[vec![
            ("srv/", ""),
            ("srv/index.html", "from the registry\n"),
        ]],
        &serde_json::json!({"config": {"WorkingDir": "/srv", "Cmd": ["httpd", "-f", "-p", "8080"]}}),
    )
    .unwrap();
    let registry = lattice_cell::testing::Registry::start();
    registry.push(&layout, "v1", "lattice/web");
    // The cell of `lattice up` reads its flags from the environment too.
    std::env::set_var("LATTICE_CELL_INSECURE_REGISTRIES", &registry.addr);
    let up = UpProcess::start();
    up.target();
    let image = format!("docker://{}/lattice/web:v1", registry.addr);
    // No command given: the image's cmd runs.
    let out = up.ltc_ok(&["create", "pulled", &image]);
    assert!(out.contains("App pulled is running"), "{out}");
    assert_eq!(
        up.get("pulled"),
        Some((200, "from the registry\n".to_string()))
    );
    // An image that does not exist: a crash with the reason, no container left.
    let ghost = format!("docker://{}/lattice/nope:v1", registry.addr);
    let out = up.ltc(&["create", "ghost", &ghost, "-t", "20s"]);
    assert!(
        !out.ok
            && out
                .stderr
                .contains("instance 0 crashed: failed to create container")
            && out.stderr.contains("lattice/nope"),
        "{out:#?}"
    );
    // (Its immediate restarts fail the same way, then it backs off.)
    wait_for(
        "only pulled's container on disk",
        Duration::from_secs(20),
        || (up.containers_on_disk() == 1).then_some(()),
    );
    up.ltc_ok(&["remove", "ghost"]);
    let logs = up.ltc_ok(&["logs", "pulled", "--no-follow"]);
    assert!(logs.contains("[CELL] Downloading layer 1/2"), "{logs}");
    assert!(logs.contains("[CELL] Downloaded "), "{logs}");
}
