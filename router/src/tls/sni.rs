//! Which certificate answers a TLS client: the one whose subject alternative
//! names cover the server name (SNI) the client asked for. Exact names win over
//! wildcards; a wildcard `*.example.com` covers one label (`a.example.com`, not
//! `example.com` nor `a.b.example.com`), as clients check it (RFC 6125 §6.4.3).
//! Pure: certificates in, a choice out.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::CertError;

/// The certificates a router serves, by the names they cover.
#[derive(Debug, Default)]
pub struct SniCerts {
    /// Exact names (lowercase, no trailing dot).
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Wildcard certificates by the domain under the `*` (`example.com` for `*.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Every name covered, as written in the certificates (for messages).
    names: Vec<String>,
}

/// A name as compared: lowercase, without a trailing dot.
fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl SniCerts {
    /// Adds a certificate chain (leaf first) under every DNS name of its leaf's
    /// subject alternative names; `source` names it in errors and warnings. A name
    /// already covered by an earlier certificate keeps the earlier one.
    pub fn add(&mut self, cert: Arc<CertifiedKey>, source: &str) -> Result<(), CertError> {
        let leaf = cert.end_entity_cert().map_err(|_| CertError::Empty {
            file: source.to_string(),
        })?;
        let parsed = webpki::EndEntityCert::try_from(leaf).map_err(|e| CertError::Parse {
            file: source.to_string(),
            error: format!("{e:?}"),
        })?;
        let names: Vec<String> = parsed.valid_dns_names().map(normal).collect();
        if names.is_empty() {
            return Err(CertError::NoDnsNames {
                file: source.to_string(),
            });
        }
        for name in names {
            let (map, key) = match name.strip_prefix("*.") {
                Some(parent) => (&mut self.wildcard, parent.to_string()),
                None => (&mut self.exact, name.clone()),
            };
            if map.contains_key(&key) {
                tracing::warn!(
                    name,
                    file = source,
                    "another certificate already covers this name; keeping the first one loaded"
                );
                continue;
            }
            map.insert(key, cert.clone());
            self.names.push(name);
        }
        Ok(())
    }

    /// The certificate for `server_name`: one naming it exactly, else a wildcard
    /// for its parent domain.
    pub fn choose(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = normal(server_name);
        if let Some(c) = self.exact.get(&name) {
            return Some(c);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent)
    }

    /// Every name covered (`*.example.com` for a wildcard), in the order added.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl ResolvesServerCert for SniCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name()?).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names` as rustls serves it.
    pub(crate) fn certified(names: &[&str]) -> Arc<CertifiedKey> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        Arc::new(CertifiedKey::from_der(vec![c.cert.der().clone()], key, &provider).unwrap())
    }

    #[test]
    fn exact_names_win_over_wildcards_which_cover_one_label() {
        let (apps, wild, other) = (
            certified(&["apps.example.com", "www.example.com"]),
            certified(&["*.example.com"]),
            certified(&["other.test"]),
        );
        let mut certs = SniCerts::default();
        certs.add(wild.clone(), "wild.crt").unwrap();
        certs.add(apps.clone(), "apps.crt").unwrap();
        certs.add(other.clone(), "other.crt").unwrap();
        let chosen = |n: &str| certs.choose(n).map(|c| c.cert[0].clone());
        assert_eq!(chosen("apps.example.com"), Some(apps.cert[0].clone()));
        assert_eq!(chosen("WWW.Example.COM."), Some(apps.cert[0].clone()));
        assert_eq!(chosen("hello.example.com"), Some(wild.cert[0].clone()));
        assert_eq!(chosen("other.test"), Some(other.cert[0].clone()));
        // A wildcard covers exactly one label.
        assert_eq!(chosen("example.com"), None);
        assert_eq!(chosen("a.b.example.com"), None);
        assert_eq!(chosen("unknown.test"), None);
        assert_eq!(chosen("com"), None);
        assert_eq!(
            certs.names(),
            [
                "*.example.com",
                "apps.example.com",
                "www.example.com",
                "other.test"
            ]
        );
    }

    #[test]
    fn the_first_certificate_for_a_name_is_kept() {
        let (first, second) = (certified(&["a.test"]), certified(&["a.test", "b.test"]));
        let mut certs = SniCerts::default();
        certs.add(first.clone(), "first.crt").unwrap();
        certs.add(second.clone(), "second.crt").unwrap();
        assert_eq!(certs.choose("a.test").unwrap().cert, first.cert);
        assert_eq!(certs.choose("b.test").unwrap().cert, second.cert);
    }

    #[test]
    fn a_certificate_without_dns_names_is_refused_naming_its_file() {
        let ip_only = certified(&["127.0.0.1"]);
        let err = SniCerts::default()
            .add(ip_only, "ip.crt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ip.crt") && err.contains("DNS name"), "{err}");
    }
}
