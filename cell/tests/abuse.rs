//! Hostile containers, for real (as root): each test performs an attack a container can
//! mount against its cell and checks that the host is untouched and the cell answers.

use std::time::Duration;

use lattice_cell::shim::ShimEvent;
use lattice_cell::testing::*;

async fn finished(t: &TestExecutor, handle: &str) -> (bool, String) {
    match wait_event(&t.exec, handle, Duration::from_secs(30), |e| {
        matches!(e, ShimEvent::Exited { .. })
    })
    .await
    {
        ShimEvent::Exited { failed, reason, .. } => (failed, reason),
        _ => unreachable!(),
    }
}

/// A file (or directory) on the host that a container must never reach, removed on drop.
struct HostSecret(std::path::PathBuf);

impl HostSecret {
    fn file(content: &str) -> HostSecret {
        let p = std::env::temp_dir().join(format!("lattice-secret-{}", uuid::Uuid::new_v4()));
        std::fs::write(&p, content).unwrap();
        HostSecret(p)
    }

    fn dir() -> HostSecret {
        let p = std::env::temp_dir().join(format!("lattice-hostdir-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&p).unwrap();
        HostSecret(p)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for HostSecret {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A shell line making `/tmp/c/NAME1` → … → `/tmp/c/NAME41` → `target`: 41 links,
/// one past the 40 hops path resolution follows.
fn chain(name: &str, target: &str) -> String {
    format!(
        "mkdir -p /tmp/c && cd /tmp/c && i=1; while [ $i -le 40 ]; do \
         ln -s /tmp/c/{name}$((i+1)) {name}$i; i=$((i+1)); done; ln -s {target} {name}41"
    )
}

#[tokio::test]
async fn a_symlink_chain_out_of_the_container_reaches_no_host_file() {
    let secret = HostSecret::file("host-secret-content\n");
    let hostdir = HostSecret::dir();
    let (url, uploaded) = transfer_server(tgz_of(&[("planted", b"planted\n")])).await;
    let t = TestExecutor::new();
    let action = serial(vec![
        sh(&format!(
            "{} && {}",
            chain("l", secret.path()),
            chain("d", hostdir.path())
        )),
        // Each of these must fail inside the container's root, not act on the host.
        try_action(upload("/tmp/c/l1", &format!("{url}/upload"))),
        try_action(download(&format!("{url}/app.tgz"), "/tmp/c/d1/x", "")),
        try_action(download(&format!("{url}/app.tgz"), "/tmp/c/d1", "")),
    ]);
    t.exec.create(request("chain", action)).await.unwrap();
    let (failed, reason) = finished(&t, "chain").await;
    assert!(!failed, "{reason}");

    // The Task's result file: the kernel refuses the chain (ELOOP) inside the root.
    let read = t.exec.read_file("chain", "/tmp/c/l1").await;
    let err = read.expect_err("a 41-link chain must not be followed");
    assert!(
        format!("{err:#}").contains("symbolic links"),
        "the error says why: {err:#}"
    );
    assert!(
        !String::from_utf8_lossy(&uploaded.lock().unwrap()).contains("host-secret"),
        "the upload sent the host's file"
    );
    let planted: Vec<_> = std::fs::read_dir(&hostdir.0).unwrap().collect();
    assert!(
        planted.is_empty(),
        "a download wrote on the host: {planted:?}"
    );
    t.exec.destroy("chain").await;
}

#[tokio::test]
async fn an_absolute_symlink_resolves_inside_the_container() {
    let secret = HostSecret::file("host-secret-content\n");
    let t = TestExecutor::new();
    // A short chain, followed as the container would: to its own file of that name.
    let script = format!(
        "mkdir -p $(dirname {p}) && echo container-content > {p} && ln -s {p} /tmp/result",
        p = secret.path()
    );
    t.exec.create(request("inside", sh(&script))).await.unwrap();
    let (failed, reason) = finished(&t, "inside").await;
    assert!(!failed, "{reason}");
    let got = t.exec.read_file("inside", "/tmp/result").await.unwrap();
    assert_eq!(got, "container-content\n");
    t.exec.destroy("inside").await;
}

#[tokio::test]
async fn a_fifo_as_result_file_is_refused_without_blocking() {
    let t = TestExecutor::new();
    t.exec
        .create(request(
            "fifo",
            sh("mkfifo /tmp/result && mknod /tmp/dev c 1 3"),
        ))
        .await
        .unwrap();
    let (failed, reason) = finished(&t, "fifo").await;
    assert!(!failed, "{reason}");
    for (path, kind) in [("/tmp/result", "a FIFO"), ("/tmp/dev", "a device")] {
        let read = tokio::time::timeout(Duration::from_secs(20), t.exec.read_file("fifo", path))
            .await
            .expect("reading a FIFO must not block");
        let err = read.expect_err("not a regular file");
        assert!(format!("{err:#}").contains(kind), "{err:#}");
    }
    t.exec.destroy("fifo").await;
}

fn try_action(action: lattice_specs::models::Action) -> lattice_specs::models::Action {
    lattice_specs::models::Action {
        action: Some(lattice_specs::models::action::Action::Try(Box::new(
            lattice_specs::models::TryAction {
                action: Some(Box::new(action)),
                ..Default::default()
            },
        ))),
    }
}

/// A listener on the cell's host, on every address, and whether a container got in.
async fn host_listener() -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = reached.clone();
    tokio::spawn(async move {
        while let Ok((_, _)) = listener.accept().await {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (port, reached)
}

#[tokio::test]
async fn containers_cannot_open_connections_to_the_cells_host() {
    let (port, reached) = host_listener().await;
    let t = TestExecutor::new();
    let gw = t.exec.network().config().gateway;
    // The bridge's address, and another address of the host (its loopback is the
    // container's own; the host answers for every local address on any interface).
    let script = format!(
        "for a in {gw} 127.0.0.1; do echo x | timeout 3 nc {gw} {port}; done; \
         echo x | timeout 3 nc $(ip route | awk '/default/ {{print $3}}') {port}; exit 0"
    );
    t.exec
        .create(request("reach-host", sh(&script)))
        .await
        .unwrap();
    let (failed, reason) = finished(&t, "reach-host").await;
    assert!(!failed, "{reason}");
    assert!(
        !reached.load(std::sync::atomic::Ordering::SeqCst),
        "a container connected to a service on the cell's host"
    );
    assert!(lattice_cell::network::firewall::installed(
        &t.exec.network().config().bridge
    ));
    t.exec.destroy("reach-host").await;
    let bridge = t.exec.network().config().bridge.clone();
    drop(t);
    assert!(
        !lattice_cell::network::firewall::installed(&bridge),
        "the firewall table goes with the bridge"
    );
}

#[tokio::test]
async fn published_ports_listen_on_the_cells_address_only() {
    let t = TestExecutor::new();
    let mut req = request("published", sh("echo hi | nc -l -p 8080; sleep 30"));
    req.ports = vec![8080];
    let info = t.exec.create(req).await.unwrap();
    let host_port = info.ports[0].1;
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let wildcard = format!("00000000:{host_port:04X}");
    let loopback = format!("0100007F:{host_port:04X}");
    assert!(
        !listening.contains(&wildcard),
        "port {host_port} listens on every address"
    );
    assert!(
        listening.contains(&loopback),
        "port {host_port} listens on the cell's address"
    );
    t.exec.destroy("published").await;
}

#[tokio::test]
async fn every_process_in_an_unprivileged_container_is_confined() {
    let t = TestExecutor::new();
    // Steps after the first are exec'd into the running container, beside its init.
    let action = serial(vec![
        sh("true"),
        sh("grep Seccomp: /proc/self/status > /tmp/seccomp; \
            grep NoNewPrivs: /proc/self/status > /tmp/nnp; \
            unshare -U -r -m true 2>/dev/null; echo $? > /tmp/unshare"),
    ]);
    t.exec
        .create(request("confined-exec", action))
        .await
        .unwrap();
    let (failed, reason) = finished(&t, "confined-exec").await;
    assert!(!failed, "{reason}");
    let read = |p: &'static str| {
        let exec = t.exec.clone();
        async move { exec.read_file("confined-exec", p).await.unwrap() }
    };
    assert!(
        read("/tmp/seccomp").await.contains("2"),
        "seccomp filter on"
    );
    assert!(read("/tmp/nnp").await.contains("1"), "no_new_privs on");
    assert_ne!(read("/tmp/unshare").await.trim(), "0", "unshare -U refused");
    t.exec.destroy("confined-exec").await;
}

#[tokio::test]
async fn setuid_files_made_in_a_container_are_out_of_host_users_reach() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    let t = TestExecutor::new();
    let script = "cp /bin/busybox /tmp/rootshell && chmod 4755 /tmp/rootshell && sleep 30";
    t.exec.create(request("suid", sh(script))).await.unwrap();
    let file = t.dir.join("containers/suid/rootfs/tmp/rootshell");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no {}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for dir in [t.dir.clone(), t.dir.join("containers")] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", dir.display());
    }
    // The attack: an unprivileged host user runs the setuid file.
    let out = std::process::Command::new(&file)
        .args(["id", "-u"])
        .uid(65534)
        .gid(65534)
        .output();
    match out {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}"),
        Ok(o) => panic!("a host user ran it: {o:?}"),
    }
    t.exec.destroy("suid").await;
}

/// The cell's side of the log socket, and a feed of what arrives for `handle`.
fn listen_logs(
    t: &TestExecutor,
    handle: &str,
) -> (
    lattice_cell::logs::Logs,
    tokio::sync::broadcast::Receiver<lattice_cell::logs::LogMessage>,
    tokio::task::JoinHandle<()>,
) {
    let logs = lattice_cell::logs::Logs::new();
    let feed = logs.buffer.subscribe();
    let task = logs.listen(&t.exec.log_socket()).unwrap();
    logs.register(handle, "guid");
    (logs, feed, task)
}

async fn drain(
    feed: &mut tokio::sync::broadcast::Receiver<lattice_cell::logs::LogMessage>,
    until: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), feed.recv()).await {
            Ok(Ok(m)) => {
                let done = until(&m.message);
                got.push(m.message);
                if done {
                    return got;
                }
            }
            Ok(Err(e)) => panic!("the feed failed after {} lines: {e}", got.len()),
            Err(_) => panic!("no end marker after {} lines", got.len()),
        }
    }
}

#[tokio::test]
async fn every_line_a_chatty_app_writes_reaches_its_log_in_order() {
    let t = TestExecutor::new();
    let (_logs, mut feed, task) = listen_logs(&t, "chatty");
    t.exec
        .create(request("chatty", sh("seq 1 5000; echo done")))
        .await
        .unwrap();
    let got = drain(&mut feed, |m| m == "done").await;
    let want: Vec<String> = (1..=5000)
        .map(|i| i.to_string())
        .chain(["done".to_string()])
        .collect();
    assert_eq!(got.len(), want.len(), "lines lost");
    assert_eq!(got, want);
    task.abort();
    t.exec.destroy("chatty").await;
}

#[tokio::test]
async fn output_without_newlines_and_floods_are_bounded_and_reported() {
    let t = TestExecutor::new();
    let (_logs, mut feed, task) = listen_logs(&t, "flood");
    // 64 MiB in one line (4,096 pieces and an empty line), then 40,000 short lines and
    // 2 more: 44,099 lines in all, far past the rate limit. The shim must stay small,
    // and the log must account for every line: delivered, or counted as dropped.
    let script = "head -c 67108864 /dev/zero | tr '\\0' x; echo; \
                  i=0; while [ $i -lt 20 ]; do seq 1 2000; i=$((i+1)); done; \
                  echo; echo end-of-flood; sleep 30";
    t.exec.create(request("flood", sh(script))).await.unwrap();
    let mut got = Vec::new();
    let mut dropped = 0u64;
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), feed.recv()).await {
        match m.message.split_once(" log line(s) dropped") {
            Some((n, why)) => {
                assert!(why.contains("lines/s"), "the notice says why: {why}");
                dropped += n.trim_start_matches("lattice: ").parse::<u64>().unwrap();
            }
            None => got.push(m.message),
        }
    }
    let shim = t.exec.shim_pid("flood").expect("the shim runs");
    let status = std::fs::read_to_string(format!("/proc/{shim}/status")).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kb < 48 * 1024, "the shim peaked at {peak_kb} kB");
    let longest = got.iter().map(String::len).max().unwrap();
    assert_eq!(
        longest,
        lattice_cell::loglines::MAX_LINE,
        "long lines are cut"
    );
    let total: usize = got.iter().map(String::len).sum();
    assert!(total < 16 << 20, "{total} bytes passed the rate limit");
    assert!(dropped > 0, "the log says lines were dropped");
    assert_eq!(
        got.len() as u64 + dropped,
        44_099,
        "every line accounted for"
    );
    task.abort();
    t.exec.destroy("flood").await;
}

#[tokio::test]
async fn a_container_writes_no_more_than_its_disk_mb() {
    let t = TestExecutor::new();
    // The quota full, not even a new file fits: the evidence is gathered, the big file
    // removed, then the evidence written.
    let mut req = request(
        "disk-hog",
        sh(
            "out=$(dd if=/dev/zero of=/tmp/big bs=1M count=200 2>&1); rc=$?; \
            size=$(stat -c %s /tmp/big); rm -f /tmp/big; sync; \
            echo \"$rc $size $out\" > /tmp/rc",
        ),
    );
    req.disk_mb = 10;
    t.exec.create(req).await.unwrap();
    let (failed, reason) = finished(&t, "disk-hog").await;
    assert!(!failed, "{reason}");
    let rc = t.exec.read_file("disk-hog", "/tmp/rc").await.unwrap();
    let mut f = rc.split_whitespace();
    assert_ne!(f.next(), Some("0"), "dd wrote 200 MB: {rc}");
    let size: u64 = f.next().unwrap().parse().unwrap();
    assert!(
        size <= 10 << 20,
        "{size} bytes written past disk_mb 10: {rc}"
    );
    assert!(rc.contains("quota"), "{rc}");
    t.exec.destroy("disk-hog").await;
    // Its quota's room comes back with it: another container may write its own 10 MB.
    let mut req = request("disk-ok", sh("dd if=/dev/zero of=/tmp/big bs=1M count=8"));
    req.disk_mb = 10;
    t.exec.create(req).await.unwrap();
    let (failed, reason) = finished(&t, "disk-ok").await;
    assert!(!failed, "{reason}");
    t.exec.destroy("disk-ok").await;
}

#[tokio::test]
async fn a_cell_that_stops_with_no_container_leaves_no_bridge_or_mount() {
    let t = TestExecutor::new();
    t.exec.create(request("brief", sh("true"))).await.unwrap();
    let (failed, reason) = finished(&t, "brief").await;
    assert!(!failed, "{reason}");
    t.exec.destroy("brief").await;
    let bridge = t.exec.network().config().bridge.clone();
    let containers = t.dir.join("containers");
    assert!(lattice_cell::rootfs::is_mounted(&containers));
    t.exec.close();
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(&bridge)
            .exists(),
        "the bridge {bridge} is left behind"
    );
    assert!(!lattice_cell::network::firewall::installed(&bridge));
    assert!(
        !lattice_cell::rootfs::is_mounted(&containers),
        "the containers' filesystem is still mounted"
    );
}

/// CPU time (user + system, in clock ticks) process `pid` has used.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn a_log_flood_costs_the_cells_side_a_bounded_share_of_a_core() {
    let t = TestExecutor::new();
    let (_logs, _feed, task) = listen_logs(&t, "yes");
    t.exec.create(request("yes", sh("yes"))).await.unwrap();
    wait_event(&t.exec, "yes", Duration::from_secs(20), |e| {
        matches!(e, ShimEvent::Created { .. })
    })
    .await;
    let shim = t.exec.shim_pid("yes").expect("the shim runs");
    // The shim runs outside the container's cgroup: what it spends reading a flood is
    // the host's. It reads no faster than its pace, however fast `yes` writes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cpu_ticks(shim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let spent = (cpu_ticks(shim) - before) as f64 / 100.0 / 3.0;
    assert!(spent < 0.5, "the shim used {spent:.2} of a core");
    task.abort();
    t.exec.destroy("yes").await;
}
