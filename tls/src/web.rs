//! The outgoing HTTPS client of components that call HTTP servers (a cell's
//! Download and Upload actions, a router shipping access lines to the public API):
//! servers are verified against the system's roots plus the CAs an operator adds
//! (the cluster CA, `--extra-ca` files).

pub use reqwest::Client;

/// Why extra roots cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ExtraCaError {
    #[error("an extra CA is not a PEM certificate file: {0}")]
    NotPem(reqwest::Error),
    #[error("an extra CA holds no PEM certificate (BEGIN CERTIFICATE)")]
    Empty,
    #[error("building the HTTP client: {0}")]
    Build(reqwest::Error),
}

/// A client trusting the system's roots plus `extra_ca` (PEM texts of CA certificates).
pub fn client(extra_ca: &[String]) -> Result<reqwest::Client, ExtraCaError> {
    builder(extra_ca)?.build().map_err(ExtraCaError::Build)
}

/// [`client`]'s builder, for a caller that sets more (a redirect policy, timeouts).
pub fn builder(extra_ca: &[String]) -> Result<reqwest::ClientBuilder, ExtraCaError> {
    let mut roots = Vec::new();
    for pem in extra_ca {
        let certs =
            reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(ExtraCaError::NotPem)?;
        if certs.is_empty() {
            return Err(ExtraCaError::Empty);
        }
        roots.extend(certs);
    }
    Ok(reqwest::Client::builder().tls_certs_merge(roots))
}

/// `e` and its sources as one line (a client error's own message hides its cause,
/// such as an untrusted certificate).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(&format!(": {c}"));
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_roots_must_be_pem_certificates() {
        assert!(client(&[]).is_ok());
        assert!(matches!(
            client(&["not a certificate".into()]),
            Err(ExtraCaError::Empty)
        ));
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::ca::Ca::init(dir.path()).unwrap();
        assert!(client(&[ca.cert_pem().to_string()]).is_ok());
    }
}
