//! `ltc` with API tokens against a real `lattice bbs` process: an admin makes a viewer
//! token, its holder logs in and reads but may not manage tokens, a wrong token is
//! refused before it is saved, and a revoked token is refused with what to do.

use std::path::Path;
use std::process::Command;

use lattice_tests::{ltc_bin, BbsProcess};

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `ltc ARGS` with its config in `home`.
fn ltc(home: &Path, args: &[&str]) -> Out {
    let out = Command::new(ltc_bin())
        .args(args)
        .env("LTC_HOME", home)
        .env_remove("LTC_TARGET")
        .env_remove("LTC_TOKEN")
        .output()
        .expect("running ltc");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn ok(home: &Path, args: &[&str]) -> String {
    let out = ltc(home, args);
    assert!(out.ok, "ltc {args:?} failed: {}{}", out.stdout, out.stderr);
    out.stdout
}

#[test]
fn ltc_makes_uses_and_revokes_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    let bbs = BbsProcess::start(
        &format!("file:{}", dir.path().join("bbs.db").display()),
        &["--admin-token-file", token_file.to_str().unwrap()],
    );
    let api = format!("http://{}", bbs.api);
    let (admin, holder, other) = (
        dir.path().join("admin"),
        dir.path().join("holder"),
        dir.path().join("other"),
    );
    // Over loopback without --basic-auth, the admin needs no token.
    ok(&admin, &["target", &api]);
    let made = ok(&admin, &["token", "create", "ci", "--role", "viewer"]);
    let token = made
        .split_whitespace()
        .find(|w| w.starts_with("lat_"))
        .unwrap_or_else(|| panic!("no token in {made}"))
        .to_string();
    assert!(made.contains("Shown this once"), "{made}");

    // Its holder logs in with it: saved with the target, readable by them only.
    ok(&holder, &["target", &api]);
    assert!(ok(&holder, &["login", "--token", &token]).contains("Logged in"));
    let config = holder.join("config.json");
    assert!(std::fs::read_to_string(&config).unwrap().contains(&token));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(ok(&holder, &["list"]).contains("No apps yet"));
    let out = ltc(&holder, &["token", "list"]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("a viewer token may not manage API tokens")
            && out.stderr.contains("(Forbidden)"),
        "{}",
        out.stderr
    );

    // A wrong token is refused and not saved.
    ok(&other, &["target", &api]);
    let out = ltc(&other, &["login", "--token", "lat_wrong"]);
    assert!(
        !out.ok && out.stderr.contains("unknown or revoked token"),
        "{}",
        out.stderr
    );
    assert!(!std::fs::read_to_string(other.join("config.json"))
        .unwrap()
        .contains("lat_wrong"));

    // The admin token `--admin-token-file` made works (readable by its owner only).
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read_to_string(&token_file).unwrap();
    ok(&other, &["target", &api, "--token", first.trim()]);
    assert!(ok(&other, &["token", "list"]).contains("admin"));

    // The admin sees it (never its secret) and revokes it: its holder is refused.
    let list = ok(&admin, &["token", "list"]);
    assert!(
        list.contains("ci") && list.contains("viewer") && !list.contains(&token),
        "{list}"
    );
    assert!(ok(&admin, &["token", "revoke", "ci"]).contains("Revoked token ci."));
    let out = ltc(&holder, &["list"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("unknown or revoked token") && out.stderr.contains("ltc login --token"),
        "{}",
        out.stderr
    );
}
