//! Joining the cluster and renewing certificates, over gRPC:
//! - `JoinCa`: the CA certificate (public), for a joiner to check against its token;
//! - `Join`: a token (used once, see `db::join_tokens`) and a signing request → a
//!   certificate naming the identity the token allows;
//! - `RenewCertificate`: a fresh certificate for the caller's own identity, the one
//!   its current certificate names;
//! - `CreateJoinToken`: a new token, for the operator only (a caller presenting a
//!   certificate of the BBS's role, or a plaintext caller on loopback).
//!
//! `JoinCa` and `Join` are the only calls a caller without a certificate may make.

use std::sync::Arc;
use std::time::Duration;

use lattice_specs::bbs_api::{
    CertificateResponse, CreateJoinTokenRequest, CreateJoinTokenResponse, Empty, JoinCaResponse,
    JoinRequest, RenewCertificateRequest,
};
use lattice_specs::errors::ErrorName;
use lattice_specs::identity::{Identity, Role};
use lattice_specs::join::{self, CaFingerprint, JoinRefusal, JoinToken};
use lattice_specs::validation::{FieldError, ValidationErrors};
use lattice_tls::ca::{Ca, SubjectKey};
use tonic::{Request, Response, Status};

use super::{call, BbsGrpc};
use crate::db::DbError;
use crate::metrics::CERTIFICATES;

/// How long certificates issued to joiners are valid unless configured otherwise:
/// renewed after two thirds of it (`lattice_specs::join::renew_at`).
pub const DEFAULT_ISSUED_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// What the BBS issues joiners' certificates with (its Debug shows the CA's
/// fingerprint, never its key).
#[derive(Clone, Debug)]
pub struct JoinAuthority {
    pub ca: Arc<Ca>,
    /// How long an issued certificate is valid.
    pub validity: Duration,
    /// The gRPC API is served without TLS (on loopback): a caller without a
    /// certificate is the local operator. False: it is a machine that has none yet.
    pub plaintext: bool,
}

impl JoinAuthority {
    /// Issuing with `ca` for [`DEFAULT_ISSUED_VALIDITY`], over TLS.
    pub fn new(ca: Arc<Ca>) -> JoinAuthority {
        JoinAuthority {
            ca,
            validity: DEFAULT_ISSUED_VALIDITY,
            plaintext: false,
        }
    }

    fn fingerprint(&self) -> CaFingerprint {
        CaFingerprint::of_der(self.ca.cert_der())
    }

    /// A certificate for `identity` from the signing request `csr_pem`.
    fn issue(&self, identity: &Identity, csr_pem: &str) -> Result<CertificateResponse, DbError> {
        let cert = self
            .ca
            .issue(identity, SubjectKey::CsrPem(csr_pem), &[], self.validity)
            .map_err(|e| invalid("csr_pem", e.to_string()))?;
        Ok(CertificateResponse {
            cert_pem: cert.cert_pem,
            ca_pem: self.ca.cert_pem().to_string(),
        })
    }
}

fn invalid(field: &str, message: String) -> DbError {
    DbError::Invalid(ValidationErrors(vec![FieldError {
        field: field.into(),
        message,
    }]))
}

fn refused(name: ErrorName, message: String) -> DbError {
    DbError::Conflict { name, message }
}

/// The identity the caller's certificate names (the TLS listener puts it in the
/// request's extensions), if it presented one.
fn caller<T>(r: &Request<T>) -> Option<Identity> {
    lattice_tls::peer_identity(r)
}

/// Whether the caller may create join tokens: it holds a certificate of the BBS's
/// role, or the BBS serves without TLS (on loopback only: a local caller).
fn is_operator<T>(r: &Request<T>, plaintext: bool) -> bool {
    match caller(r) {
        Some(id) => id.role == Role::Bbs,
        None => plaintext,
    }
}

impl BbsGrpc {
    fn join_authority(&self) -> Result<&JoinAuthority, DbError> {
        self.join.as_ref().ok_or_else(|| {
            refused(
                ErrorName::Forbidden,
                "this BBS issues no certificates (it was started without its CA): start it with its CA directory to let machines join".into(),
            )
        })
    }

    pub(super) async fn join_ca_pem(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<JoinCaResponse>, Status> {
        call("JoinCa", async {
            Ok(JoinCaResponse {
                ca_pem: self.join_authority()?.ca.cert_pem().to_string(),
            })
        })
        .await
    }

    pub(super) async fn join_cluster(
        &self,
        r: Request<JoinRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        call("Join", async {
            let auth = self.join_authority()?;
            let r = r.into_inner();
            let token: JoinToken = r
                .token
                .parse()
                .map_err(|e: join::TokenFormatError| invalid("token", e.to_string()))?;
            if token.ca != auth.fingerprint() {
                return Err(refused(
                    ErrorName::Unauthorized,
                    format!(
                        "the join token names CA {} but this BBS's CA is {}: the token is from another cluster",
                        token.ca,
                        auth.fingerprint()
                    ),
                ));
            }
            let role: Role = r.role.parse().map_err(|e| invalid("role", format!("{e}")))?;
            let identity = Identity::new(role, &r.name)
                .map_err(|e| refused(JoinRefusal::BadName(e.clone()).name(), format!("name: {e}")))?;
            // Signed before the token is spent, so a bad request does not burn it; the
            // certificate leaves only if the token allows this identity.
            let cert = auth.issue(&identity, &r.csr_pem)?;
            self.db.use_join_token(&token, role, &r.name).await?;
            CERTIFICATES.with_label_values(&[role.as_str(), "join"]).inc();
            tracing::info!(%identity, "joined: certificate issued");
            Ok(cert)
        })
        .await
    }

    pub(super) async fn renew_identity(
        &self,
        r: Request<RenewCertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        call("RenewCertificate", async {
            let auth = self.join_authority()?;
            let identity = caller(&r).ok_or_else(|| {
                refused(
                    ErrorName::Unauthorized,
                    "renewing a certificate needs the current one: connect with mutual TLS".into(),
                )
            })?;
            let cert = auth.issue(&identity, &r.into_inner().csr_pem)?;
            CERTIFICATES
                .with_label_values(&[identity.role.as_str(), "renew"])
                .inc();
            tracing::info!(%identity, "certificate renewed");
            Ok(cert)
        })
        .await
    }

    pub(super) async fn new_join_token(
        &self,
        r: Request<CreateJoinTokenRequest>,
    ) -> Result<Response<CreateJoinTokenResponse>, Status> {
        call("CreateJoinToken", async {
            let auth = self.join_authority()?;
            if !is_operator(&r, auth.plaintext) {
                let who = caller(&r).map_or("a caller without a certificate".into(), |id| {
                    format!("certificate for {id}")
                });
                return Err(refused(
                    ErrorName::Forbidden,
                    format!("{who} may not create join tokens: run `lattice token create` on the BBS's machine"),
                ));
            }
            let r = r.into_inner();
            let req = join::TokenRequest {
                role: r.role.parse().map_err(|e| invalid("role", format!("{e}")))?,
                name: (!r.name.is_empty()).then_some(r.name),
                ttl: Duration::from_secs(r.ttl_seconds),
            };
            let (token, expires_at) = self.db.create_join_token(&req, auth.fingerprint()).await?;
            Ok(CreateJoinTokenResponse {
                token: token.to_string(),
                expires_at,
            })
        })
        .await
    }
}
