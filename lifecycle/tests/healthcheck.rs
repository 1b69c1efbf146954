//! The `healthcheck` binary as Diego's monitor runs it, against real listeners on
//! this host's addresses (it probes every non-loopback IPv4 address, as inside a
//! container): a TCP port that listens passes, a closed one fails, an HTTP server
//! answering 200 passes, 500 fails, and bad flags exit 2.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

fn healthcheck(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_healthcheck"))
        .args(args)
        .output()
        .expect("running healthcheck");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The host must have an address the check can use (as a container has its own).
fn require_an_address() {
    let addrs = lattice_lifecycle::healthcheck::interface_addrs().unwrap();
    assert!(
        !lattice_lifecycle::healthcheck::targets(&addrs).is_empty(),
        "this host has no non-loopback IPv4 address for healthcheck to probe: {addrs:?}"
    );
}

/// An HTTP server on every address answering `status` to each request (and
/// recording the request lines) until the test ends.
fn http_server(status: &'static str) -> (u16, std::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut line = String::new();
            let mut r = BufReader::new(c.try_clone().unwrap());
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let _ = tx.send(line.trim_end().to_string());
            // The rest of the head.
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    (port, rx)
}

#[test]
fn a_listening_port_passes_and_a_closed_one_fails() {
    require_an_address();
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let (code, out, _) = healthcheck(&["-timeout", "1s", "-port", &port]);
    assert_eq!((code, out.as_str()), (0, "healthcheck passed\n"));
    let (code, out, _) = healthcheck(&["-timeout=1s", "--port", &port]);
    assert_eq!((code, out.as_str()), (0, "healthcheck passed\n"));
    drop(l);
    let (code, out, _) = healthcheck(&["-timeout", "1s", "-port", &port]);
    assert_eq!((code, out.as_str()), (1, "healthcheck failed\n"));
}

#[test]
fn a_port_on_loopback_only_fails() {
    require_an_address();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let (code, out, _) = healthcheck(&["-port", &port]);
    assert_eq!((code, out.as_str()), (1, "healthcheck failed\n"));
}

#[test]
fn uri_passes_on_200_only() {
    require_an_address();
    let (ok_port, requests) = http_server("200 OK");
    let (code, out, _) = healthcheck(&[
        "-timeout",
        "5s",
        "-port",
        &ok_port.to_string(),
        "-uri",
        "/health",
    ]);
    assert_eq!((code, out.as_str()), (0, "healthcheck passed\n"));
    assert_eq!(requests.recv().unwrap(), "GET /health HTTP/1.1");
    let (bad_port, _) = http_server("500 Internal Server Error");
    let (code, out, _) = healthcheck(&["-port", &bad_port.to_string(), "-uri", "/health"]);
    assert_eq!((code, out.as_str()), (1, "healthcheck failed\n"));
    // A TCP listener that is no HTTP server fails an HTTP check.
    let silent = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let (code, _, _) = healthcheck(&["-timeout", "300ms", "-port", &port, "-uri", "/"]);
    assert_eq!(code, 1);
}

#[test]
fn bad_flags_exit_2_with_usage() {
    let (code, out, err) = healthcheck(&["-bogus"]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("flag provided but not defined: -bogus"),
        "{err}"
    );
    assert!(err.contains("Usage of healthcheck"), "{err}");
    let (code, _, err) = healthcheck(&["-timeout", "soon"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = healthcheck(&["-port"]);
    assert_eq!(code, 2);
}
