//! Trusting an HTTPS API like ssh trusts a host: on `ltc target https://…` the
//! server's CA (the last certificate of the chain it presents) is shown by its
//! SHA-256 fingerprint and trusted once the user confirms it (at a prompt, or
//! beforehand with `--ca-fingerprint`), or taken from `--ca-file`. The CA is saved
//! with the target and every later call verifies the server against it alone
//! (hostname included): a changed CA fails the handshake, before anything is sent.
//!
//! [`decide`] is the pure decision; [`probe`] and [`prompt`] are the I/O.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;
use tokio_rustls::rustls;

/// `ltc target`'s flags for an HTTPS API.
#[derive(clap::Args, Debug, Default)]
pub struct TrustArgs {
    /// Trust the CA with this SHA-256 fingerprint (64 hex digits, colons allowed, as
    /// `openssl x509 -noout -fingerprint -sha256 -in ca.pem` prints it) without asking.
    #[arg(long, conflicts_with = "ca_file")]
    pub ca_fingerprint: Option<String>,
    /// Trust the CA certificate(s) in this PEM file without asking.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// The SHA-256 of a certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fingerprint as the user may write it (`AB:CD:…`, `SHA256:…`, `sha256
/// Fingerprint=…`), as [`fingerprint`] writes it.
pub fn normalize_fingerprint(given: &str) -> anyhow::Result<String> {
    let s = given.trim();
    let s = s.rsplit_once('=').map_or(s, |(_, v)| v);
    let s = s
        .strip_prefix("SHA256:")
        .or_else(|| s.strip_prefix("sha256:"))
        .unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    anyhow::ensure!(
        hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "--ca-fingerprint {given:?}: expected a SHA-256 fingerprint, 64 hex digits (colons allowed)"
    );
    Ok(hex.to_ascii_lowercase())
}

/// What to do with the CA an HTTPS API presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Trust it.
    Trust,
    /// Ask the user (`changed`: a different CA was trusted for this API before).
    Ask { changed: bool },
    /// Refuse, saying why and what to do.
    Refuse(String),
}

/// Whether to trust the CA with fingerprint `presented` shown by the API at `url`:
/// `given` is `--ca-fingerprint` (normalized), `saved` the fingerprint of the CA
/// already trusted for that URL, `terminal` whether the user can be asked.
pub fn decide(
    url: &str,
    presented: &str,
    given: Option<&str>,
    saved: Option<&str>,
    terminal: bool,
) -> Decision {
    if let Some(g) = given {
        return if g == presented {
            Decision::Trust
        } else {
            Decision::Refuse(format!(
                "the API at {url} presents a CA with SHA-256 fingerprint {presented}, not the {g} you gave: nothing saved. Someone may be in the way, or the cluster has another CA: check the fingerprint of the cluster's CA certificate"
            ))
        };
    }
    if saved == Some(presented) {
        return Decision::Trust;
    }
    if terminal {
        return Decision::Ask {
            changed: saved.is_some(),
        };
    }
    Decision::Refuse(format!(
        "the API at {url} presents a CA with SHA-256 fingerprint {presented}, and there is no terminal to confirm it: check it against the cluster's CA certificate (`openssl x509 -noout -fingerprint -sha256 -in ca.pem`), then run `ltc target {url} --ca-fingerprint {presented}` (or give the CA with `--ca-file ca.pem`)"
    ))
}

/// Asks on the terminal whether to trust the CA; true when the user says yes.
pub fn prompt(
    url: &str,
    presented: &str,
    changed: bool,
    input: &mut impl std::io::BufRead,
    output: &mut impl std::io::Write,
) -> anyhow::Result<bool> {
    if changed {
        writeln!(
            output,
            "WARNING: the API at {url} presents a different CA than the one trusted for it before."
        )?;
    }
    writeln!(
        output,
        "The API at {url} presents a certificate from a CA with SHA-256 fingerprint\n{presented}"
    )?;
    write!(
        output,
        "Trust this CA for {url} (check the fingerprint with the cluster's operator)? [yes/no] "
    )?;
    output.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "yes" | "y"
    ))
}

/// Accepts any server certificate, recording the chain: only to show it for the
/// user to judge, never to send anything over.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<CertificateDer<'static>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.chain.lock().unwrap() = chain;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate chain the HTTPS server at `host:port` presents (its own first).
pub async fn probe(host: &str, port: u16) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        provider: provider.clone(),
    });
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .with_context(|| format!("{host} is not a host name or an IP address"))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
    };
    let mut tls = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
        .await
        .map_err(|_| anyhow::anyhow!("no TLS handshake within 10 s"))?
        .with_context(|| format!("cannot make a TLS connection to {host}:{port}"))?;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
    let chain = recorder.chain.lock().unwrap().clone();
    anyhow::ensure!(!chain.is_empty(), "{host}:{port} presented no certificate");
    Ok(chain)
}

/// `ltc target https://…`: which CA to trust for `t` (set in `t.ca`): `--ca-file`'s;
/// none when the system's roots already trust the API (and no fingerprint was
/// given); else the one the API presents, once confirmed. `saved` is the target
/// saved before. Plain http targets trust nothing.
pub async fn choose_ca(
    t: &mut crate::target::Target,
    args: &TrustArgs,
    saved: Option<&crate::target::Target>,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    t.ca = None;
    if !t.api.starts_with("https://") {
        anyhow::ensure!(
            args.ca_file.is_none() && args.ca_fingerprint.is_none(),
            "--ca-file and --ca-fingerprint are for an https API: target https://{}",
            t.api.trim_start_matches("http://")
        );
        return Ok(());
    }
    if let Some(f) = &args.ca_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("--ca-file {}: cannot read it", f.display()))?;
        pem_certs(&text).with_context(|| format!("--ca-file {}", f.display()))?;
        t.ca = Some(text);
        return Ok(());
    }
    let given = args
        .ca_fingerprint
        .as_deref()
        .map(normalize_fingerprint)
        .transpose()?;
    let saved_fp = saved
        .filter(|s| s.api == t.api)
        .and_then(|s| s.ca.as_deref())
        .and_then(ca_fingerprint);
    if given.is_none() && saved_fp.is_none() {
        let system = crate::api::Api::new(t.clone())?;
        if system.version().await.is_ok() {
            return Ok(());
        }
    }
    let (host, port) = t.host_port()?;
    let chain = probe(&host, port)
        .await
        .with_context(|| format!("checking the certificate of {}", t.api))?;
    let anchor = chain.last().expect("probe returns a certificate");
    let presented = fingerprint(anchor);
    let terminal = std::io::stdin().is_terminal();
    match decide(
        &t.api,
        &presented,
        given.as_deref(),
        saved_fp.as_deref(),
        terminal,
    ) {
        Decision::Trust => {}
        Decision::Ask { changed } => {
            let (mut input, mut output) = (std::io::stdin().lock(), std::io::stderr());
            if !prompt(&t.api, &presented, changed, &mut input, &mut output)? {
                anyhow::bail!("the CA of {} is not trusted: nothing saved", t.api);
            }
        }
        Decision::Refuse(why) => anyhow::bail!(why),
    }
    t.ca = Some(to_pem(anchor));
    Ok(())
}

/// The fingerprint of the (first) CA of a PEM text.
pub fn ca_fingerprint(pem: &str) -> Option<String> {
    pem_certs(pem).ok()?.first().map(|c| fingerprint(c))
}

/// The CA certificates of a PEM text.
pub fn pem_certs(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("not a PEM certificate ({e})"))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "holds no PEM certificate (BEGIN CERTIFICATE)"
    );
    Ok(certs)
}

/// A certificate as PEM.
pub fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// An error and its causes, as one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(&format!(": {c}"));
        cur = c.source();
    }
    out
}

/// The certificate error that failed a request, if one did: rustls's, found in
/// the error's chain (as itself, or inside an I/O error).
fn certificate_error(e: &(dyn std::error::Error + 'static)) -> Option<rustls::CertificateError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(rustls::Error::InvalidCertificate(why)) = as_rustls(err) {
            return Some(why.clone());
        }
        cur = err.source();
    }
    None
}

/// `e` as rustls's error: itself, or inside I/O errors (which hide it from
/// `source()`; hyper-rustls wraps tokio-rustls's I/O error in another).
fn as_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    as_rustls(inner)
}

/// Why a call to `api` failed in its TLS handshake, in words that say what to do;
/// None when `e` is no certificate error.
pub fn explain_tls_error(e: &reqwest::Error, api: &str, ca_pem: Option<&str>) -> Option<String> {
    let why = certificate_error(e)?;
    let pinned = ca_pem.and_then(ca_fingerprint);
    Some(match (&why, pinned) {
        (rustls::CertificateError::NotValidForName, _)
        | (rustls::CertificateError::NotValidForNameContext { .. }, _) => format!(
            "the API's certificate does not name the host of {api} ({why:?}): target the name or address its certificate was issued for"
        ),
        (_, Some(fp)) => format!(
            "the API at {api} presents a certificate the CA you trusted for it (SHA-256 {fp}) did not sign ({why:?}); nothing was sent. If the cluster's CA changed on purpose, run `ltc target {api}` again to see and confirm the new one"
        ),
        (_, None) => format!(
            "the API at {api} presents a certificate no CA of this system trusts ({why:?}); nothing was sent. Run `ltc target {api}` to see its CA and trust it"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "aa00000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn fingerprints_are_read_as_users_write_them() {
        let upper = FP.to_ascii_uppercase();
        let colons: Vec<String> = upper
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        let colons = colons.join(":");
        for given in [
            FP.to_string(),
            upper.clone(),
            colons.clone(),
            format!("SHA256:{FP}"),
            format!("sha256 Fingerprint={colons}"),
        ] {
            assert_eq!(normalize_fingerprint(&given).unwrap(), FP, "{given}");
        }
        for bad in [
            "",
            "abc",
            &FP[1..],
            &format!("{FP}00"),
            &FP.replace('a', "g"),
        ] {
            let e = normalize_fingerprint(bad).unwrap_err().to_string();
            assert!(e.contains("64 hex digits"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_decision_trusts_what_the_user_confirmed_and_nothing_else() {
        let other = FP.replace("aa", "bb");
        let url = "https://h:1";
        assert_eq!(decide(url, FP, Some(FP), None, false), Decision::Trust);
        let Decision::Refuse(why) = decide(url, FP, Some(&other), Some(FP), true) else {
            panic!("a wrong fingerprint is refused, terminal or not")
        };
        assert!(why.contains(FP) && why.contains(&other), "{why}");
        assert_eq!(decide(url, FP, None, Some(FP), false), Decision::Trust);
        assert_eq!(
            decide(url, FP, None, None, true),
            Decision::Ask { changed: false }
        );
        assert_eq!(
            decide(url, FP, None, Some(&other), true),
            Decision::Ask { changed: true }
        );
        for saved in [None, Some(other.as_str())] {
            let Decision::Refuse(why) = decide(url, FP, None, saved, false) else {
                panic!("no terminal, no flag: refused")
            };
            assert!(
                why.contains(&format!("ltc target {url} --ca-fingerprint {FP}")),
                "{why}"
            );
        }
    }

    #[test]
    fn the_prompt_takes_only_yes() {
        for (answer, trusted) in [("yes\n", true), ("Y\n", true), ("no\n", false), ("", false)] {
            let mut out = Vec::new();
            let ok = prompt("https://h:1", FP, true, &mut answer.as_bytes(), &mut out).unwrap();
            assert_eq!(ok, trusted, "{answer:?}");
            let shown = String::from_utf8(out).unwrap();
            assert!(shown.contains(FP) && shown.contains("WARNING"), "{shown}");
        }
    }

    #[test]
    fn certificates_go_to_pem_and_back() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let pem = to_pem(&der).repeat(2);
        let certs = pem_certs(&pem).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), &der[..]);
        assert!(pem_certs("nothing").is_err());
    }
}
