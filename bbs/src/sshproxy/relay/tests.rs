use super::*;
use lattice_specs::models::{ActualLrpInstanceKey, ActualLrpNetInfo, PortMapping};
use russh::keys::PrivateKey;

fn routes(v: serde_json::Value) -> HashMap<String, String> {
    [(DIEGO_SSH_KEY.to_string(), v.to_string())].into()
}

#[test]
fn the_diego_ssh_route_is_read_as_ltc_writes_it() {
    let r = sshd_route(&routes(serde_json::json!({
        "container_port": 2222,
        "private_key": "-----BEGIN RSA PRIVATE KEY-----\n...",
    })))
    .unwrap()
    .unwrap();
    assert_eq!(r.container_port, 2222);
    assert!(r.private_key.starts_with("-----BEGIN"));
    assert_eq!(r.host_fingerprint, None);
    assert_eq!(
        sshd_route(&HashMap::new()),
        Ok(None),
        "no route: the exec path"
    );
    let with_fp = sshd_route(&routes(serde_json::json!({
        "container_port": 2222, "private_key": "k", "host_fingerprint": "aa:bb"
    })))
    .unwrap()
    .unwrap();
    assert_eq!(with_fp.host_fingerprint.as_deref(), Some("aa:bb"));
    for (bad, why) in [
        (serde_json::json!({"private_key": "k"}), "container_port"),
        (
            serde_json::json!({"container_port": 70000, "private_key": "k"}),
            "container_port",
        ),
        (serde_json::json!({"container_port": 2222}), "private_key"),
        (
            serde_json::json!({"container_port": 2222, "private_key": " "}),
            "private_key",
        ),
    ] {
        let e = sshd_route(&routes(bad.clone())).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
    let not_json: HashMap<String, String> = [(DIEGO_SSH_KEY.into(), "{".into())].into();
    assert!(sshd_route(&not_json).unwrap_err().contains("not JSON"));
}

fn record(guid: &str, state: State, ports: &[(u32, u32)]) -> ActualLrp {
    let mut a = ActualLrp {
        instance_key: Some(ActualLrpInstanceKey {
            instance_guid: guid.into(),
            cell_id: "cell-1".into(),
        }),
        net_info: Some(ActualLrpNetInfo {
            address: "10.0.0.7".into(),
            ports: ports
                .iter()
                .map(|(c, h)| PortMapping {
                    container_port: *c,
                    host_port: *h,
                })
                .collect(),
            instance_address: "10.255.0.3".into(),
        }),
        ..Default::default()
    };
    a.set_state(state);
    a
}

#[test]
fn the_sshd_is_reached_at_the_cells_address_and_the_host_port() {
    let records = [
        record("old", State::Crashed, &[(2222, 61000)]),
        record("i1", State::Running, &[(8080, 61001), (2222, 61002)]),
    ];
    assert_eq!(
        sshd_addr(&records, "i1", 2222),
        Some("10.0.0.7:61002".parse().unwrap())
    );
    assert_eq!(sshd_addr(&records, "i1", 9999), None, "no such port");
    assert_eq!(sshd_addr(&records, "old", 2222), None, "not running");
    assert_eq!(sshd_addr(&records, "nope", 2222), None);
}

#[test]
fn fingerprints_match_as_ssh_keygen_prints_them() {
    let key = PrivateKey::random(
        &mut russh::keys::key::safe_rng(),
        russh::keys::Algorithm::Ed25519,
    )
    .unwrap();
    let public = key.public_key().clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.pub");
    std::fs::write(&file, public.to_openssh().unwrap()).unwrap();
    let keygen = |hash: &str| -> String {
        let out = std::process::Command::new("ssh-keygen")
            .args(["-l", "-E", hash, "-f"])
            .arg(&file)
            .output()
            .expect("ssh-keygen (openssh-client: scripts/setup.sh installs it)");
        assert!(out.status.success());
        // "256 MD5:aa:bb:… no comment (ED25519)"
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let md5 = keygen("md5");
    let md5 = md5.strip_prefix("MD5:").unwrap();
    assert!(fingerprint_matches(md5, &public), "{md5}");
    assert!(fingerprint_matches(&md5.to_uppercase(), &public));
    let sha256 = keygen("sha256");
    assert!(fingerprint_matches(&sha256, &public), "{sha256}");

    let other = PrivateKey::random(
        &mut russh::keys::key::safe_rng(),
        russh::keys::Algorithm::Ed25519,
    )
    .unwrap();
    assert!(!fingerprint_matches(md5, other.public_key()));
    assert!(!fingerprint_matches(&sha256, other.public_key()));
    assert!(!fingerprint_matches("not a fingerprint", &public));
}
