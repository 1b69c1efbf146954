//! Joining a cluster from the command line: `lattice token create` on the BBS's
//! machine prints a join token ([`TokenCommand`]); `lattice cell|brain|router --join
//! HOST:PORT --token T` ([`JoinArgs`]) makes a key, gets a certificate naming the
//! component from the cluster CA (`lattice_bbs_client::join`), keeps them in its
//! join directory (0600) and runs with mutual TLS on them, renewing the certificate
//! before it expires without a restart. A restart finds the certificate and does not
//! join again (the token was for one use).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use lattice_bbs_client::join::{bbs_identity, join, Credentials};
use lattice_bbs_client::{renew, GrpcBbs};
use lattice_specs::bbs_api::CreateJoinTokenRequest;
use lattice_specs::identity::{Identity, Role};
use lattice_specs::join::{parse_ttl, JoinToken};
use lattice_tls::ca::Ca;
use lattice_tls::client::ClientTls;
use lattice_tls::files::TlsFiles;
use lattice_tls::NodeTls;

use crate::tls::TlsArgs;

/// How long the certificate `lattice token create` makes for itself lives.
const OPERATOR_CERT_VALIDITY: Duration = Duration::from_secs(600);

/// The join flags of `lattice cell`, `lattice brain` and `lattice router`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct JoinArgs {
    /// Join the cluster whose BBS gRPC API is at HOST:PORT with --token: make a key,
    /// get a certificate naming this component from the cluster CA, keep both in
    /// --join-dir and run with mutual TLS on them (renewed before they expire). A
    /// restart reuses them.
    #[arg(
        long,
        env = "LATTICE_JOIN",
        requires = "token",
        value_name = "HOST:PORT"
    )]
    pub join: Option<String>,
    /// The join token from `lattice token create` on the BBS's machine (used once).
    #[arg(long, env = "LATTICE_JOIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where a joined component keeps its key, certificate and the CA's (default: the
    /// cell's DATA/tls, .lattice/brain/tls, .lattice/router/tls).
    #[arg(long, env = "LATTICE_JOIN_DIR")]
    pub join_dir: Option<PathBuf>,
}

/// A component name from this host's name: lower case, other characters as '-'.
pub fn host_name(prefix: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = format!("{prefix}-{}", host.trim_matches('-'));
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

impl JoinArgs {
    /// With `--join`: the files of this `role` component named `name` (default: from
    /// the host's name) in the join directory (`default_dir` unless --join-dir),
    /// joining first if they are not there yet, and `tls` set to them. Without: None,
    /// `tls` untouched.
    pub async fn ensure(
        &self,
        role: Role,
        name: Option<&str>,
        default_dir: &Path,
        tls: &mut TlsArgs,
    ) -> anyhow::Result<Option<TlsFiles>> {
        let Some(addr) = &self.join else {
            return Ok(None);
        };
        let name = name.map_or_else(|| host_name(role.as_str()), String::from);
        let identity = &Identity::new(role, &name).map_err(|e| {
            anyhow::anyhow!("--join: {e} (the {role}'s name names its certificate)")
        })?;
        anyhow::ensure!(
            tls.tls_cert.is_none() && tls.tls_key.is_none() && tls.tls_ca.is_none(),
            "--join makes this component's certificate: leave out --tls-cert/--tls-key/--tls-ca (or --join)"
        );
        let dir = self
            .join_dir
            .clone()
            .unwrap_or_else(|| default_dir.to_path_buf());
        let files = TlsFiles::in_dir(&dir, identity.role.as_str());
        if files.exist() {
            tracing::info!(dir = %dir.display(), "already joined: using the certificate kept there");
        } else {
            let token: JoinToken = self
                .token
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
            let creds = join(addr, &token, identity)
                .await
                .with_context(|| format!("joining the cluster at {addr} as {identity}"))?;
            save(&files, &creds)?;
            tracing::info!(%identity, dir = %dir.display(), "joined the cluster");
        }
        *tls = TlsArgs {
            tls_cert: Some(files.cert.clone()),
            tls_key: Some(files.key.clone()),
            tls_ca: Some(files.ca.clone()),
        };
        Ok(Some(files))
    }
}

/// Writes `creds` into `files` (each 0600, atomically; the directory 0700).
fn save(files: &TlsFiles, creds: &Credentials) -> anyhow::Result<()> {
    if let Some(dir) = files.cert.parent() {
        lattice_tls::ca::ensure_private_dir(dir)?;
    }
    renew::write_private(&files.key, creds.key_pem.as_bytes())?;
    renew::write_private(&files.ca, creds.ca_pem.as_bytes())?;
    renew::write_private(&files.cert, creds.cert_pem.as_bytes())?;
    Ok(())
}

/// Keeps the certificate in `files` renewed by the BBS at `bbs` for as long as the
/// process runs.
pub fn keep_renewed(bbs: &str, files: TlsFiles) -> anyhow::Result<()> {
    let node = NodeTls::from_files(&files)?;
    let identity = node.identity().clone();
    let tls = ClientTls::new(&node, bbs_identity())?;
    let client = lattice_bbs_client::grpc::bbs_client_tls(bbs, Some(&tls))?;
    tokio::spawn(renew::keep_renewed(client, files, identity));
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a join token (printed once; the BBS keeps only its hash) for one cell,
    /// brain or router: `lattice cell --join BBS_HOST:PORT --token TOKEN` on it.
    Create {
        /// cell, brain or router.
        #[arg(long)]
        role: Role,
        /// The only name the joiner may take (a cell's id); default: it chooses.
        #[arg(long)]
        name: Option<String>,
        /// How long the token may be used: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The BBS's gRPC address.
        #[arg(long, env = "LATTICE_BBS", default_value = "127.0.0.1:8889")]
        bbs: String,
        /// `lattice up`'s data directory: its CA (DATA/tls) proves who asks.
        #[arg(long, conflicts_with = "ca_dir")]
        data_dir: Option<PathBuf>,
        /// The CA directory (`lattice ca init --dir`) of a BBS run with --join-ca-dir.
        /// Without it or --data-dir, the BBS is asked over plaintext (loopback only).
        #[arg(long)]
        ca_dir: Option<PathBuf>,
    },
}

/// A gRPC client for the BBS at `bbs`: with a short-lived certificate of the BBS's
/// identity from the CA in `ca_dir`, or plaintext without one.
fn operator_client(bbs: &str, ca_dir: Option<&Path>) -> anyhow::Result<GrpcBbs> {
    let Some(dir) = ca_dir else {
        return Ok(GrpcBbs::connect_lazy(bbs)?);
    };
    let ca =
        Ca::load(dir).with_context(|| format!("loading the cluster CA in {}", dir.display()))?;
    let own = ca.issue_new_key(&bbs_identity(), &[], OPERATOR_CERT_VALIDITY)?;
    let node = NodeTls::from_pem(
        own.cert.cert_pem.as_bytes(),
        own.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    )?;
    let tls = ClientTls::new(&node, bbs_identity())?;
    Ok(GrpcBbs::connect_lazy_tls(bbs, Some(&tls))?)
}

pub async fn run_token(cmd: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create {
        role,
        name,
        ttl,
        bbs,
        data_dir,
        ca_dir,
    } = cmd;
    let ttl = parse_ttl(&ttl).map_err(|e| anyhow::anyhow!("--ttl {e}"))?;
    let ca_dir = ca_dir.or(data_dir.map(|d| d.join("tls")));
    let made = operator_client(&bbs, ca_dir.as_deref())?
        .client()
        .create_join_token(CreateJoinTokenRequest {
            role: role.to_string(),
            name: name.unwrap_or_default(),
            ttl_seconds: ttl.as_secs(),
        })
        .await
        .map_err(lattice_bbs_client::BbsError::from)
        .with_context(|| format!("creating a join token at the BBS {bbs}"))?
        .into_inner();
    let expires =
        chrono::DateTime::from_timestamp_nanos(made.expires_at).format("%Y-%m-%d %H:%M:%S UTC");
    // The token alone on stdout (for scripts); how to use it on stderr.
    println!("{}", made.token);
    eprintln!(
        "lattice token: for one {role}, until {expires}. On the new machine: lattice {role} --join {bbs} --token <the token above>"
    );
    Ok(())
}

/// The join directory of a brain or router unless told (a cell's is its DATA/tls).
pub fn default_dir(role: Role) -> PathBuf {
    PathBuf::from(".lattice").join(role.as_str()).join("tls")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        join: JoinArgs,
        #[command(flatten)]
        tls: TlsArgs,
    }

    #[test]
    fn join_needs_a_token() {
        for var in ["LATTICE_JOIN", "LATTICE_JOIN_TOKEN", "LATTICE_TLS_CERT"] {
            assert!(std::env::var_os(var).is_none(), "{var} is set");
        }
        assert!(Flags::try_parse_from(["x", "--join", "10.0.0.1:8889"]).is_err());
        let f = Flags::try_parse_from(["x", "--join", "10.0.0.1:8889", "--token", "t"]).unwrap();
        assert_eq!(f.join.join.as_deref(), Some("10.0.0.1:8889"));
    }

    #[tokio::test]
    async fn a_bad_token_or_given_certificates_are_refused_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens on port 1 of loopback: a refusal must come before dialing.
        let mut f =
            Flags::try_parse_from(["x", "--join", "127.0.0.1:1", "--token", "K10abc"]).unwrap();
        let e = f
            .join
            .ensure(Role::Cell, Some("cell-a"), dir.path(), &mut f.tls)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--token"), "{e:#}");
        let mut f = Flags::try_parse_from([
            "x",
            "--join",
            "127.0.0.1:1",
            "--token",
            "t",
            "--tls-cert",
            "c.pem",
        ])
        .unwrap();
        let e = f
            .join
            .ensure(Role::Cell, Some("cell-a"), dir.path(), &mut f.tls)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("leave out --tls-cert"), "{e:#}");
        let mut f = Flags::try_parse_from(["x", "--join", "127.0.0.1:1", "--token", "t"]).unwrap();
        let e = f
            .join
            .ensure(Role::Cell, Some("Cell_A"), dir.path(), &mut f.tls)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("names its certificate"), "{e:#}");
        assert!(!dir.path().join("cell.pem").exists(), "nothing written");
    }

    #[test]
    fn a_host_name_makes_a_valid_component_name() {
        let name = host_name("router");
        assert!(name.starts_with("router"), "{name}");
        assert!(Identity::new(Role::Router, &name).is_ok(), "{name}");
    }
}
