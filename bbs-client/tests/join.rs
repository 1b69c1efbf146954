//! Joining over real TLS on real sockets: the BBS's server with mutual TLS whose
//! client certificates are optional (ClientAuth::Optional), as joining needs. A cell joins with a token, gets a
//! certificate naming it and talks mutual TLS with it; a used, expired or wrong-role
//! token, or a BBS of another CA, is refused with nothing issued; a certificate is
//! renewed while an event stream stays open; only the operator creates tokens.

use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::grpc::JoinAuthority;
use lattice_bbs::server::{self, BbsConfig, RunningBbs, StoreUrl};
use lattice_bbs_client::join::{self, bbs_identity, tls_channel, Credentials, JoinError};
use lattice_bbs_client::renew;
use lattice_bbs_client::BbsError;
use lattice_specs::bbs_api::bbs_client::BbsClient;
use lattice_specs::bbs_api::{CreateJoinTokenRequest, Empty, SubscribeRequest};
use lattice_specs::errors::ErrorName;
use lattice_specs::identity::{Identity, Role};
use lattice_specs::join::{CaFingerprint, JoinToken, TokenRequest};
use lattice_specs::models::{CellCapacity, CellPresence};
use lattice_tls::ca::Ca;
use lattice_tls::files::TlsFiles;
use lattice_tls::{ClientAuth, NodeTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_stream::StreamExt;

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    roots
}

/// The BBS (its real server, on an embedded store) serving gRPC over TLS with a
/// certificate of a fresh CA; client certificates are optional, for joiners.
struct TlsBbs {
    addr: String,
    bbs: RunningBbs,
    ca: Arc<Ca>,
    _dir: tempfile::TempDir,
}

async fn tls_bbs(validity: Duration) -> TlsBbs {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Ca::generate().unwrap());
    let own = ca
        .issue_new_key(&bbs_identity(), &[], Duration::from_secs(3600))
        .unwrap();
    let node = NodeTls::from_pem(
        own.cert.cert_pem.as_bytes(),
        own.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
    )
    .unwrap();
    let cfg = BbsConfig {
        tls: Some(node),
        grpc_client_auth: ClientAuth::Optional,
        join: Some(JoinAuthority {
            validity,
            ..JoinAuthority::new(ca.clone())
        }),
        ..BbsConfig::loopback(
            StoreUrl::File(dir.path().join("bbs.db")),
            Duration::from_secs(2),
        )
    };
    let bbs = server::start(cfg).await.unwrap();
    TlsBbs {
        addr: bbs.grpc_addr.to_string(),
        bbs,
        ca,
        _dir: dir,
    }
}

impl TlsBbs {
    async fn token(&self, role: Role, name: Option<&str>, ttl: Duration) -> JoinToken {
        let req = TokenRequest {
            role,
            name: name.map(String::from),
            ttl,
        };
        let fp = CaFingerprint::of_der(self.ca.cert_der());
        self.bbs.db.create_join_token(&req, fp).await.unwrap().0
    }

    /// A TLS channel on which the caller presents no certificate.
    async fn anonymous(&self) -> BbsClient<tonic::transport::Channel> {
        let config = rustls::ClientConfig::builder_with_provider(lattice_tls::config::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(self.ca.cert_pem()))
            .with_no_client_auth();
        BbsClient::new(
            tls_channel(&self.addr, config, &bbs_identity())
                .await
                .unwrap(),
        )
    }

    /// A channel on which `creds` authenticate the caller.
    async fn mtls(&self, creds: &Credentials) -> BbsClient<tonic::transport::Channel> {
        let config = rustls::ClientConfig::builder_with_provider(lattice_tls::config::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(&creds.ca_pem))
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(creds.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        BbsClient::new(
            tls_channel(&self.addr, config, &bbs_identity())
                .await
                .unwrap(),
        )
    }
}

fn cell(name: &str) -> Identity {
    Identity::new(Role::Cell, name).unwrap()
}

/// The identity a certificate names and its validity (Unix seconds).
fn named(cert_pem: &str) -> (Identity, i64, i64) {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let dns: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(dns.len(), 1, "{dns:?}");
    let v = cert.validity();
    (
        Identity::from_dns_name(&dns[0]).unwrap(),
        v.not_before.timestamp(),
        v.not_after.timestamp(),
    )
}

fn refusal(e: JoinError) -> BbsError {
    match e {
        JoinError::Refused(b) => b,
        other => panic!("expected a refusal by the BBS, got {other}"),
    }
}

#[tokio::test]
async fn a_cell_joins_with_a_token_gets_a_certificate_naming_it_and_talks_mutual_tls() {
    let bbs = tls_bbs(Duration::from_secs(3600)).await;
    let token = bbs.token(Role::Cell, None, Duration::from_secs(600)).await;
    let creds = join::join(&bbs.addr, &token, &cell("cell-a"))
        .await
        .unwrap();
    let (id, _, _) = named(&creds.cert_pem);
    assert_eq!(id, cell("cell-a"));
    assert_eq!(creds.ca_pem, bbs.ca.cert_pem());
    // The certificate authenticates the cell: the BBS renews it for that identity.
    let mut client = bbs.mtls(&creds).await;
    client.ping(Empty {}).await.unwrap();
    let again = join::renew(&mut client, &creds.key_pem, &cell("cell-a"))
        .await
        .unwrap();
    assert_eq!(named(&again).0, cell("cell-a"));
    // Whatever name the renewal request states, the certificate names the caller.
    let other = join::renew(&mut client, &creds.key_pem, &cell("cell-b"))
        .await
        .unwrap();
    assert_eq!(named(&other).0, cell("cell-a"));
    // A TLS caller without a certificate can neither renew nor create tokens.
    let e = bbs
        .anonymous()
        .await
        .renew_certificate(lattice_specs::bbs_api::RenewCertificateRequest {
            csr_pem: join::csr_pem(&creds.key_pem, &cell("cell-a")).unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let e = bbs
        .anonymous()
        .await
        .create_join_token(CreateJoinTokenRequest {
            role: "cell".into(),
            name: String::new(),
            ttl_seconds: 600,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    // Nor anything else: such a caller is anonymous, never a trusted local one.
    let mut anon = bbs.anonymous().await;
    let e = anon.cells(Empty {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    let e = anon
        .grant_lease(lattice_specs::bbs_api::GrantLeaseRequest { ttl_seconds: 10 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    let e = anon
        .acquire_lock(lattice_specs::bbs_api::AcquireLockRequest {
            key: "brain".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    // What joining needs stays open to it.
    anon.join_ca(Empty {}).await.unwrap();
}

#[tokio::test]
async fn used_expired_wrong_role_and_wrong_ca_tokens_issue_nothing() {
    let bbs = tls_bbs(Duration::from_secs(3600)).await;
    let token = bbs
        .token(Role::Cell, Some("cell-a"), Duration::from_secs(600))
        .await;

    // Another CA's fingerprint: the client stops before sending anything.
    let foreign = JoinToken {
        ca: CaFingerprint([9; 32]),
        ..token.clone()
    };
    let e = join::join(&bbs.addr, &foreign, &cell("cell-a"))
        .await
        .unwrap_err();
    assert!(matches!(e, JoinError::WrongCa { .. }), "{e}");
    assert!(e.to_string().contains("nothing was sent"), "{e}");

    // The wrong role, the wrong name: refused, the token stays usable.
    let brain = Identity::new(Role::Brain, "cell-a").unwrap();
    let e = refusal(join::join(&bbs.addr, &token, &brain).await.unwrap_err());
    assert_eq!(e.name, Some(ErrorName::Forbidden), "{e}");
    assert!(e.message.contains("for a cell, not a brain"), "{e}");
    let e = refusal(
        join::join(&bbs.addr, &token, &cell("cell-b"))
            .await
            .unwrap_err(),
    );
    assert!(e.message.contains("only as \"cell-a\""), "{e}");

    // Used once; the second use is refused.
    join::join(&bbs.addr, &token, &cell("cell-a"))
        .await
        .unwrap();
    let e = refusal(
        join::join(&bbs.addr, &token, &cell("cell-a"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.name, Some(ErrorName::Forbidden), "{e}");
    assert!(e.message.contains("already used"), "{e}");

    // Expired.
    let short = bbs.token(Role::Cell, None, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = refusal(
        join::join(&bbs.addr, &short, &cell("cell-x"))
            .await
            .unwrap_err(),
    );
    assert!(e.message.contains("expired"), "{e}");

    // A forged secret is no token.
    let forged = JoinToken {
        secret: "0".repeat(64),
        ..bbs.token(Role::Cell, None, Duration::from_secs(600)).await
    };
    let e = refusal(
        join::join(&bbs.addr, &forged, &cell("cell-y"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.name, Some(ErrorName::Unauthorized), "{e}");
}

#[tokio::test]
async fn a_certificate_is_renewed_while_an_event_stream_stays_open() {
    // The CA's shortest validity; renewal is due after two thirds of it.
    let bbs = tls_bbs(Duration::from_secs(60)).await;
    let token = bbs.token(Role::Cell, None, Duration::from_secs(600)).await;
    let creds = join::join(&bbs.addr, &token, &cell("cell-a"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles::in_dir(dir.path(), "cell");
    renew::write_private(&files.key, creds.key_pem.as_bytes()).unwrap();
    renew::write_private(&files.cert, creds.cert_pem.as_bytes()).unwrap();
    let now = chrono::Utc::now().timestamp();
    let due = renew::due(&creds.cert_pem, now).unwrap();
    assert!(
        (now + 35..=now + 45).contains(&due),
        "due {}s from now",
        due - now
    );

    let mut client = bbs.mtls(&creds).await;
    let mut events = client
        .subscribe_events(SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    renew::renew_once(&mut client, &files, &cell("cell-a"))
        .await
        .unwrap();
    let renewed = std::fs::read_to_string(&files.cert).unwrap();
    assert_ne!(renewed, creds.cert_pem);
    let (id, _, not_after) = named(&renewed);
    assert_eq!(id, cell("cell-a"));
    assert!(not_after >= named(&creds.cert_pem).2);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&files.cert).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // The stream opened before the renewal still delivers.
    let lease = bbs
        .bbs
        .db
        .grant_lease(Duration::from_secs(30))
        .await
        .unwrap();
    let presence = CellPresence {
        cell_id: "cell-a".into(),
        rep_address: "127.0.0.1:1800".into(),
        capacity: Some(CellCapacity::default()),
        ..Default::default()
    };
    bbs.bbs
        .db
        .set_cell_presence(&presence, lease)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s");
    assert!(got.is_some_and(|e| e.is_ok()));
    // The renewed certificate (same key) authenticates as the same identity.
    let creds2 = Credentials {
        cert_pem: renewed,
        ..creds.clone()
    };
    bbs.mtls(&creds2).await.ping(Empty {}).await.unwrap();
}

#[tokio::test]
async fn only_the_operator_creates_join_tokens() {
    let bbs = tls_bbs(Duration::from_secs(3600)).await;
    let ask = CreateJoinTokenRequest {
        role: "cell".into(),
        name: String::new(),
        ttl_seconds: 600,
    };
    // A cell's certificate may not.
    let token = bbs.token(Role::Cell, None, Duration::from_secs(600)).await;
    let creds = join::join(&bbs.addr, &token, &cell("cell-a"))
        .await
        .unwrap();
    let e = bbs
        .mtls(&creds)
        .await
        .create_join_token(ask.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("certificate for cell cell-a"), "{e}");
    // The BBS's own identity may, and the token it gets joins.
    let op = bbs
        .ca
        .issue_new_key(&bbs_identity(), &[], Duration::from_secs(600))
        .unwrap();
    let op = Credentials {
        key_pem: op.key_pem,
        cert_pem: op.cert.cert_pem,
        ca_pem: bbs.ca.cert_pem().to_string(),
    };
    let made = bbs
        .mtls(&op)
        .await
        .create_join_token(ask)
        .await
        .unwrap()
        .into_inner();
    let token: JoinToken = made.token.parse().unwrap();
    assert_eq!(token.ca, CaFingerprint::of_der(bbs.ca.cert_der()));
    join::join(&bbs.addr, &token, &cell("cell-b"))
        .await
        .unwrap();
}
