//! TLS for `lattice`: every component's `--tls-cert/--tls-key/--tls-ca` flags
//! ([`TlsArgs`]), `lattice ca init|issue` (the cluster CA offline), and the
//! certificates `lattice up` makes for itself in DATA/tls on first start.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use lattice_specs::identity::{Identity, Role};
use lattice_tls::ca::{Ca, DEFAULT_LEAF_VALIDITY};
use lattice_tls::files::TlsFiles;
use lattice_tls::NodeTls;

/// A component's certificate for mutual TLS on every internal connection.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// This component's certificate (PEM) from the cluster CA (`lattice ca issue`);
    /// with --tls-key and --tls-ca every internal connection is mutual TLS. Without
    /// them, internal listeners must be on loopback. A renewed file is picked up
    /// without restart.
    #[arg(long, env = "LATTICE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM, PKCS#8).
    #[arg(long, env = "LATTICE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA's certificate (PEM): peers must have certificates from it.
    #[arg(long, env = "LATTICE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The flags for these files (what `lattice up` passes its components).
    pub fn flags(files: &TlsFiles) -> Vec<String> {
        vec![
            format!("--tls-cert={}", files.cert.display()),
            format!("--tls-key={}", files.key.display()),
            format!("--tls-ca={}", files.ca.display()),
        ]
    }

    /// The component's TLS material (None without the flags), its certificate
    /// checked to name an identity of `role`.
    pub fn node(&self, role: Role) -> anyhow::Result<Option<NodeTls>> {
        let (cert, key, ca) = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => return Ok(None),
            (Some(c), Some(k), Some(a)) => (c, k, a),
            _ => anyhow::bail!(
                "--tls-cert, --tls-key and --tls-ca go together: give all three (or none, on loopback)"
            ),
        };
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        };
        let node = NodeTls::from_files(&files)
            .with_context(|| format!("loading --tls-cert {}", cert.display()))?;
        anyhow::ensure!(
            node.identity().role == role,
            "--tls-cert {} is for {}, not a {role}: issue one with `lattice ca issue --role {role}`",
            cert.display(),
            node.identity()
        );
        Ok(Some(node))
    }
}

#[derive(clap::Subcommand)]
pub enum CaCommand {
    /// Create the cluster CA in DIR (ca.pem, ca.key with mode 0600); prints its
    /// SHA-256 fingerprint.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a certificate for a component with the CA in DIR: PREFIX.pem and
    /// PREFIX.key (0600), naming NAME.ROLE.lattice.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// bbs, brain, cell or router.
        #[arg(long)]
        role: Role,
        /// The component's name: a cell's id, a brain's or router's name, `bbs`.
        #[arg(long)]
        name: String,
        /// Where to write: PREFIX.pem and PREFIX.key.
        #[arg(long)]
        out: PathBuf,
        /// Another host name or IP address clients may dial it by (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
}

pub fn run_ca(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Init { dir } => {
            let ca = Ca::init(&dir)?;
            println!(
                "lattice ca: created {} fingerprint={}",
                dir.join(lattice_tls::ca::CA_CERT_FILE).display(),
                ca.fingerprint()
            );
        }
        CaCommand::Issue {
            dir,
            role,
            name,
            out,
            sans,
            days,
        } => {
            anyhow::ensure!(days >= 1, "--days must be at least 1");
            let identity =
                Identity::new(role, &name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let ca = Ca::load(&dir)
                .with_context(|| format!("loading the CA in --dir {}", dir.display()))?;
            let issued = ca.issue_new_key(&identity, &sans, Duration::from_secs(days * 86400))?;
            let files = prefixed(&out, &dir);
            files.write(&issued, ca.cert_pem())?;
            println!(
                "lattice ca: issued {} and {} for {} ({}), valid {days} days",
                files.cert.display(),
                files.key.display(),
                identity,
                identity.dns_name(),
            );
        }
    }
    Ok(())
}

/// PREFIX.pem, PREFIX.key and the CA's ca.pem in `ca_dir`.
fn prefixed(prefix: &Path, ca_dir: &Path) -> TlsFiles {
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    TlsFiles {
        cert: with(".pem"),
        key: with(".key"),
        ca: ca_dir.join(lattice_tls::ca::CA_CERT_FILE),
    }
}

/// `lattice up`'s certificates in `dir`: the CA (created on first start) and one
/// certificate per component identity, issued when missing, naming someone else, or
/// past two thirds of its life. Returns each identity's files, in order.
pub fn up_certificates(dir: &Path, identities: &[Identity]) -> anyhow::Result<Vec<TlsFiles>> {
    let (ca, created) =
        Ca::load_or_init(dir).with_context(|| format!("the cluster CA in {}", dir.display()))?;
    if created {
        tracing::info!(fingerprint = %ca.fingerprint(), "lattice up: created the cluster CA");
    }
    identities
        .iter()
        .map(|id| {
            let files = TlsFiles::in_dir(dir, &format!("{}-{}", id.role, id.name));
            if created || !usable(&files, id) {
                let issued = ca.issue_new_key(id, &[], DEFAULT_LEAF_VALIDITY)?;
                files.write(&issued, ca.cert_pem())?;
            }
            Ok(files)
        })
        .collect()
}

/// Whether `files` hold a certificate for `id` with more than a third of its life left.
fn usable(files: &TlsFiles, id: &Identity) -> bool {
    let Ok(pem) = std::fs::read(&files.cert) else {
        return false;
    };
    let Ok((ck, found)) =
        lattice_tls::files::certified_key(&pem, &std::fs::read(&files.key).unwrap_or_default())
    else {
        return false;
    };
    let Ok(not_after) = lattice_tls::peer::not_after(&ck.cert[0]) else {
        return false;
    };
    let left = not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    found == *id && left > DEFAULT_LEAF_VALIDITY / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(cell: &str) -> Vec<Identity> {
        vec![
            Identity::new(Role::Bbs, "bbs").unwrap(),
            Identity::new(Role::Cell, cell).unwrap(),
        ]
    }

    #[test]
    fn up_makes_its_ca_once_and_reissues_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("tls");
        let began = std::time::Instant::now();
        let mut four = ids("cell-a");
        four.push(Identity::new(Role::Router, "router").unwrap());
        four.push(Identity::new(Role::Brain, "brain").unwrap());
        let first = up_certificates(&d, &four).unwrap();
        let took = began.elapsed();
        // The first start's budget is 0.5 s in all; the certificates take milliseconds.
        eprintln!("CA + 4 certificates written in {took:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");
        let fp = Ca::load(&d).unwrap().fingerprint();
        let bbs_pem = std::fs::read(&first[0].cert).unwrap();
        let again = up_certificates(&d, &ids("cell-b")).unwrap();
        assert_eq!(Ca::load(&d).unwrap().fingerprint(), fp, "the CA is kept");
        assert_eq!(std::fs::read(&again[0].cert).unwrap(), bbs_pem, "kept");
        let cell = TlsArgs {
            tls_cert: Some(again[1].cert.clone()),
            tls_key: Some(again[1].key.clone()),
            tls_ca: Some(again[1].ca.clone()),
        };
        let node = cell.node(Role::Cell).unwrap().unwrap();
        assert_eq!(node.identity().name, "cell-b");
        let e = cell.node(Role::Brain).unwrap_err().to_string();
        assert!(
            e.contains("not a brain") && e.contains("--role brain"),
            "{e}"
        );
        let partial = TlsArgs {
            tls_ca: None,
            ..cell
        };
        let e = partial.node(Role::Cell).unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");
        assert!(TlsArgs::default().node(Role::Cell).unwrap().is_none());
    }

    #[test]
    fn ca_issue_writes_a_certificate_and_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        run_ca(CaCommand::Init {
            dir: ca_dir.clone(),
        })
        .unwrap();
        let out = dir.path().join("cell-7");
        run_ca(CaCommand::Issue {
            dir: ca_dir.clone(),
            role: Role::Cell,
            name: "cell-7".into(),
            out: out.clone(),
            sans: vec!["10.0.0.7".into()],
            days: 30,
        })
        .unwrap();
        let files = prefixed(&out, &ca_dir);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let node = NodeTls::from_files(&files).unwrap();
        assert_eq!(node.identity().dns_name(), "cell-7.cell.lattice");
        let bad = run_ca(CaCommand::Issue {
            dir: ca_dir,
            role: Role::Cell,
            name: "Cell_7".into(),
            out,
            sans: vec![],
            days: 30,
        });
        assert!(bad.unwrap_err().to_string().contains("--name"));
    }
}
