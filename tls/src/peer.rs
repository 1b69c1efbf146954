//! A peer's [`Identity`] from its certificate: the DNS SAN of the form
//! `NAME.ROLE.lattice` the cluster CA wrote into it.

use lattice_specs::identity::Identity;
use x509_parser::extensions::GeneralName;

/// Why a certificate names no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("the certificate cannot be parsed: {0}")]
    Parse(String),
    #[error(
        "the certificate names no identity (no DNS name NAME.ROLE.lattice among its SANs {0:?})"
    )]
    NoIdentity(Vec<String>),
}

/// The identity a certificate (DER) names: its first DNS SAN that is an identity name.
pub fn identity_of_cert(der: &[u8]) -> Result<Identity, PeerError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PeerError::Parse(e.to_string()))?;
    let names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        Ok(None) => vec![],
        Err(e) => return Err(PeerError::Parse(e.to_string())),
    };
    names
        .iter()
        .find_map(|n| Identity::from_dns_name(n).ok())
        .ok_or(PeerError::NoIdentity(names))
}

/// When a certificate (DER) stops being valid.
pub fn not_after(der: &[u8]) -> Result<std::time::SystemTime, PeerError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PeerError::Parse(e.to_string()))?;
    let secs = cert.validity().not_after.timestamp();
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Ca;
    use lattice_specs::identity::Role;
    use std::time::Duration;

    #[test]
    fn the_identity_is_read_back_from_an_issued_certificate() {
        let ca = Ca::generate().unwrap();
        let id = Identity::new(Role::Brain, "brain-1").unwrap();
        let sans = ["example.org".to_string(), "10.1.2.3".to_string()];
        let issued = ca
            .issue_new_key(&id, &sans, Duration::from_secs(3600))
            .unwrap();
        assert_eq!(identity_of_cert(&issued.cert.cert_der), Ok(id));
        let left = not_after(&issued.cert.cert_der)
            .unwrap()
            .duration_since(std::time::SystemTime::now())
            .unwrap();
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600));
        // The CA's own certificate names nobody.
        assert!(matches!(
            identity_of_cert(ca.cert_der()),
            Err(PeerError::NoIdentity(_))
        ));
        assert!(matches!(
            identity_of_cert(b"junk"),
            Err(PeerError::Parse(_))
        ));
    }
}
