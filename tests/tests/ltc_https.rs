//! `ltc` and a BBS serving its public API over HTTPS (`lattice bbs --api-tls-cert
//! --api-tls-key`), as real processes (issue 22): the first `ltc target` shows the
//! CA's fingerprint and trusts it only once confirmed (`--ca-fingerprint`, or
//! `--ca-file`; without a terminal it refuses saying how); later calls verify the
//! API against the saved CA, and a server presenting another CA is refused.

use std::path::Path;
use std::process::{Command, Stdio};

use lattice_bbs::test_pki::TestCa;
use lattice_tests::{free_port, ltc_bin, Process};

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn ltc(home: &Path, args: &[&str]) -> Out {
    let out = Command::new(ltc_bin())
        .args(args)
        .env("LTC_HOME", home)
        .env_remove("LTC_TARGET")
        .stdin(Stdio::null())
        .output()
        .expect("running ltc");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// `ltc ARGS` on a terminal (util-linux `script` gives it one), `answer` typed in.
fn ltc_on_terminal(home: &Path, args: &[&str], answer: &str) -> Out {
    use std::io::Write;
    let line = std::iter::once(ltc_bin().to_str().unwrap().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("LTC_HOME", home)
        .env_remove("LTC_TARGET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running script (util-linux) for a terminal");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// `lattice bbs` serving its API at `api` over HTTPS with a certificate from `ca`.
fn bbs(dir: &Path, ca: &TestCa, api: &str) -> Process {
    let certs = dir.join(ca.fingerprint());
    std::fs::create_dir_all(&certs).unwrap();
    let (cert, key) = ca.server(&["localhost", "127.0.0.1"]).write(&certs);
    let args = [
        "bbs",
        "--store",
        &format!("file:{}", dir.join("bbs.db").display()),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--api-listen",
        api,
        "--api-tls-cert",
        cert.to_str().unwrap(),
        "--api-tls-key",
        key.to_str().unwrap(),
    ];
    Process::start(
        args.iter().map(|s| s.to_string()).collect(),
        "lattice bbs ready",
    )
}

/// `AB:CD:…`, as openssl prints a fingerprint.
fn openssl_style(fp: &str) -> String {
    let pairs: Vec<String> = fp
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    format!("sha256 Fingerprint={}", pairs.join(":"))
}

#[test]
fn ltc_trusts_the_api_ca_once_confirmed_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("ltc");
    let config = home.join("config.json");
    let ca = TestCa::new("cluster CA");
    let api = format!("127.0.0.1:{}", free_port());
    let mut server = bbs(dir.path(), &ca, &api);
    let url = format!("https://{api}");
    let fp = ca.fingerprint();

    // No terminal, no fingerprint: refused, saying what the fingerprint is and how
    // to confirm it.
    let out = ltc(&home, &["target", &url]);
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr.contains(&fp)
            && out
                .stderr
                .contains(&format!("ltc target {url} --ca-fingerprint {fp}")),
        "{}",
        out.stderr
    );
    assert!(!config.exists(), "nothing saved");

    // On a terminal, the user is asked: "no" saves nothing, "yes" trusts it.
    let out = ltc_on_terminal(&home, &["target", &url], "no\n");
    assert!(!out.ok && out.stdout.contains(&fp), "{}", out.stdout);
    assert!(out.stdout.contains("not trusted"), "{}", out.stdout);
    assert!(!config.exists(), "nothing saved");
    let asked_home = dir.path().join("asked");
    let out = ltc_on_terminal(&asked_home, &["target", &url], "yes\n");
    assert!(
        out.ok && out.stdout.contains("Target set to"),
        "{}",
        out.stdout
    );
    assert!(ltc(&asked_home, &["list"]).ok);

    // A fingerprint that is not the CA's: refused, nothing saved.
    let wrong = TestCa::new("someone else").fingerprint();
    let out = ltc(&home, &["target", &url, "--ca-fingerprint", &wrong]);
    assert!(!out.ok && out.stderr.contains(&wrong), "{}", out.stderr);
    assert!(!config.exists(), "nothing saved");

    // The right one (as openssl prints it): trusted and saved, owner-only.
    let out = ltc(
        &home,
        &["target", &url, "--ca-fingerprint", &openssl_style(&fp)],
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("Target set to"), "{}", out.stdout);
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(saved.contains("BEGIN CERTIFICATE"), "{saved}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&config.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let out = ltc(&home, &["target"]);
    assert!(out.stdout.contains(&fp), "{}", out.stdout);

    // A later call verifies against the saved CA.
    let out = ltc(&home, &["list"]);
    assert!(out.ok, "{}", out.stderr);

    // The same address now presents a certificate from another CA: refused before
    // anything is sent, saying what to do.
    server.kill();
    let other = TestCa::new("another CA");
    let _server = bbs(dir.path(), &other, &api);
    let out = ltc(&home, &["list"]);
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr.contains("did not sign")
            && out.stderr.contains(&fp)
            && out.stderr.contains(&format!("ltc target {url}")),
        "{}",
        out.stderr
    );

    // Re-targeting without a terminal is refused too (the new CA is not confirmed),
    // and leaves the old trust in place.
    let out = ltc(&home, &["target", &url]);
    assert!(
        !out.ok && out.stderr.contains(&other.fingerprint()),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), saved);

    // Given as a file, the new CA is trusted without asking.
    let ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&ca_file, &other.pem).unwrap();
    let out = ltc(
        &home,
        &["target", &url, "--ca-file", ca_file.to_str().unwrap()],
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(ltc(&home, &["list"]).ok);
}
