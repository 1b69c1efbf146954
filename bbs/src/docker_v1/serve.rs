//! The v1 face's HTTP server: `/v1/...` answered from the v2 registry (`super`),
//! `/v2/...` passed through to it as they come (streamed both ways, redirects and
//! auth challenges handed to the client), read-only.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use oci_client::secrets::RegistryAuth;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::upstream::{OciUpstream, Upstream, UpstreamError};
use super::{image_json, upstream_names, v1_request, KnownIds, V1Request};

/// Where the v1 face listens and the v2 registry it answers from.
#[derive(Clone, Debug)]
pub struct DockerV1Config {
    pub listen: SocketAddr,
    /// `http://HOST:PORT` or `https://HOST[:PORT]`.
    pub upstream: reqwest::Url,
}

/// Ids remembered between a client's tags and its image JSON (see [`KnownIds`]).
const KNOWN_IDS: usize = 4096;

/// The v1 face: the v2 registry, the ids handed out, the pass-through client.
pub struct Face {
    upstream: Arc<dyn Upstream>,
    known: Mutex<KnownIds>,
    base: reqwest::Url,
    pass: reqwest::Client,
}

impl Face {
    /// A face on `upstream`, passing `/v2/` through to `base`.
    pub fn new(upstream: Arc<dyn Upstream>, base: reqwest::Url) -> anyhow::Result<Face> {
        let pass = reqwest::Client::builder()
            // Redirects (blob storage) and challenges are the client's to follow.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Face {
            upstream,
            known: Mutex::new(KnownIds::new(KNOWN_IDS)),
            base,
            pass,
        })
    }

    fn remember(&self, repository: &str, tag: &str) -> String {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remember(repository, tag)
    }

    fn known(&self, id: &str) -> Option<(String, String)> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// The tags of the first of `name`'s upstream names the registry has, with that name.
    async fn tags_of(
        &self,
        name: &str,
        auth: &RegistryAuth,
    ) -> Result<(String, Vec<String>), UpstreamError> {
        let mut last = UpstreamError::NotFound;
        for candidate in upstream_names(name) {
            match self.upstream.tags(&candidate, auth).await {
                Ok(tags) => return Ok((candidate, tags)),
                Err(UpstreamError::NotFound) => last = UpstreamError::NotFound,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

/// Starts the face on `cfg.listen`, with `oci_client` towards `cfg.upstream`.
pub async fn start(
    cfg: &DockerV1Config,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let upstream = Arc::new(OciUpstream::new(&cfg.upstream)?);
    let face = Arc::new(Face::new(upstream, cfg.upstream.clone())?);
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "binding the Docker v1 registry listener {}: {e}",
            cfg.listen
        )
    })?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(crate::serve::serve(
        listener,
        router(face),
        Default::default(),
        None,
        stopped,
    ));
    tracing::info!(%addr, upstream = %cfg.upstream, "Docker v1 registry face serving");
    Ok((addr, task))
}

/// The face's routes (every path goes through [`handle`]).
pub fn router(face: Arc<Face>) -> Router {
    Router::new().fallback(handle).with_state(face)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn upstream_error(e: UpstreamError, what: &str) -> Response {
    match e {
        UpstreamError::NotFound => error(StatusCode::NOT_FOUND, format!("{what} not found")),
        UpstreamError::Unauthorized => error(
            StatusCode::UNAUTHORIZED,
            format!("the registry refused access to {what}: give its credentials"),
        ),
        UpstreamError::Failed(m) => error(
            StatusCode::BAD_GATEWAY,
            format!("the v2 registry behind this face failed for {what}: {m}"),
        ),
    }
}

/// The client's credentials as the v2 registry takes them: Basic passes through,
/// anything else (none, Docker's empty `Og==`) is anonymous.
pub fn auth_of(headers: &HeaderMap) -> RegistryAuth {
    use base64::Engine;
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    match basic.as_deref().and_then(|b| b.split_once(':')) {
        Some((user, password)) if !user.is_empty() => {
            RegistryAuth::Basic(user.to_string(), password.to_string())
        }
        _ => RegistryAuth::Anonymous,
    }
}

async fn handle(State(face): State<Arc<Face>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let (label, response) = if path == "/v2" || path.starts_with("/v2/") {
        ("v2", pass_through(&face, req).await)
    } else if !matches!(*req.method(), Method::GET | Method::HEAD) {
        (
            "unsupported",
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "this Docker v1 face is read-only: push to the v2 registry at {}",
                    face.base
                ),
            ),
        )
    } else {
        match v1_request(&path) {
            Some(r) => {
                let label = label_of(&r);
                (label, v1(&face, r, &auth_of(req.headers())).await)
            }
            None => (
                "unsupported",
                error(
                    StatusCode::NOT_FOUND,
                    "not a Docker registry path (this face serves /v1/ and passes /v2/ through)",
                ),
            ),
        }
    };
    crate::metrics::DOCKER_V1_REQUESTS
        .with_label_values(&[label, response.status().as_str()])
        .inc();
    tracing::debug!(%path, status = %response.status(), "docker v1 face");
    response
}

fn label_of(r: &V1Request) -> &'static str {
    match r {
        V1Request::Ping => "ping",
        V1Request::Images(_) => "images",
        V1Request::Tags(_) => "tags",
        V1Request::Tag(..) => "tag",
        V1Request::ImageJson(_) => "json",
        V1Request::Ancestry(_) => "ancestry",
        V1Request::Layer(_) => "layer",
        V1Request::Unsupported => "unsupported",
    }
}

async fn v1(face: &Face, r: V1Request, auth: &RegistryAuth) -> Response {
    match r {
        V1Request::Ping => (
            [
                ("X-Docker-Registry-Version", "0.9.1"),
                ("X-Docker-Registry-Standalone", "true"),
            ],
            axum::Json(json!(true)),
        )
            .into_response(),
        V1Request::Images(name) => match face.tags_of(&name, auth).await {
            Ok((repository, tags)) => {
                let images: Vec<Value> = tags
                    .iter()
                    .map(|t| json!({ "id": face.remember(&repository, t) }))
                    .collect();
                axum::Json(images).into_response()
            }
            Err(e) => upstream_error(e, &format!("repository {name}")),
        },
        V1Request::Tags(name) => match face.tags_of(&name, auth).await {
            Ok((repository, tags)) => {
                let map: serde_json::Map<String, Value> = tags
                    .iter()
                    .map(|t| (t.clone(), json!(face.remember(&repository, t))))
                    .collect();
                axum::Json(map).into_response()
            }
            Err(e) => upstream_error(e, &format!("repository {name}")),
        },
        V1Request::Tag(name, tag) => match face.tags_of(&name, auth).await {
            Ok((repository, tags)) if tags.contains(&tag) => {
                axum::Json(json!(face.remember(&repository, &tag))).into_response()
            }
            Ok(_) => error(StatusCode::NOT_FOUND, format!("tag {name}:{tag} not found")),
            Err(e) => upstream_error(e, &format!("repository {name}")),
        },
        V1Request::ImageJson(id) => {
            let Some((repository, tag)) = face.known(&id) else {
                return unknown_image(&id);
            };
            match face.upstream.config(&repository, &tag, auth).await {
                Ok(config) => axum::Json(image_json(&id, &config)).into_response(),
                Err(e) => upstream_error(e, &format!("image {repository}:{tag}")),
            }
        }
        V1Request::Ancestry(id) => match face.known(&id) {
            Some(_) => axum::Json(json!([id])).into_response(),
            None => unknown_image(&id),
        },
        V1Request::Layer(_) => error(
            StatusCode::NOT_FOUND,
            "layers are not served over v1: pull the image over v2 (/v2/ on this address)",
        ),
        V1Request::Unsupported => error(
            StatusCode::NOT_FOUND,
            "not served: this face answers v1 pulls' metadata (_ping, repositories/NAME/images|tags, images/ID/json|ancestry)",
        ),
    }
}

fn unknown_image(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "image {id} not known: ask for the repository's tags first (its ids come from them)"
        ),
    )
}

/// Request headers a registry client's pull needs passed on.
const PASSED_UP: [HeaderName; 4] = [
    header::ACCEPT,
    header::AUTHORIZATION,
    header::RANGE,
    header::IF_NONE_MATCH,
];

/// `/v2/...` to the v2 registry as it came; its answer back as it comes.
async fn pass_through(face: &Face, req: Request) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "this face is read-only: push to the v2 registry at {}",
                face.base
            ),
        );
    }
    let mut url = face.base.clone();
    url.set_path(req.uri().path());
    url.set_query(req.uri().query());
    // `..` (or `%2e%2e`) is resolved by set_path: what is left must still be /v2/.
    if !(url.path() == "/v2" || url.path().starts_with("/v2/")) {
        return error(StatusCode::NOT_FOUND, "only /v2/ is passed to the registry");
    }
    let mut up = face.pass.request(req.method().clone(), url);
    for h in PASSED_UP {
        for v in req.headers().get_all(&h) {
            up = up.header(&h, v);
        }
    }
    let answer = match up.send().await {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("the v2 registry at {} did not answer: {e}", face.base),
            )
        }
    };
    let mut out = Response::builder().status(answer.status().as_u16());
    // Hop-by-hop headers are that connection's, not this one's: the standard ones and
    // those its `Connection` names.
    let named: Vec<String> = answer
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in answer.headers() {
        let hop = matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "te"
                | "trailer"
                | "upgrade"
                | "proxy-authenticate"
                | "proxy-authorization"
        ) || named.iter().any(|n| n == name.as_str());
        if !hop {
            out = out.header(name.as_str(), value.as_bytes());
        }
    }
    out.body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|e| error(StatusCode::BAD_GATEWAY, e.to_string()))
}
