//! The cluster's certificate authority: a key and a self-signed certificate kept in a
//! directory (`ca.pem`, `ca.key` with mode 0600), and the issuing of leaf certificates
//! that name a component's [`Identity`] (the DNS SAN `NAME.ROLE.lattice`), from a
//! signing request or a bare public key, with extra SANs (hosts and IPs a client may
//! dial) and a validity. A CA is known to its members by [`Ca::fingerprint`], the
//! SHA-256 of its certificate's DER in lower-case hex.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lattice_specs::identity::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use sha2::{Digest, Sha256};

/// The CA certificate's file name in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name in a CA directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// How long a CA certificate is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a leaf certificate is valid unless the caller says otherwise.
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this long before their issuing, so peers whose clocks lag by a
/// few minutes accept them.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// What went wrong creating, loading or using a CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: a CA already exists there; load it instead of creating a new one (or remove the directory)")]
    AlreadyExists { path: PathBuf },
    #[error("{path}: not a usable CA {what}: {reason}")]
    BadFile {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("certificate signing request: {0}")]
    BadRequest(String),
    #[error("public key: {0}")]
    BadPublicKey(String),
    #[error("extra SAN {0:?}: neither an IP address nor a DNS name")]
    BadSan(String),
    #[error("validity must be at least one minute, got {0:?}")]
    BadValidity(Duration),
    #[error("issuing a certificate: {0}")]
    Issue(String),
}

/// The public key a certificate is issued for: from a signing request (whose signature
/// proves the requester holds the private key) or given directly.
#[derive(Debug, Clone, Copy)]
pub enum SubjectKey<'a> {
    /// A PKCS#10 certificate signing request, DER.
    CsrDer(&'a [u8]),
    /// A PKCS#10 certificate signing request, PEM (`CERTIFICATE REQUEST`).
    CsrPem(&'a str),
    /// A SubjectPublicKeyInfo, DER.
    PublicKeyDer(&'a [u8]),
    /// A SubjectPublicKeyInfo, PEM (`PUBLIC KEY`).
    PublicKeyPem(&'a str),
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub identity: Identity,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// A certificate issued together with a freshly generated key (for offline issuance:
/// `lattice ca issue`, `lattice up`, test harnesses).
#[derive(Debug, Clone)]
pub struct IssuedKeyPair {
    pub cert: IssuedCert,
    /// PKCS#8 PEM of the private key.
    pub key_pem: String,
}

/// A loaded (or just created) certificate authority.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA in memory (ECDSA P-256), valid for [`CA_VALIDITY`].
    pub fn generate() -> Result<Ca, CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Issue(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "lattice");
        dn.push(
            DnType::CommonName,
            format!("lattice cluster CA {}", hex::encode(random_bytes::<4>())),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let now = SystemTime::now();
        params.not_before = (now - CLOCK_SKEW_ALLOWANCE).into();
        params.not_after = (now + CA_VALIDITY).into();
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Issue(e.to_string()))?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Creates a CA and saves it in `dir` (made 0700 if missing); refuses when `dir`
    /// already holds one.
    pub fn init(dir: &Path) -> Result<Ca, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        if cert_path.exists() || dir.join(CA_KEY_FILE).exists() {
            return Err(CaError::AlreadyExists {
                path: dir.to_path_buf(),
            });
        }
        let ca = Ca::generate()?;
        ca.save(dir)?;
        tracing::info!(dir = %dir.display(), fingerprint = %ca.fingerprint(), "created cluster CA");
        Ok(ca)
    }

    /// Loads the CA saved in `dir`.
    pub fn load(dir: &Path) -> Result<Ca, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read_string(&cert_path)?;
        let key_pem = read_string(&key_path)?;
        let bad = |path: &Path, what, reason: String| CaError::BadFile {
            path: path.to_path_buf(),
            what,
            reason,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(&key_path, "key", e.to_string()))?;
        let cert_der = pem_cert(&cert_pem)
            .ok_or_else(|| bad(&cert_path, "certificate", "no CERTIFICATE block".into()))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key)
            .map_err(|e| bad(&cert_path, "certificate", e.to_string()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| bad(&cert_path, "certificate", e.to_string()))?;
        if parsed.public_key().raw != issuer.key().subject_public_key_info().as_slice() {
            return Err(bad(
                &key_path,
                "key",
                format!("it does not belong to the certificate in {CA_CERT_FILE}"),
            ));
        }
        Ok(Ca {
            cert_pem,
            cert_der,
            key_pem,
            issuer,
        })
    }

    /// Loads the CA in `dir`, or creates and saves one when there is none; says whether
    /// it was created.
    pub fn load_or_init(dir: &Path) -> Result<(Ca, bool), CaError> {
        if dir.join(CA_CERT_FILE).exists() {
            Ok((Ca::load(dir)?, false))
        } else {
            Ok((Ca::init(dir)?, true))
        }
    }

    /// Writes `ca.pem` (0644) and `ca.key` (0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        ensure_private_dir(dir)?;
        write_file_atomic(&dir.join(CA_KEY_FILE), self.key_pem.as_bytes(), 0o600)?;
        write_file_atomic(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        Ok(())
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// SHA-256 of the CA certificate's DER, lower-case hex (64 characters).
    pub fn fingerprint(&self) -> String {
        fingerprint_der(&self.cert_der)
    }

    /// Issues a certificate for `identity` to the holder of `key`: its SANs are the
    /// identity's DNS name plus `extra_sans` (IP addresses or DNS names), usable for
    /// both server and client authentication, valid from a few minutes ago for
    /// `validity`. Whatever names or extensions a signing request asks for are ignored.
    pub fn issue(
        &self,
        identity: &Identity,
        key: SubjectKey<'_>,
        extra_sans: &[String],
        validity: Duration,
    ) -> Result<IssuedCert, CaError> {
        if validity < Duration::from_secs(60) {
            return Err(CaError::BadValidity(validity));
        }
        let now = SystemTime::now();
        self.issue_for_period(
            identity,
            key,
            extra_sans,
            now - CLOCK_SKEW_ALLOWANCE,
            now + validity,
        )
    }

    /// Like [`Ca::issue`] with explicit bounds of validity (renewal schedules, and
    /// tests of expired certificates).
    pub fn issue_for_period(
        &self,
        identity: &Identity,
        key: SubjectKey<'_>,
        extra_sans: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, CaError> {
        if not_after <= not_before {
            return Err(CaError::BadValidity(Duration::ZERO));
        }
        let params = leaf_params(identity, extra_sans, not_before, not_after)?;
        let cert = match key {
            SubjectKey::CsrDer(der) => {
                self.sign_csr(&params, &CertificateSigningRequestDer::from(der))
            }
            SubjectKey::CsrPem(pem) => {
                let der =
                    CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
                        CaError::BadRequest(format!("no CERTIFICATE REQUEST PEM block: {e}"))
                    })?;
                self.sign_csr(&params, &der)
            }
            SubjectKey::PublicKeyDer(der) => {
                let spki = SubjectPublicKeyInfo::from_der(der)
                    .map_err(|e| CaError::BadPublicKey(e.to_string()))?;
                sign(&params, &spki, &self.issuer)
            }
            SubjectKey::PublicKeyPem(pem) => {
                let spki = SubjectPublicKeyInfo::from_pem(pem)
                    .map_err(|e| CaError::BadPublicKey(e.to_string()))?;
                sign(&params, &spki, &self.issuer)
            }
        }?;
        tracing::debug!(%identity, "issued certificate");
        Ok(IssuedCert {
            identity: identity.clone(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            not_before: params.not_before.into(),
            not_after: params.not_after.into(),
        })
    }

    /// A component's TLS from this CA: a new key, its certificate for `identity` (see
    /// [`Ca::issue_new_key`]) and this CA as the trusted root.
    pub fn issue_node(
        &self,
        identity: &Identity,
        extra_sans: &[String],
        validity: Duration,
    ) -> Result<crate::NodeTls, CaError> {
        let k = self.issue_new_key(identity, extra_sans, validity)?;
        crate::NodeTls::from_pem(
            k.cert.cert_pem.as_bytes(),
            k.key_pem.as_bytes(),
            self.cert_pem().as_bytes(),
        )
        .map_err(|e| CaError::Issue(e.to_string()))
    }

    /// Generates a key (ECDSA P-256) and issues a certificate for it (see [`Ca::issue`]).
    pub fn issue_new_key(
        &self,
        identity: &Identity,
        extra_sans: &[String],
        validity: Duration,
    ) -> Result<IssuedKeyPair, CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Issue(e.to_string()))?;
        let cert = self.issue(
            identity,
            SubjectKey::PublicKeyDer(&key.subject_public_key_info()),
            extra_sans,
            validity,
        )?;
        Ok(IssuedKeyPair {
            cert,
            key_pem: key.serialize_pem(),
        })
    }

    fn sign_csr(
        &self,
        params: &CertificateParams,
        der: &CertificateSigningRequestDer<'_>,
    ) -> Result<rcgen::Certificate, CaError> {
        let csr = CertificateSigningRequestParams::from_der(der)
            .map_err(|e| CaError::BadRequest(e.to_string()))?;
        sign(params, &csr.public_key, &self.issuer)
    }
}

fn sign(
    params: &CertificateParams,
    key: &impl PublicKeyData,
    issuer: &Issuer<'static, KeyPair>,
) -> Result<rcgen::Certificate, CaError> {
    params
        .signed_by(key, issuer)
        .map_err(|e| CaError::Issue(e.to_string()))
}

/// The parameters of a leaf certificate for `identity`.
fn leaf_params(
    identity: &Identity,
    extra_sans: &[String],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "lattice");
    dn.push(DnType::CommonName, identity.dns_name());
    params.distinguished_name = dn;
    params.subject_alt_names = std::iter::once(Ok(dns_san(&identity.dns_name())?))
        .chain(extra_sans.iter().map(|s| san(s)))
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    Ok(params)
}

fn san(s: &str) -> Result<SanType, CaError> {
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => dns_san(s),
    }
}

fn dns_san(s: &str) -> Result<SanType, CaError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').enumerate().all(|(i, label)| {
            (label == "*" && i == 0)
                || (!label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        });
    if !ok {
        return Err(CaError::BadSan(s.to_string()));
    }
    let name = s
        .to_ascii_lowercase()
        .try_into()
        .map_err(|_| CaError::BadSan(s.to_string()))?;
    Ok(SanType::DnsName(name))
}

/// SHA-256 of `der`, lower-case hex.
pub fn fingerprint_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The fingerprint of the first certificate in `pem`.
pub fn fingerprint_pem(pem: &str) -> Option<String> {
    pem_cert(pem).map(|der| fingerprint_der(&der))
}

/// The DER of the first certificate in `pem`.
pub(crate) fn pem_cert(pem: &str) -> Option<Vec<u8>> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|d| d.to_vec())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::fill(&mut b);
    b
}

/// A positive 16-byte serial number.
fn random_serial() -> [u8; 16] {
    let mut b = random_bytes::<16>();
    b[0] &= 0x7f;
    b[0] |= 0x01;
    b
}

fn read_string(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub fn ensure_private_dir(dir: &Path) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file renamed over it (readers see the
/// old or the new content, never half), with `mode`.
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp-{}", hex::encode(random_bytes::<4>())));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
#[path = "ca_tests.rs"]
mod tests;
