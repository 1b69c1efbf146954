//! TCP routes end to end: `lattice up`, `ltc create --tcp-route` of a busybox `nc`
//! echo app with 2 instances, connections through the router's TCP port reaching both
//! instances in turn, `ltc status`/`ltc list` showing the route, a second app asking for
//! the same external port refused, and the port closed once the app is removed. Real
//! processes, real containers, real sockets.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lattice_tests::{free_port, wait_for, UpProcess};

/// One connection through the router: the instance's greeting (`iN`) and the echo of
/// a line; None when the connection is refused or closed before both arrive.
fn echo(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"ping\n").ok()?;
    let mut r = BufReader::new(s);
    let (mut greeting, mut line) = (String::new(), String::new());
    r.read_line(&mut greeting).ok()?;
    r.read_line(&mut line).ok()?;
    (line == "ping\n").then(|| greeting.trim().to_string())
}

fn create(up: &UpProcess, app: &str, port: u16, script: &str) -> lattice_tests::LtcOutput {
    // The echo script greets with the instance's index, then echoes.
    let cmd = format!(
        "mkdir -p /srv && printf '#!/bin/sh\\necho i$INSTANCE_INDEX\\nexec cat\\n' > {script} && chmod +x {script} && exec nc -ll -p 9000 -e {script}"
    );
    up.ltc(&[
        "create",
        app,
        "preloaded:busybox",
        "--instances",
        "2",
        "-p",
        "9000",
        "--no-routes",
        "--tcp-route",
        &format!("{port}:9000"),
        "--",
        "sh",
        "-c",
        &cmd,
    ])
}

#[test]
fn a_tcp_echo_app_answers_through_its_route() {
    let up = UpProcess::start();
    up.target();
    let port = free_port();
    let script = format!("/srv/tcp-echo-{}.sh", std::process::id());
    let out = create(&up, "echo", port, &script);
    assert!(out.ok, "{out:#?}");
    assert!(
        out.stdout
            .contains(&format!("tcp://lattice.localhost:{port} -> 9000")),
        "{out:#?}"
    );

    // Both instances answer, in turn.
    let mut seen = BTreeSet::new();
    let started = Instant::now();
    while seen.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {seen:?} answered through port {port}"
        );
        match echo(port) {
            Some(who) => {
                seen.insert(who);
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    assert_eq!(seen, BTreeSet::from(["i0".into(), "i1".into()]));

    let status = up.ltc_ok(&["status", "echo"]);
    assert!(
        status.contains(&format!(
            "TCP routes: tcp://lattice.localhost:{port} -> 9000"
        )),
        "{status}"
    );
    let list = up.ltc_ok(&["list"]);
    assert!(list.contains(&format!("tcp:{port}:9000")), "{list}");

    // Another app asking for the same external port is refused, naming the holder.
    let other = create(&up, "echo2", port, &script);
    assert!(
        !other.ok
            && other
                .stderr
                .contains(&format!("TCP port {port} is already routed to app echo")),
        "{other:#?}"
    );
    assert!(!up.ltc_ok(&["list"]).contains("echo2"));

    // Removed: the port stops answering.
    up.ltc_ok(&["remove", "echo"]);
    wait_for(
        "the TCP port to stop answering",
        Duration::from_secs(30),
        || echo(port).is_none().then_some(()),
    );
}
