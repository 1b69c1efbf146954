//! The multi-host harness's PKI: a cluster CA in the test's temp dir, a certificate
//! for each component (issued with the library, as `lattice ca issue` would) given to
//! it with `--tls-cert/--tls-key/--tls-ca`, and the test's own clients: to the BBS
//! and to the reps, as the BBS's identity (the one allowed everything).

use std::time::Duration;

use lattice_specs::identity::{Identity, Role};
use lattice_tls::ca::Ca;
use lattice_tls::client::ClientTls;
use lattice_tls::files::TlsFiles;
use lattice_tls::NodeTls;

pub struct TestPki {
    ca: Ca,
    /// The test's own certificate.
    harness: NodeTls,
    dir: tempfile::TempDir,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(&dir.path().join("ca")).unwrap();
        Self::with(ca, dir)
    }

    /// The CA already in `ca_dir` (`lattice up`'s `DATA/tls`), for components
    /// joining a cluster the test did not make the CA of.
    pub fn of(ca_dir: &std::path::Path) -> TestPki {
        let ca = Ca::load(ca_dir).unwrap();
        Self::with(ca, tempfile::tempdir().unwrap())
    }

    fn with(ca: Ca, dir: tempfile::TempDir) -> TestPki {
        let k = ca
            .issue_new_key(
                &lattice_tls::bbs_identity(),
                &[],
                Duration::from_secs(86400),
            )
            .unwrap();
        let harness = NodeTls::from_pem(
            k.cert.cert_pem.as_bytes(),
            k.key_pem.as_bytes(),
            ca.cert_pem().as_bytes(),
        )
        .unwrap();
        TestPki { ca, harness, dir }
    }

    /// Issues a certificate for `role` `name` into the temp dir and returns the flags
    /// that give it to a component.
    pub fn flags(&self, role: Role, name: &str) -> Vec<String> {
        self.flags_naming(role, name, &[])
    }

    /// [`TestPki::flags`] for a certificate naming `sans` too (host names or IP
    /// addresses clients dial it by: the BBS's public API).
    pub fn flags_naming(&self, role: Role, name: &str, sans: &[String]) -> Vec<String> {
        let id = Identity::new(role, name).unwrap();
        let files = TlsFiles::in_dir(self.dir.path(), &format!("{role}-{name}"));
        let issued = self
            .ca
            .issue_new_key(&id, sans, Duration::from_secs(86400))
            .unwrap();
        files.write(&issued, self.ca.cert_pem()).unwrap();
        vec![
            format!("--tls-cert={}", files.cert.display()),
            format!("--tls-key={}", files.key.display()),
            format!("--tls-ca={}", files.ca.display()),
        ]
    }

    /// The test's client TLS to the BBS.
    pub fn to_bbs(&self) -> ClientTls {
        ClientTls::new(&self.harness, lattice_tls::bbs_identity()).unwrap()
    }

    /// How the test calls the BBS's public API over HTTPS, as `ltc` does once it
    /// trusts the cluster CA: the server's certificate from the CA, naming the host
    /// (or address) dialled.
    pub fn to_api(&self) -> std::sync::Arc<rustls::ClientConfig> {
        let roots = lattice_tls::config::roots(self.ca.cert_pem().as_bytes()).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(lattice_tls::config::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        std::sync::Arc::new(cfg)
    }

    /// The test's HTTPS client to the reps (by address: any cell's certificate).
    pub fn to_reps(&self) -> reqwest::Client {
        let cfg = self.harness.client_config_for_role(Role::Cell).unwrap();
        reqwest::Client::builder()
            .tls_backend_preconfigured((*cfg).clone())
            .build()
            .unwrap()
    }
}
