use super::*;
use lattice_specs::identity::Role;
use std::os::unix::fs::PermissionsExt;

fn cell(name: &str) -> Identity {
    Identity::new(Role::Cell, name).unwrap()
}

fn sans_of(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
            x509_parser::extensions::GeneralName::IPAddress(b) => format!("ip:{b:?}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_ca_is_saved_with_a_private_key_and_loads_back_with_the_same_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("tls");
    let ca = Ca::init(&d).unwrap();
    assert_eq!(ca.fingerprint().len(), 64);
    let mode = |p: &str| fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(CA_KEY_FILE), 0o600);
    assert_eq!(
        fs::metadata(&d).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let again = Ca::load(&d).unwrap();
    assert_eq!(again.fingerprint(), ca.fingerprint());
    assert_eq!(fingerprint_pem(again.cert_pem()), Some(ca.fingerprint()));
    assert!(matches!(Ca::init(&d), Err(CaError::AlreadyExists { .. })));
    let (loaded, created) = Ca::load_or_init(&d).unwrap();
    assert!(!created);
    assert_eq!(loaded.fingerprint(), ca.fingerprint());
    // A certificate issued by the loaded CA chains to the saved one.
    let leaf = loaded
        .issue_new_key(&cell("a"), &[], DEFAULT_LEAF_VALIDITY)
        .unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf.cert.cert_der).unwrap();
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    parsed.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert_eq!(parsed.issuer(), ca_cert.subject());
}

#[test]
fn a_key_from_another_ca_is_refused_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    Ca::init(&a).unwrap();
    Ca::init(&b).unwrap();
    fs::copy(b.join(CA_KEY_FILE), a.join(CA_KEY_FILE)).unwrap();
    let e = Ca::load(&a).unwrap_err().to_string();
    assert!(e.contains("does not belong"), "{e}");
    let e = Ca::load(&dir.path().join("none")).unwrap_err().to_string();
    assert!(e.contains("ca.pem"), "{e}");
}

#[test]
fn a_csr_gets_the_identity_name_and_extra_sans_not_what_it_asked_for() {
    let ca = Ca::generate().unwrap();
    let key = KeyPair::generate().unwrap();
    let csr = CertificateParams::new(vec!["bbs.bbs.lattice".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let sans = vec!["10.0.0.7".to_string(), "host-7.example".to_string()];
    let week = Duration::from_secs(7 * 24 * 3600);
    let from_der = ca
        .issue(&cell("cell-a"), SubjectKey::CsrDer(csr.der()), &sans, week)
        .unwrap();
    let pem = csr.pem().unwrap();
    let from_pem = ca
        .issue(&cell("cell-a"), SubjectKey::CsrPem(&pem), &sans, week)
        .unwrap();
    for issued in [&from_der, &from_pem] {
        assert_eq!(
            sans_of(&issued.cert_der),
            vec!["cell-a.cell.lattice", "ip:[10, 0, 0, 7]", "host-7.example"]
        );
        let (_, parsed) = x509_parser::parse_x509_certificate(&issued.cert_der).unwrap();
        assert_eq!(
            parsed.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
        assert!(!parsed.is_ca());
        let life = issued.not_after.duration_since(issued.not_before).unwrap();
        assert_eq!(life, week + CLOCK_SKEW_ALLOWANCE);
        assert!(issued.not_before < SystemTime::now() - Duration::from_secs(60));
    }
    let pk = ca
        .issue(
            &cell("b"),
            SubjectKey::PublicKeyPem(&key.public_key_pem()),
            &[],
            week,
        )
        .unwrap();
    assert_eq!(sans_of(&pk.cert_der), vec!["b.cell.lattice"]);
}

#[test]
fn bad_requests_are_refused_naming_what_is_wrong() {
    let ca = Ca::generate().unwrap();
    let day = Duration::from_secs(86400);
    let e = ca
        .issue(&cell("a"), SubjectKey::CsrDer(b"junk"), &[], day)
        .unwrap_err();
    assert!(matches!(e, CaError::BadRequest(_)), "{e}");
    let e = ca
        .issue(&cell("a"), SubjectKey::CsrPem("junk"), &[], day)
        .unwrap_err();
    assert!(matches!(e, CaError::BadRequest(_)), "{e}");
    let e = ca
        .issue(&cell("a"), SubjectKey::PublicKeyDer(b"junk"), &[], day)
        .unwrap_err();
    assert!(matches!(e, CaError::BadPublicKey(_)), "{e}");
    let e = ca
        .issue_new_key(&cell("a"), &["not a host!".to_string()], day)
        .unwrap_err();
    assert!(e.to_string().contains("not a host!"), "{e}");
    let e = ca
        .issue_new_key(&cell("a"), &[], Duration::from_secs(5))
        .unwrap_err();
    assert!(matches!(e, CaError::BadValidity(_)), "{e}");
    // A CSR whose signature does not match its key.
    let key = KeyPair::generate().unwrap();
    let mut der = CertificateParams::new(vec![])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    let last = der.len() - 1;
    der[last] ^= 0xff;
    let e = ca
        .issue(&cell("a"), SubjectKey::CsrDer(&der), &[], day)
        .unwrap_err();
    assert!(matches!(e, CaError::BadRequest(_)), "{e}");
}
