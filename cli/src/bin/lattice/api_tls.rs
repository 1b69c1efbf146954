//! How `lattice bbs` serves its public API ([`ApiTlsArgs`]): HTTPS by default in a
//! cluster, plain HTTP only on loopback or when `--api-insecure-http` says so.
//! [`choose`] is the pure decision; [`server_config`] makes the rustls configuration
//! it names (and keeps a certificate the BBS issued itself renewed).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lattice_tls::ca::{Ca, DEFAULT_LEAF_VALIDITY};
use lattice_tls::NodeTls;
use tokio_rustls::rustls::ServerConfig;

/// The public API's TLS flags.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ApiTlsArgs {
    /// Serve the public API over HTTPS with this certificate (PEM, then its chain
    /// ending with its CA, whose fingerprint `ltc target` shows; with --api-tls-key).
    #[arg(long, env = "LATTICE_BBS_API_TLS_CERT", requires = "api_tls_key")]
    pub api_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --api-tls-cert.
    #[arg(long, env = "LATTICE_BBS_API_TLS_KEY", requires = "api_tls_cert")]
    pub api_tls_key: Option<PathBuf>,
    /// A host name or IP address clients reach the public API by (repeatable): the
    /// BBS names them, with --api-listen's address, in the certificate it issues
    /// itself for the API from the cluster CA (--join-ca-dir).
    #[arg(long = "api-hostname", value_name = "NAME")]
    pub api_hostnames: Vec<String>,
    /// Serve the public API over plain HTTP even beyond loopback or with cluster TLS:
    /// API tokens and the apps' settings then cross the network in clear.
    #[arg(
        long,
        env = "LATTICE_BBS_API_INSECURE_HTTP",
        conflicts_with = "api_tls_cert"
    )]
    pub api_insecure_http: bool,
}

/// Where the public API's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTls {
    /// --api-tls-cert and --api-tls-key.
    Files { cert: PathBuf, key: PathBuf },
    /// Issued by the BBS from the cluster CA for these names.
    Issued { names: Vec<String> },
    /// The BBS's own certificate (--tls-cert), followed by the CA's.
    NodeCert,
    /// Plain HTTP.
    Plain,
}

/// What the BBS has to serve its API with, besides the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    /// It has a certificate of its own (--tls-cert…).
    pub node_cert: bool,
    /// It holds the cluster CA's key (--join-ca-dir).
    pub ca_key: bool,
}

/// How the API on `listen` is served. Over HTTPS whenever a certificate is at hand
/// and the API is reachable beyond loopback (or names are asked for); plain HTTP
/// on loopback, or beyond it only with --api-insecure-http.
pub fn choose(listen: SocketAddr, a: &ApiTlsArgs, cluster: Cluster) -> anyhow::Result<ApiTls> {
    if let (Some(cert), Some(key)) = (&a.api_tls_cert, &a.api_tls_key) {
        return Ok(ApiTls::Files {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    if a.api_insecure_http {
        anyhow::ensure!(
            a.api_hostnames.is_empty(),
            "--api-hostname names the API's HTTPS certificate: drop it or --api-insecure-http"
        );
        return Ok(ApiTls::Plain);
    }
    let loopback = listen.ip().to_canonical().is_loopback();
    if loopback && a.api_hostnames.is_empty() {
        return Ok(ApiTls::Plain);
    }
    if cluster.ca_key {
        let mut names = a.api_hostnames.clone();
        if !listen.ip().is_unspecified() {
            names.push(listen.ip().to_canonical().to_string());
        }
        anyhow::ensure!(
            !a.api_hostnames.is_empty() || !listen.ip().is_unspecified(),
            "the public API on {listen} is served over HTTPS with a certificate from the \
             cluster CA: name the host names or addresses clients reach it by with \
             --api-hostname NAME (repeatable), or listen on one address, or give \
             --api-tls-cert/--api-tls-key (or --api-insecure-http for plain HTTP)"
        );
        names.dedup();
        return Ok(ApiTls::Issued { names });
    }
    anyhow::ensure!(
        a.api_hostnames.is_empty(),
        "--api-hostname needs the cluster CA's key (--join-ca-dir) to issue the API's \
         certificate; without it the BBS's own certificate (--tls-cert) serves the API: \
         issue that one for the API's names (`lattice ca issue --role bbs --name bbs --san \
         HOST`), or give --api-tls-cert/--api-tls-key"
    );
    if cluster.node_cert {
        return Ok(ApiTls::NodeCert);
    }
    anyhow::bail!(
        "refusing to serve the public API over plain HTTP on {listen}: API tokens and the \
         apps' settings would cross the network in clear. Give --api-tls-cert/--api-tls-key, \
         or the cluster's TLS (--tls-cert/--tls-key/--tls-ca, or --join-ca-dir with \
         --api-hostname), or listen on 127.0.0.1; --api-insecure-http serves plain HTTP anyway"
    )
}

/// The rustls configuration `choice` names (None: plain HTTP). `node` is the BBS's
/// own TLS, `ca` the cluster CA with its key. An API certificate the BBS issued
/// itself is renewed in the background at two thirds of its life.
pub fn server_config(
    choice: &ApiTls,
    node: Option<&NodeTls>,
    ca: Option<&Arc<Ca>>,
) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    Ok(match choice {
        ApiTls::Plain => None,
        ApiTls::Files { cert, key } => Some(
            lattice_bbs::serve::tls_config_from_files(cert, key)
                .context("--api-tls-cert/--api-tls-key")?,
        ),
        ApiTls::NodeCert => {
            let node = node.context("the BBS has no certificate of its own (--tls-cert)")?;
            Some(node.public_server_config()?)
        }
        ApiTls::Issued { names } => {
            let ca = ca.context("the cluster CA's key is needed (--join-ca-dir)")?;
            let node = issue(ca, names)?;
            let config = node.public_server_config()?;
            tokio::spawn(renew(ca.clone(), names.clone(), node));
            tracing::info!(
                ?names,
                "the public API serves a certificate from the cluster CA"
            );
            Some(config)
        }
    })
}

/// A certificate for the API from `ca`, naming the BBS and `names`.
fn issue(ca: &Ca, names: &[String]) -> anyhow::Result<NodeTls> {
    ca.issue_node(&lattice_tls::bbs_identity(), names, DEFAULT_LEAF_VALIDITY)
        .with_context(|| format!("issuing the API's certificate for {names:?}"))
}

/// Re-issues the API's certificate in `node` at two thirds of its life (an hour
/// after a failure), forever.
async fn renew(ca: Arc<Ca>, names: Vec<String>, node: NodeTls) {
    let every = DEFAULT_LEAF_VALIDITY * 2 / 3;
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        let renewed = ca
            .issue_new_key(&lattice_tls::bbs_identity(), &names, DEFAULT_LEAF_VALIDITY)
            .map_err(anyhow::Error::from)
            .and_then(|k| {
                Ok(node
                    .cert()
                    .replace(k.cert.cert_pem.as_bytes(), k.key_pem.as_bytes())?)
            });
        wait = match renewed {
            Ok(()) => {
                tracing::info!("renewed the public API's certificate");
                every
            }
            Err(e) => {
                tracing::error!(error = %e, "renewing the public API's certificate failed; trying again in an hour");
                Duration::from_secs(3600)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(hostnames: &[&str], insecure: bool) -> ApiTlsArgs {
        ApiTlsArgs {
            api_hostnames: hostnames.iter().map(|s| s.to_string()).collect(),
            api_insecure_http: insecure,
            ..Default::default()
        }
    }

    const NONE: Cluster = Cluster {
        node_cert: false,
        ca_key: false,
    };
    const NODE: Cluster = Cluster {
        node_cert: true,
        ca_key: false,
    };
    const CA: Cluster = Cluster {
        node_cert: true,
        ca_key: true,
    };

    #[test]
    fn a_cluster_serves_https_and_plain_http_needs_loopback_or_the_flag() {
        let lo: SocketAddr = "127.0.0.1:8888".parse().unwrap();
        let lan: SocketAddr = "10.0.0.5:8888".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8888".parse().unwrap();
        // Loopback stays plain (`lattice up`), whatever TLS the BBS has.
        for c in [NONE, NODE, CA] {
            assert_eq!(choose(lo, &args(&[], false), c).unwrap(), ApiTls::Plain);
        }
        // Beyond loopback: HTTPS with what the BBS has…
        assert_eq!(
            choose(lan, &args(&[], false), NODE).unwrap(),
            ApiTls::NodeCert
        );
        assert_eq!(
            choose(lan, &args(&["bbs.example.org"], false), CA).unwrap(),
            ApiTls::Issued {
                names: vec!["bbs.example.org".into(), "10.0.0.5".into()]
            }
        );
        assert_eq!(
            choose(any, &args(&["bbs.example.org"], false), CA).unwrap(),
            ApiTls::Issued {
                names: vec!["bbs.example.org".into()]
            }
        );
        // … names asked for on loopback too.
        assert_eq!(
            choose(lo, &args(&["localhost"], false), CA).unwrap(),
            ApiTls::Issued {
                names: vec!["localhost".into(), "127.0.0.1".into()]
            }
        );
        // … and refused without any certificate, unless told.
        let e = choose(lan, &args(&[], false), NONE)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("refusing to serve the public API over plain HTTP on 10.0.0.5:8888")
                && e.contains("--api-insecure-http"),
            "{e}"
        );
        for c in [NONE, NODE, CA] {
            assert_eq!(choose(lan, &args(&[], true), c).unwrap(), ApiTls::Plain);
        }
        // The CA cannot guess the names of a machine listening everywhere.
        let e = choose(any, &args(&[], false), CA).unwrap_err().to_string();
        assert!(e.contains("--api-hostname"), "{e}");
        // Names without the CA's key, or with plain HTTP: said so.
        let e = choose(lan, &args(&["h"], false), NODE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--join-ca-dir") && e.contains("--san"), "{e}");
        let e = choose(lan, &args(&["h"], true), CA)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--api-insecure-http"), "{e}");
        // Files given win.
        let files = ApiTlsArgs {
            api_tls_cert: Some("c.pem".into()),
            api_tls_key: Some("k.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            choose(lo, &files, NONE).unwrap(),
            ApiTls::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
    }

    #[tokio::test]
    async fn an_issued_api_certificate_names_the_api_and_ends_with_the_ca() {
        let ca = Arc::new(Ca::generate().unwrap());
        let choice = ApiTls::Issued {
            names: vec!["bbs.example.org".into(), "10.0.0.5".into()],
        };
        let cfg = server_config(&choice, None, Some(&ca)).unwrap().unwrap();
        assert_eq!(cfg.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        // A client trusting the CA alone and checking the name completes a handshake
        // by either name, and is shown the CA last.
        let roots = Arc::new(lattice_tls::config::roots(ca.cert_pem().as_bytes()).unwrap());
        for name in ["bbs.example.org", "10.0.0.5"] {
            let client = tokio_rustls::rustls::ClientConfig::builder_with_provider(
                lattice_tls::config::provider(),
            )
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
            let (c, s) = tokio::io::duplex(64 * 1024);
            let server = tokio_rustls::TlsAcceptor::from(cfg.clone());
            let sname = tokio_rustls::rustls::pki_types::ServerName::try_from(name).unwrap();
            let client = tokio_rustls::TlsConnector::from(Arc::new(client));
            let (cs, ss) = tokio::join!(client.connect(sname, c), server.accept(s));
            let cs = cs.unwrap();
            ss.unwrap();
            let chain = cs.get_ref().1.peer_certificates().unwrap();
            assert_eq!(chain.last().unwrap().as_ref(), ca.cert_der(), "{name}");
        }
    }
}
