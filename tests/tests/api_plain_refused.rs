//! `lattice bbs` with its public API beyond loopback and no TLS at all refuses to
//! start, saying what to give; `--api-insecure-http` lets it past that check. (The
//! address is TEST-NET's, on no interface here: nothing ever listens beyond loopback.)

use std::process::Command;

use lattice_tests::{free_port, lattice_bin};

fn bbs(extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(lattice_bin())
        .args([
            "bbs",
            "--store",
            &format!("file:{}", dir.path().join("bbs.db").display()),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--api-listen",
            "192.0.2.1:8888",
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_plain_api_beyond_loopback_refuses_to_start_unless_told() {
    let (ok, err) = bbs(&[]);
    assert!(!ok);
    assert!(
        err.contains("refusing to serve the public API over plain HTTP on 192.0.2.1:8888")
            && err.contains("--api-tls-cert")
            && err.contains("--api-insecure-http"),
        "{err}"
    );
    // Told: past the check, it fails only where an address not on this machine must.
    let (ok, err) = bbs(&["--api-insecure-http"]);
    assert!(!ok);
    assert!(
        !err.contains("refusing") && err.contains("binding the API listener 192.0.2.1:8888"),
        "{err}"
    );
}
