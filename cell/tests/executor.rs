//! Real containers through the executor (as root): tasks with results, servers reached
//! at their host ports, limits, cancellation, re-adoption, and no leftovers.

use std::time::Duration;

use lattice_cell::shim::ShimEvent;
use lattice_cell::testing::*;

fn exited(e: &ShimEvent) -> bool {
    matches!(e, ShimEvent::Exited { .. })
}

async fn outcome(t: &TestExecutor, handle: &str, timeout: Duration) -> (bool, String, bool) {
    match wait_event(&t.exec, handle, timeout, exited).await {
        ShimEvent::Exited {
            failed,
            reason,
            stopped,
            ..
        } => (failed, reason, stopped),
        _ => unreachable!(),
    }
}

async fn destroy_clean(t: &TestExecutor, handle: &str) {
    t.exec.destroy(handle).await;
    let left = leftovers(&t.exec, handle);
    assert!(left.is_empty(), "{handle} left behind: {left:?}");
}

#[tokio::test]
async fn a_task_runs_to_completion_and_its_result_file_is_read() {
    let t = TestExecutor::new();
    let req = request(
        "task-result",
        sh("echo hello; id -u > /tmp/uid; hostname > /tmp/host; echo 42 > /tmp/result"),
    );
    t.exec.create(req).await.unwrap();
    let (failed, reason, _) = outcome(&t, "task-result", Duration::from_secs(20)).await;
    assert!(!failed, "{reason}");
    assert_eq!(
        t.exec
            .read_file("task-result", "/tmp/result")
            .await
            .unwrap(),
        "42\n"
    );
    assert_eq!(
        t.exec.read_file("task-result", "/tmp/uid").await.unwrap(),
        "0\n"
    );
    assert_eq!(
        t.exec.read_file("task-result", "/tmp/host").await.unwrap(),
        "task-result\n"
    );
    destroy_clean(&t, "task-result").await;
}

#[tokio::test]
async fn a_failing_command_and_a_missing_one_say_why() {
    let t = TestExecutor::new();
    t.exec.create(request("exit2", sh("exit 2"))).await.unwrap();
    t.exec
        .create(request("missing", run("/bin/no-such-thing", &[])))
        .await
        .unwrap();
    let (failed, reason, _) = outcome(&t, "exit2", Duration::from_secs(20)).await;
    assert!(failed);
    assert_eq!(reason, "exited with status 2");
    let (failed, reason, _) = outcome(&t, "missing", Duration::from_secs(20)).await;
    assert!(failed);
    assert_eq!(reason, "/bin/no-such-thing: command not found in the image");
    destroy_clean(&t, "exit2").await;
    destroy_clean(&t, "missing").await;
}

/// A lone Run is the container's init (under pause): its exit status is the
/// container's, whatever it left running goes with it, and a command the image has
/// but cannot execute says so.
#[tokio::test]
async fn a_lone_run_ends_its_container_with_its_own_status() {
    let t = TestExecutor::new();
    let t0 = std::time::Instant::now();
    t.exec
        .create(request("daemon-left", sh("sleep 600 & exit 3")))
        .await
        .unwrap();
    t.exec
        .create(request("not-executable", run("/etc/passwd", &[])))
        .await
        .unwrap();
    // The same Run inside a Serial is exec'd beside pause: its exit ends it too.
    let serial = lattice_specs::models::Action {
        action: Some(lattice_specs::models::action::Action::Serial(
            lattice_specs::models::SerialAction {
                actions: vec![sh("echo first"), sh("sleep 600 & exit 3")],
                ..Default::default()
            },
        )),
    };
    t.exec
        .create(request("daemon-left-serial", serial))
        .await
        .unwrap();
    let (failed, reason, _) = outcome(&t, "daemon-left", Duration::from_secs(20)).await;
    assert!(failed);
    assert_eq!(reason, "exited with status 3");
    wait_event(&t.exec, "daemon-left", Duration::from_secs(20), |e| {
        matches!(e, ShimEvent::Destroyed)
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "the background sleep held the container: {:?}",
        t0.elapsed()
    );
    let (failed, reason, _) = outcome(&t, "daemon-left-serial", Duration::from_secs(20)).await;
    assert!(failed);
    assert_eq!(reason, "exited with status 3");
    let (failed, reason, _) = outcome(&t, "not-executable", Duration::from_secs(20)).await;
    assert!(failed);
    assert_eq!(
        reason,
        "failed to start /etc/passwd: Permission denied (os error 13)"
    );
    destroy_clean(&t, "daemon-left").await;
    destroy_clean(&t, "not-executable").await;
    destroy_clean(&t, "daemon-left-serial").await;
}

async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

fn web_server(handle: &str, body: &str) -> lattice_cell::executor::ContainerRequest {
    let mut req = request(
        handle,
        sh(&format!(
            "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 8080 -h /www"
        )),
    );
    req.ports = vec![8080];
    req
}

#[tokio::test]
async fn two_instances_of_one_image_serve_on_the_same_container_port() {
    let t = TestExecutor::new();
    let a = t.exec.create(web_server("web-a", "alpha")).await.unwrap();
    let b = t.exec.create(web_server("web-b", "beta")).await.unwrap();
    assert_eq!(a.ports[0].0, 8080);
    assert_ne!(a.ports[0].1, b.ports[0].1, "host ports must differ");
    assert_ne!(a.ip(), b.ip());
    for (info, want) in [(&a, "alpha"), (&b, "beta")] {
        let host = info.ports[0].1;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((200, body)) = http_get(host, "/").await {
                assert_eq!(body.trim(), want);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{want} never answered on {host}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    destroy_clean(&t, "web-a").await;
    destroy_clean(&t, "web-b").await;
    assert_eq!(t.exec.network().published(), 0);
    // The host port is free again.
    assert!(std::net::TcpListener::bind(("0.0.0.0", a.ports[0].1)).is_ok());
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed_and_reported() {
    let t = TestExecutor::new();
    let mut req = request("hog", sh("dd if=/dev/zero of=/dev/null bs=64M count=1"));
    req.memory_mb = 16;
    t.exec.create(req).await.unwrap();
    let (failed, reason, _) = outcome(&t, "hog", Duration::from_secs(20)).await;
    assert!(failed);
    assert_eq!(reason, "exited with status 137: out of memory");
    destroy_clean(&t, "hog").await;
}

#[tokio::test]
async fn a_fork_bomb_stays_inside_its_pids_limit() {
    let t = TestExecutor::new();
    // The sleep is started first: once the bomb fills the pids limit, no fork succeeds,
    // and a sleep started after it could not keep the container alive. The bomb goes
    // off in a subshell: the main shell forks nothing more (a fork it failed would end
    // it, and the container, with status 2).
    let mut req = request(
        "bomb",
        sh("sleep 2 & s=$!; (bomb() { bomb | bomb & }; bomb) & wait $s"),
    );
    req.max_pids = 24;
    t.exec.create(req).await.unwrap();
    wait_event(&t.exec, "bomb", Duration::from_secs(10), |e| {
        matches!(e, ShimEvent::RunStarted { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cg = lattice_cell::executor::cgroup_path("bomb");
    let pids_dir = std::path::Path::new("/sys/fs/cgroup/pids").join(cg.trim_start_matches('/'));
    let current: u32 = std::fs::read_to_string(pids_dir.join("pids.current"))
        .unwrap_or_else(|e| panic!("pids cgroup {e}: {:?}", t.exec.events("bomb", 0).0))
        .trim()
        .parse()
        .unwrap();
    assert!(current <= 24, "{current} pids");
    let events = std::fs::read_to_string(pids_dir.join("pids.events")).unwrap();
    assert!(
        events.trim() != "max 0",
        "the limit was never hit: {events}"
    );
    // The cell is unharmed: another container starts and finishes at once.
    t.exec
        .create(request("after-bomb", sh("true")))
        .await
        .unwrap();
    let (failed, reason, _) = outcome(&t, "after-bomb", Duration::from_secs(20)).await;
    assert!(!failed, "{reason}");
    destroy_clean(&t, "bomb").await;
    destroy_clean(&t, "after-bomb").await;
}

#[tokio::test]
async fn stopping_sends_sigterm_then_sigkill_after_the_grace_period() {
    let t = TestExecutor::with_grace(Duration::from_millis(1500));
    t.exec
        .create(request(
            "polite",
            sh("trap 'echo bye > /tmp/bye; exit 0' TERM; while true; do sleep 0.05; done"),
        ))
        .await
        .unwrap();
    t.exec
        .create(request(
            "stubborn",
            sh("trap '' TERM; while true; do sleep 0.05; done"),
        ))
        .await
        .unwrap();
    for h in ["polite", "stubborn"] {
        wait_event(&t.exec, h, Duration::from_secs(10), |e| {
            matches!(e, ShimEvent::RunStarted { .. })
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = std::time::Instant::now();
    t.exec.stop("polite");
    t.exec.stop("stubborn");
    let (_, reason, stopped) = outcome(&t, "polite", Duration::from_secs(10)).await;
    assert!(stopped);
    let polite = t0.elapsed();
    assert!(reason.is_empty() || reason.contains("status 0"), "{reason}");
    assert_eq!(
        t.exec.read_file("polite", "/tmp/bye").await.unwrap(),
        "bye\n"
    );
    let (_, reason, stopped) = outcome(&t, "stubborn", Duration::from_secs(10)).await;
    let stubborn = t0.elapsed();
    assert!(stopped);
    assert!(reason.contains("137"), "{reason}");
    assert!(
        polite < Duration::from_millis(1400),
        "SIGTERM was not delivered first: {polite:?}"
    );
    assert!(
        stubborn >= Duration::from_millis(1400),
        "SIGKILL came before the grace period: {stubborn:?}"
    );
    destroy_clean(&t, "polite").await;
    destroy_clean(&t, "stubborn").await;
}

#[tokio::test]
async fn a_restarted_executor_adopts_running_containers() {
    let t = TestExecutor::new();
    let info = t
        .exec
        .create(web_server("adopted", "still-here"))
        .await
        .unwrap();
    let host = info.ports[0].1;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while http_get(host, "/").await.is_none() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The rep goes away: its forwarders with it (the container keeps running).
    t.exec.network().unpublish(host);
    let again = t.restart();
    let found = again.on_disk();
    assert_eq!(found.len(), 1);
    assert!(
        again.shim_pid("adopted").is_some(),
        "the container died with the rep"
    );
    again.adopt(&found[0]).await.unwrap();
    let (status, body) = http_get(host, "/")
        .await
        .expect("served again after adoption");
    assert_eq!((status, body.trim()), (200, "still-here"));
    again.destroy("adopted").await;
    assert!(leftovers(&again, "adopted").is_empty());
}

#[tokio::test]
async fn unprivileged_containers_are_confined_and_privileged_ones_are_not() {
    let t = TestExecutor::new();
    // mount is denied (seccomp + no CAP_SYS_ADMIN), /proc/kcore is masked, and the
    // container cannot make new namespaces.
    let probe = "mkdir -p /mnt; mount -t tmpfs none /mnt 2>>/tmp/err && echo mounted >> /tmp/out; \
                 unshare -n true 2>>/tmp/err && echo unshared >> /tmp/out; \
                 [ -s /proc/kcore ] && echo kcore >> /tmp/out; echo done >> /tmp/out";
    t.exec.create(request("confined", sh(probe))).await.unwrap();
    let mut req = request("privileged", sh(probe));
    req.privileged = true;
    t.exec.create(req).await.unwrap();
    for h in ["confined", "privileged"] {
        let (failed, reason, _) = outcome(&t, h, Duration::from_secs(20)).await;
        assert!(!failed, "{h}: {reason}");
    }
    assert_eq!(
        t.exec.read_file("confined", "/tmp/out").await.unwrap(),
        "done\n"
    );
    let privileged = t.exec.read_file("privileged", "/tmp/out").await.unwrap();
    assert!(
        privileged.contains("mounted") && privileged.contains("unshared"),
        "{privileged} {:?}",
        t.exec.read_file("privileged", "/tmp/err").await
    );
    destroy_clean(&t, "confined").await;
    destroy_clean(&t, "privileged").await;
}

#[tokio::test]
async fn a_command_runs_in_a_live_container_for_health_checks() {
    let t = TestExecutor::new();
    t.exec
        .create(request("checked", sh("touch /tmp/ready; sleep 30")))
        .await
        .unwrap();
    wait_event(&t.exec, "checked", Duration::from_secs(10), |e| {
        matches!(e, ShimEvent::RunStarted { .. })
    })
    .await;
    let check = |script: &str| {
        let run = lattice_specs::models::RunAction {
            path: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        };
        let mut cmd = tokio::process::Command::new(&shim_command()[0]);
        cmd.arg(t.exec.dir("checked"))
            .arg("--exec")
            .arg(serde_json::to_string(&run).unwrap());
        cmd
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if check("test -e /tmp/ready")
            .status()
            .await
            .unwrap()
            .success()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the check never passed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failing = check("exit 4").output().await.unwrap();
    assert!(!failing.status.success());
    assert!(
        String::from_utf8_lossy(&failing.stderr).contains("exited with status 4"),
        "{failing:?}"
    );
    destroy_clean(&t, "checked").await;
}

/// A file server for Download and an upload sink, on loopback (the shim moves the bytes
/// from the host side).
#[tokio::test]
async fn download_and_upload_move_files_in_and_out() {
    use sha2::Digest;
    // A tgz with one file, and its checksum.
    let tgz = tgz_of(&[("hello.txt", b"downloaded\n")]);
    let sum: String = sha2::Sha256::digest(&tgz)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (url, uploaded) = transfer_server(tgz).await;

    let t = TestExecutor::new();
    let action = serial(vec![
        download(&format!("{url}/app.tgz"), "/app", &sum),
        sh("cat /app/hello.txt > /tmp/out; echo uploaded-content > /tmp/up"),
        upload("/tmp/up", &format!("{url}/upload")),
    ]);
    t.exec.create(request("transfer", action)).await.unwrap();
    let (failed, reason, _) = outcome(&t, "transfer", Duration::from_secs(20)).await;
    assert!(!failed, "{reason}");
    assert_eq!(
        t.exec.read_file("transfer", "/tmp/out").await.unwrap(),
        "downloaded\n"
    );
    assert_eq!(&uploaded.lock().unwrap()[..], b"uploaded-content\n");
    destroy_clean(&t, "transfer").await;

    // A checksum that does not match fails the action with the reason.
    let bad = download(&format!("{url}/app.tgz"), "/app", &"0".repeat(64));
    t.exec.create(request("bad-sum", bad)).await.unwrap();
    let (failed, reason, _) = outcome(&t, "bad-sum", Duration::from_secs(20)).await;
    assert!(failed && reason.contains("checksum mismatch"), "{reason}");
    // What the unpacker made is gone by the time the action has failed.
    let left = t.dir.join("containers/bad-sum/rootfs/app");
    assert!(!left.exists(), "{} left behind", left.display());
    destroy_clean(&t, "bad-sum").await;
}

#[tokio::test]
async fn a_container_has_its_own_address_loopback_and_default_route() {
    let t = TestExecutor::new();
    let cfg = t.exec.network().config().clone();
    // The cell reaches a server inside through the bridge (the container may not open
    // connections to the cell: see the abuse tests).
    let script =
        "ip -4 addr show eth0 > /tmp/addr; ip link show lo > /tmp/lo; ip route > /tmp/route; \
         echo container says hi | nc -l -p 7070";
    // Another container keeps the bridge up (with none left, the kernel flushes the
    // bridge's neighbours itself).
    t.exec
        .create(request("neighbour", sh("sleep 60")))
        .await
        .unwrap();
    t.exec
        .create(request("netcheck", sh(script)))
        .await
        .unwrap();
    let ip = t.exec.get("netcheck").unwrap().ip();
    let got = {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            use tokio::io::AsyncReadExt as _;
            if let Ok(mut c) = tokio::net::TcpStream::connect((ip, 7070)).await {
                let mut got = String::new();
                let _ = c.read_to_string(&mut got).await;
                break got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no server at {ip}:7070"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(
        got, "container says hi\n",
        "the container's server answered"
    );
    let (failed, reason, _) = outcome(&t, "netcheck", Duration::from_secs(20)).await;
    assert!(!failed, "{reason}");
    let addr = t.exec.read_file("netcheck", "/tmp/addr").await.unwrap();
    assert!(
        addr.contains(&format!("inet {ip}/{}", cfg.prefix)),
        "eth0 should have {ip}/{}: {addr}",
        cfg.prefix
    );
    let lo = t.exec.read_file("netcheck", "/tmp/lo").await.unwrap();
    assert!(lo.contains("UP"), "loopback should be up: {lo}");
    let route = t.exec.read_file("netcheck", "/tmp/route").await.unwrap();
    assert!(
        route.contains(&format!("default via {} dev eth0", cfg.gateway)),
        "the default route should go through the bridge: {route}"
    );
    let neighbours = || {
        let out = std::process::Command::new("ip")
            .args(["neigh", "show", "to", &ip.to_string(), "dev", &cfg.bridge])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        !neighbours().is_empty(),
        "the cell talked to {ip}: it has a neighbour entry"
    );
    destroy_clean(&t, "netcheck").await;
    // The address goes back to the pool: nothing may still point at the old MAC.
    assert_eq!(neighbours(), "", "the neighbour entry of {ip} is gone");
    destroy_clean(&t, "neighbour").await;
}

/// Whether process `pid` has exited (gone, or a zombie waiting to be reaped).
fn process_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[tokio::test]
async fn shims_are_started_ahead_and_delete_their_containers_themselves() {
    let t = TestExecutor::new();
    let destroyed = |e: &ShimEvent| matches!(e, ShimEvent::Destroyed);
    assert_eq!(
        t.exec.spare_shim_pid(),
        None,
        "no shim before any container"
    );
    t.exec
        .create(request("first", run("/bin/true", &[])))
        .await
        .unwrap();
    let spare = t
        .exec
        .spare_shim_pid()
        .expect("a shim started ahead for the next container");
    wait_event(&t.exec, "first", Duration::from_secs(20), destroyed).await;
    // The shim deleted its container (cgroups, libcontainer's state) before reporting
    // it destroyed, without the executor's help.
    let cgroups = lattice_cell::cgroup::existing(&lattice_cell::executor::cgroup_path("first"));
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let state = t.exec.config().data_dir.join("run").join("first");
    assert!(!state.exists(), "libcontainer state left");
    destroy_clean(&t, "first").await;

    // The next container runs in the shim that waited, in the namespace made ahead.
    use std::os::unix::fs::MetadataExt;
    let netns = t
        .exec
        .network()
        .spare_netns()
        .expect("a namespace made ahead");
    let ns_id = std::fs::metadata(&netns).unwrap().ino();
    t.exec
        .create(request("second", sh("sleep 30")))
        .await
        .unwrap();
    wait_event(&t.exec, "second", Duration::from_secs(20), |e| {
        matches!(e, ShimEvent::Created { .. })
    })
    .await;
    assert_eq!(t.exec.shim_pid("second"), Some(spare as i32));
    let second_ns = lattice_cell::network::netns_path("second");
    assert_eq!(std::fs::metadata(&second_ns).unwrap().ino(), ns_id);
    assert!(!netns.exists(), "the spare's old name is left");

    // A spare that died is replaced on the spot: the next container still starts.
    let dead = t.exec.spare_shim_pid().expect("the next spare");
    assert_ne!(dead, spare);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dead as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !process_ended(dead) {
        assert!(
            std::time::Instant::now() < deadline,
            "the spare did not die"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.exec
        .create(request("third", run("/bin/true", &[])))
        .await
        .unwrap();
    wait_event(&t.exec, "third", Duration::from_secs(20), destroyed).await;
    destroy_clean(&t, "second").await;
    destroy_clean(&t, "third").await;

    // Without its executor, the waiting spare exits, and the spare namespace goes.
    let last = t.exec.spare_shim_pid().expect("a spare");
    let netns = t.exec.network().spare_netns().expect("a spare namespace");
    drop(t);
    assert!(!netns.exists(), "the spare namespace outlived its executor");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !process_ended(last) {
        assert!(
            std::time::Instant::now() < deadline,
            "the spare shim outlived its executor"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Creates container `handle`, which must fail once the spare shim has it: that shim
/// gave up (deleted what it created) and exited before create returned. The error.
async fn given_up(t: &TestExecutor, handle: &str) -> String {
    let shim = t.exec.spare_shim_pid().expect("a shim waiting");
    let err = t
        .exec
        .create(request(handle, sh("echo started > /tmp/started")))
        .await
        .expect_err("its network cannot be set up");
    assert!(process_ended(shim), "the shim still runs");
    format!("{err:#}")
}

#[tokio::test]
async fn a_container_whose_network_cannot_be_made_is_given_up_without_leftovers() {
    let t = TestExecutor::new();
    // Its veth's name is taken: connecting the network fails once the shim is already
    // creating the container.
    let (_, veth) = lattice_cell::network::names("unwired");
    struct Taken(String);
    impl Drop for Taken {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.0])
                .status();
        }
    }
    let made = std::process::Command::new("ip")
        .args(["link", "add", &veth, "type", "bridge"])
        .status()
        .unwrap();
    assert!(made.success());
    let taken = Taken(veth.clone());
    t.exec
        .create(request("warm", run("/bin/true", &[])))
        .await
        .unwrap();
    let err = given_up(&t, "unwired").await;
    assert!(err.contains(&veth), "{err}");
    drop(taken);
    let left = leftovers(&t.exec, "unwired");
    assert!(left.is_empty(), "left behind: {left:?}");

    // Its namespace cannot even be made (the name is taken): the shim gives up before
    // creating anything.
    let path = lattice_cell::network::netns_path("unmade");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "").unwrap();
    let err = given_up(&t, "unmade").await;
    let _ = std::fs::remove_file(&path);
    assert!(err.contains("lattice-unmade"), "{err}");
    let left = leftovers(&t.exec, "unmade");
    assert!(left.is_empty(), "left behind: {left:?}");
    destroy_clean(&t, "warm").await;
}

#[test]
fn the_cell_makes_cgroup_moves_cheap_where_the_host_allows() {
    require_root();
    let on = lattice_cell::cgroup::favor_dynamic_changes().unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cgroup2: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(" - cgroup2 "))
        .collect();
    // This project's machines have cgroup2 (at /sys/fs/cgroup/unified, or alone).
    assert!(!cgroup2.is_empty(), "no cgroup2 mount");
    assert!(on);
    assert!(
        cgroup2.iter().any(|l| l.contains("favordynmods")),
        "{cgroup2:?}"
    );
}

#[tokio::test]
async fn a_cell_with_containers_from_before_disk_limits_still_starts() {
    let t = TestExecutor::new();
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("containers/from-before")).unwrap();
    let mut cfg = t.exec.config().clone();
    cfg.data_dir = data.path().to_path_buf();
    cfg.network = test_network();
    let exec = lattice_cell::executor::Executor::new(cfg.clone()).expect("the cell starts");
    assert!(
        !lattice_cell::rootfs::is_mounted(&data.path().join("containers")),
        "nothing is mounted over the containers from before"
    );
    assert!(data.path().join("containers/from-before").exists());
    exec.close();
    destroy_all(cfg);
}
