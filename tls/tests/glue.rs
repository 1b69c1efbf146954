//! The server glue end to end over real mTLS: a tonic server fed by [`Listener`] and
//! an axum server (the rep's shape) both hand their handlers the caller's
//! [`Identity`] as a request extension; a client over [`lazy_channel`] reaches them.

mod common;

use common::node;
use std::time::Duration;

use axum::routing::get;
use axum::Extension;
use lattice_tls::ca::Ca;
use lattice_tls::client::{lazy_channel, ClientTls};
use lattice_tls::server::{identity_interceptor, with_identity, Listener};
use lattice_tls::{ClientAuth, Identity, PeerInfo, Role};
use tonic::transport::Channel;
use tower_service::Service;

/// Answers with the caller's identity (or "nobody") in a header.
fn who_app() -> axum::Router {
    axum::Router::new().route(
        "/who",
        get(|id: Option<Extension<Identity>>| async move {
            let who = id
                .map(|Extension(i)| i.dns_name())
                .unwrap_or("nobody".into());
            ([("x-identity", who)], "")
        }),
    )
}

async fn ask(mut ch: Channel) -> Result<String, String> {
    futures::future::poll_fn(|cx| ch.poll_ready(cx))
        .await
        .map_err(|e| format!("{e:?}"))?;
    let req = http::Request::get("http://x/who")
        .body(tonic::body::Body::empty())
        .unwrap();
    let res = ch.call(req).await.map_err(|e| format!("{e:?}"))?;
    Ok(res.headers()["x-identity"].to_str().unwrap().to_string())
}

#[tokio::test]
async fn tonic_and_axum_handlers_see_the_callers_identity() {
    let ca = Ca::generate().unwrap();
    let bbs = node(&ca, Role::Bbs, "bbs");
    let cell_id = Identity::new(Role::Cell, "cell-a").unwrap();
    let brain = node(&ca, Role::Brain, "brain-1");

    // tonic: the BBS's shape.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l = Listener::new(tcp, Some(bbs.server_config(ClientAuth::Required).unwrap())).unwrap();
    let grpc_addr = l.local_addr();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(tonic::service::InterceptorLayer::new(identity_interceptor))
            .add_routes(tonic::service::Routes::from(who_app()))
            .serve_with_incoming(l.into_incoming()),
    );
    // axum: the rep's shape.
    let cell = node(&ca, Role::Cell, "cell-a");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l = Listener::new(tcp, Some(cell.server_config(ClientAuth::Required).unwrap())).unwrap();
    let rep_addr = l.local_addr();
    let app = with_identity(who_app()).into_make_service_with_connect_info::<PeerInfo>();
    tokio::spawn(async move { axum::serve(l, app).await });

    let to_bbs = ClientTls::new(&brain, lattice_tls::bbs_identity()).unwrap();
    let ch = lazy_channel(&grpc_addr.to_string(), Some(&to_bbs), |e| e).unwrap();
    assert_eq!(ask(ch).await, Ok("brain-1.brain.lattice".to_string()));
    let to_rep = to_bbs.for_server(cell_id.clone());
    let url = format!("https://{rep_addr}");
    let ch = lazy_channel(&url, Some(&to_rep), |e| e).unwrap();
    assert_eq!(ask(ch).await, Ok("brain-1.brain.lattice".to_string()));

    // Plaintext to either: no answer.
    for addr in [grpc_addr, rep_addr] {
        let ch = lazy_channel(&addr.to_string(), None, |e| {
            e.timeout(Duration::from_secs(5))
        })
        .unwrap();
        let e = ask(ch).await.unwrap_err();
        assert!(!e.contains("nobody"), "{e}");
    }
    // The rep expected where the BBS is: refused by the client.
    let wrong = to_bbs.for_server(cell_id);
    let ch = lazy_channel(&grpc_addr.to_string(), Some(&wrong), |e| e).unwrap();
    let e = ask(ch).await.unwrap_err();
    assert!(e.contains("not valid for name"), "{e}");
}

#[tokio::test]
async fn plaintext_on_loopback_carries_no_identity() {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l = Listener::new(tcp, None).unwrap();
    let addr = l.local_addr();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(tonic::service::InterceptorLayer::new(identity_interceptor))
            .add_routes(tonic::service::Routes::from(who_app()))
            .serve_with_incoming(l.into_incoming()),
    );
    let ch = lazy_channel(&addr.to_string(), None, |e| e).unwrap();
    assert_eq!(ask(ch).await, Ok("nobody".to_string()));
}
