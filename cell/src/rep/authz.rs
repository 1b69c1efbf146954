//! Who may call a rep (the rules are `lattice_specs::authz`'s): `Perform` only
//! a brain, `State` a brain or the BBS, the HTTP routes `/v1/logs/…`,
//! `/v1/containers` and the exec and port-forward sessions
//! (`/v1/containers/HANDLE/exec|forward`) the BBS, `/metrics` and `/readyz`
//! every identity. The
//! caller is read from the request's extensions, where the TLS transport put
//! the peer's identity (none over plaintext loopback: a trusted local caller).
//! A refusal is logged, counted (`cell_authz_refused_total{role,call}`) and
//! answered with gRPC `PermissionDenied` (error name `Forbidden`) or HTTP 403 in
//! the receptor's error shape.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lattice_specs::authz::{authorize, Call, Caller, Refusal};
use lattice_specs::errors::{ErrorName, ERROR_NAME_KEY};
use tonic::metadata::MetadataValue;

use super::{Rep, Runtime};
use crate::metrics::Metrics;

/// The call an HTTP route of the rep is, by its route pattern (`None`: a route
/// with no rule, refused to everyone until it gets one here).
pub fn http_call(route: &str) -> Option<Call> {
    match route {
        "/metrics" => Some(Call::RepMetrics),
        "/readyz" => Some(Call::RepReady),
        "/v1/logs/{log_guid}" => Some(Call::RepLogs),
        "/v1/containers" => Some(Call::RepContainers),
        lattice_specs::exec::REP_EXEC => Some(Call::RepExec),
        lattice_specs::exec::REP_FORWARD => Some(Call::RepForward),
        _ => None,
    }
}

/// Whether the sender of a request with these extensions may make `call`; a
/// refusal is counted in `metrics` and logged.
fn allow(metrics: &Metrics, ext: &axum::http::Extensions, call: Call) -> Result<(), Refusal> {
    let caller = Caller::from_extensions(ext);
    authorize(&caller, call, None).inspect_err(|refusal| {
        metrics
            .authz_refused
            .with_label_values(&[caller.label(), call.name()])
            .inc();
        tracing::warn!(%refusal, "call to the rep refused");
    })
}

/// A gRPC call (`Perform`, `State`): `PermissionDenied` with the error name
/// `Forbidden` when the caller may not make it.
pub(super) fn allow_grpc<T>(
    metrics: &Metrics,
    r: &tonic::Request<T>,
    call: Call,
) -> Result<(), tonic::Status> {
    allow(metrics, r.extensions(), call).map_err(|refusal| {
        let mut s = tonic::Status::permission_denied(refusal.to_string());
        s.metadata_mut().insert(
            ERROR_NAME_KEY,
            MetadataValue::from_static(ErrorName::Forbidden.as_str()),
        );
        s
    })
}

/// Middleware on the rep's HTTP routes: 403 (`Forbidden`, the receptor's error
/// shape) when the caller may not call the route.
pub async fn allow_http<R: Runtime>(
    State(rep): State<Arc<Rep<R>>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
    let Some(call) = route.and_then(http_call) else {
        let route = route.unwrap_or(req.uri().path()).to_string();
        return forbidden(format!("the rep's route {route} has no authorization rule"));
    };
    match allow(&rep.metrics, req.extensions(), call) {
        Ok(()) => next.run(req).await,
        Err(refusal) => forbidden(refusal.to_string()),
    }
}

fn forbidden(message: String) -> Response {
    let body = lattice_specs::receptor::Error {
        name: ErrorName::Forbidden.to_string(),
        message,
    };
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use lattice_specs::identity::{Identity, Role};
    use lattice_specs::rep_api::rep_server::Rep as _;
    use lattice_specs::rep_api::{LrpStart, StateRequest, Work};
    use lattice_specs::testing::desired_lrp;

    use super::super::fake::{rep, FakeRuntime};
    use super::super::RepGrpc;
    use super::*;

    fn from<T>(role: Role, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.extensions_mut()
            .insert(Identity::new(role, &format!("{role}-1")).unwrap());
        r
    }

    fn work() -> Work {
        Work {
            lrps: vec![LrpStart {
                desired: Some(desired_lrp("web", 1)),
                index: 0,
            }],
            tasks: vec![],
        }
    }

    #[tokio::test]
    async fn perform_only_from_a_brain_and_state_from_a_brain_or_the_bbs() {
        let fake = FakeRuntime::new();
        let rep = rep(fake.clone());
        let grpc = RepGrpc(rep.clone());
        for role in [Role::Cell, Role::Router, Role::Bbs] {
            let s = grpc.perform(from(role, work())).await.unwrap_err();
            assert_eq!(s.code(), tonic::Code::PermissionDenied, "{role}");
            let name = s.metadata().get(ERROR_NAME_KEY).unwrap().to_str().unwrap();
            assert_eq!(ErrorName::parse(name), Some(ErrorName::Forbidden));
            assert_eq!(
                s.message(),
                format!("the certificate of {role} {role}-1 may not give a cell work (Perform): only a brain may")
            );
            let refused = rep
                .metrics
                .authz_refused
                .with_label_values(&[role.as_str(), "Perform"]);
            assert_eq!(refused.get(), 1, "{role}");
        }
        assert!(rep.state().lrps.is_empty(), "nothing was reserved");
        assert!(fake.calls().is_empty(), "nothing was started");

        // (The test's runtime runs one thread: the start spawned has not run yet.)
        let answer = grpc.perform(from(Role::Brain, work())).await.unwrap();
        assert_eq!(answer.into_inner().failed, Some(Work::default()));
        assert_eq!(rep.state().lrps.len(), 1, "the brain's work was taken");

        for role in [Role::Cell, Role::Router] {
            let s = grpc.state(from(role, StateRequest {})).await.unwrap_err();
            assert_eq!(s.code(), tonic::Code::PermissionDenied, "{role}");
        }
        for role in [Role::Brain, Role::Bbs] {
            let state = grpc.state(from(role, StateRequest {})).await.unwrap();
            assert_eq!(state.into_inner().cell_id, super::super::fixtures::CELL);
        }
        // A local caller (plaintext loopback) is trusted.
        grpc.state(tonic::Request::new(StateRequest {}))
            .await
            .unwrap();
    }

    #[test]
    fn every_http_route_of_the_rep_has_its_rule() {
        assert_eq!(http_call("/metrics"), Some(Call::RepMetrics));
        assert_eq!(http_call("/readyz"), Some(Call::RepReady));
        assert_eq!(http_call("/v1/logs/{log_guid}"), Some(Call::RepLogs));
        assert_eq!(http_call("/v1/containers"), Some(Call::RepContainers));
        assert_eq!(
            http_call("/v1/containers/{handle}/exec"),
            Some(Call::RepExec)
        );
        assert_eq!(
            http_call("/v1/containers/{handle}/forward"),
            Some(Call::RepForward)
        );
        assert_eq!(http_call("/v1/something-new"), None);
    }

    /// The rep's routes behind [`allow_http`], served on loopback; the identity is
    /// put in the request's extensions as the TLS transport would.
    async fn serve(identity: Option<Identity>) -> (std::net::SocketAddr, Arc<Rep<FakeRuntime>>) {
        use axum::routing::get;
        let rep = rep(FakeRuntime::new());
        let mut app = axum::Router::new()
            .route("/metrics", get(|| async { "metrics" }))
            .route("/v1/logs/{log_guid}", get(|| async { "logs" }))
            .route("/v1/containers", get(|| async { "containers" }))
            .route("/v1/unruled", get(|| async { "unruled" }))
            .route_layer(axum::middleware::from_fn_with_state(
                rep.clone(),
                allow_http,
            ))
            .with_state(());
        if let Some(id) = identity {
            app = app.layer(axum::Extension(id));
        }
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        (addr, rep)
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_http_routes_logs_and_containers_only_for_the_bbs() {
        let bbs = Identity::new(Role::Bbs, "bbs").unwrap();
        let brain = Identity::new(Role::Brain, "brain-1").unwrap();
        let (addr, _) = serve(Some(bbs)).await;
        assert_eq!(get(addr, "/v1/logs/app").await, (200, "logs".into()));
        assert_eq!(
            get(addr, "/v1/containers").await,
            (200, "containers".into())
        );

        let (addr, rep) = serve(Some(brain)).await;
        let (status, body) = get(addr, "/v1/containers").await;
        assert_eq!(status, 403);
        let e: lattice_specs::receptor::Error = serde_json::from_str(&body).unwrap();
        assert_eq!(e.name, "Forbidden");
        assert_eq!(
            e.message,
            "the certificate of brain brain-1 may not read a cell's containers (/v1/containers): only the BBS may"
        );
        assert_eq!(get(addr, "/v1/logs/app").await.0, 403);
        assert_eq!(get(addr, "/metrics").await, (200, "metrics".into()));
        let refused = |call| {
            rep.metrics
                .authz_refused
                .with_label_values(&["brain", call])
                .get()
        };
        assert_eq!((refused("/v1/containers"), refused("/v1/logs")), (1, 1));
        let (status, body) = get(addr, "/v1/unruled").await;
        assert_eq!(status, 403, "a route without a rule is refused: {body}");
        assert!(body.contains("has no authorization rule"), "{body}");

        let (addr, _) = serve(None).await;
        assert_eq!(
            get(addr, "/v1/containers").await.0,
            200,
            "local callers are trusted"
        );
    }
}

/// The rep's gRPC API over real mutual TLS on loopback (`lattice_tls`'s listener,
/// the peer identity put into the requests as in `lattice cell`).
#[cfg(test)]
mod mtls_tests {
    use std::time::Duration;

    use lattice_specs::rep_api::rep_client::RepClient;
    use lattice_specs::rep_api::rep_server::RepServer;
    use lattice_specs::rep_api::{PerformResponse, StateRequest, Work};
    use lattice_tls::ca::Ca;
    use lattice_tls::client::{lazy_channel, ClientTls};
    use lattice_tls::server::{with_identity, Listener};
    use lattice_tls::{ClientAuth, Identity, NodeTls, PeerInfo, Role};

    use super::super::fake::{rep, FakeRuntime};
    use super::super::fixtures::CELL;
    use super::super::RepGrpc;

    fn node(ca: &Ca, role: Role, name: &str) -> NodeTls {
        let who = Identity::new(role, name).unwrap();
        ca.issue_node(&who, &[], Duration::from_secs(3600)).unwrap()
    }

    #[tokio::test]
    async fn over_mutual_tls_perform_only_from_a_brain() {
        let ca = Ca::generate().unwrap();
        let rep = rep(FakeRuntime::new());
        let app = tonic::service::Routes::new(RepServer::new(RepGrpc(rep.clone())))
            .prepare()
            .into_axum_router();
        let tls = node(&ca, Role::Cell, CELL)
            .server_config(ClientAuth::Required)
            .unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = Listener::new(tcp, Some(tls)).unwrap();
        let addr = listener.local_addr().to_string();
        let app = with_identity(app).into_make_service_with_connect_info::<PeerInfo>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = |role, name: &str| {
            let cell = Identity::new(Role::Cell, CELL).unwrap();
            let tls = ClientTls::new(&node(&ca, role, name), cell).unwrap();
            RepClient::new(lazy_channel(&addr, Some(&tls), |e| e).unwrap())
        };

        let s = client(Role::Cell, "cell-2")
            .perform(Work::default())
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
        assert_eq!(
            s.message(),
            "the certificate of cell cell-2 may not give a cell work (Perform): only a brain may"
        );
        let s = client(Role::Router, "router-1")
            .state(StateRequest {})
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");

        let mut brain = client(Role::Brain, "brain-1");
        let answer = brain.perform(Work::default()).await.unwrap().into_inner();
        assert_eq!(
            answer,
            PerformResponse {
                failed: Some(Work::default())
            }
        );
        let state = brain.state(StateRequest {}).await.unwrap().into_inner();
        assert_eq!(state.cell_id, CELL);
        let refused = |role, call| {
            rep.metrics
                .authz_refused
                .with_label_values(&[role, call])
                .get()
        };
        assert_eq!(
            (refused("cell", "Perform"), refused("router", "State")),
            (1, 1)
        );
    }
}
