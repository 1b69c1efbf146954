//! The router's HTTPS flags (`lattice router` and `lattice up` take them alike):
//! where to serve HTTPS, the apps' certificates, and whether plain HTTP is
//! redirected.

use std::net::SocketAddr;
use std::path::PathBuf;

use lattice_router::tls::{self, HttpsConfig, Terminator};

#[derive(clap::Args, Clone, Default)]
pub struct HttpsArgs {
    /// Serve the apps over HTTPS here too (e.g. 0.0.0.0:443), with the certificates of
    /// --https-cert-dir / --https-cert, each chosen by the name the client asks for.
    #[arg(long, env = "LATTICE_ROUTER_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,
    /// A directory of the apps' certificates: NAME.crt + NAME.key pairs (PEM), or
    /// NAME/fullchain.pem + NAME/privkey.pem (certbot's live/ directory). Repeatable.
    #[arg(long, alias = "tls-cert-dir", value_name = "DIR")]
    pub https_cert_dir: Vec<PathBuf>,
    /// One certificate chain and its key, as CERT,KEY (PEM files). Repeatable.
    #[arg(long, value_name = "CERT,KEY")]
    pub https_cert: Vec<String>,
    /// Answer plain HTTP with a 308 redirect to the same URL over HTTPS.
    #[arg(long, env = "LATTICE_ROUTER_REDIRECT_HTTP", requires = "https_listen")]
    pub redirect_http: bool,
}

impl HttpsArgs {
    /// The HTTPS configuration these flags ask for (none without --https-listen),
    /// the certificates read and checked.
    pub fn config(&self) -> anyhow::Result<Option<HttpsConfig>> {
        let has_certs = !self.https_cert_dir.is_empty() || !self.https_cert.is_empty();
        let Some(listen) = self.https_listen else {
            anyhow::ensure!(
                !has_certs,
                "--https-cert-dir / --https-cert are for HTTPS: add --https-listen ADDR (e.g. 0.0.0.0:443)"
            );
            return Ok(None);
        };
        anyhow::ensure!(
            has_certs,
            "--https-listen {listen} needs the apps' certificates: --https-cert-dir DIR or --https-cert CERT,KEY"
        );
        let pairs = self
            .https_cert
            .iter()
            .map(|p| match p.split_once(',') {
                Some((cert, key)) if !cert.is_empty() && !key.is_empty() => {
                    Ok((PathBuf::from(cert), PathBuf::from(key)))
                }
                _ => anyhow::bail!(
                    "--https-cert {p}: give the certificate and its key as CERT,KEY (two PEM files)"
                ),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let certs = tls::load(&pairs, &self.https_cert_dir)?;
        Ok(Some(HttpsConfig {
            listen,
            tls: Terminator::new(certs),
            redirect_http: self.redirect_http,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_and_listen_come_together_and_pairs_are_cert_comma_key() {
        let listen = Some("127.0.0.1:0".parse().unwrap());
        let no_certs = HttpsArgs {
            https_listen: listen,
            ..Default::default()
        };
        let err = no_certs.config().err().unwrap().to_string();
        assert!(err.contains("--https-cert-dir"), "{err}");
        let no_listen = HttpsArgs {
            https_cert_dir: vec!["/tmp".into()],
            ..Default::default()
        };
        let err = no_listen.config().err().unwrap().to_string();
        assert!(err.contains("--https-listen"), "{err}");
        let bad_pair = HttpsArgs {
            https_listen: listen,
            https_cert: vec!["only-a-cert.pem".into()],
            ..Default::default()
        };
        let err = bad_pair.config().err().unwrap().to_string();
        assert!(err.contains("CERT,KEY"), "{err}");
        assert!(HttpsArgs::default().config().unwrap().is_none());
    }

    #[test]
    fn router_and_up_take_the_flags_and_a_redirect_needs_https() {
        use clap::Parser;
        assert!(crate::Cli::try_parse_from(["lattice", "router", "--redirect-http"]).is_err());
        let cli = crate::Cli::try_parse_from([
            "lattice",
            "router",
            "--https-listen=0.0.0.0:443",
            "--https-cert-dir=/a",
            "--tls-cert-dir=/b",
            "--https-cert=c.pem,c.key",
            "--redirect-http",
        ])
        .unwrap();
        let crate::Command::Router(a) = cli.command else {
            panic!("not the router command")
        };
        assert_eq!(a.https.https_listen, Some("0.0.0.0:443".parse().unwrap()));
        assert_eq!(a.https.https_cert_dir, [PathBuf::from("/a"), "/b".into()]);
        assert_eq!(a.https.https_cert, ["c.pem,c.key"]);
        assert!(a.https.redirect_http);
        assert!(crate::Cli::try_parse_from([
            "lattice",
            "up",
            "--https-listen=0.0.0.0:8443",
            "--https-cert-dir=/a",
            "--redirect-http",
        ])
        .is_ok());
    }
}
