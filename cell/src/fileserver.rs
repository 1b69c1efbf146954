//! The lifecycle file server Diego's cells reach at
//! `file-server.service.cf.internal:8080`: `GET /v1/static/NAME/NAME.tgz` for the
//! lifecycles the original `ltc create` downloads into every app's /tmp
//! (`buildpack_app_lifecycle`, `docker_app_lifecycle`), each a gzip tar of flat,
//! executable entries: our static `healthcheck` and `diego-sshd` (the binaries come
//! from the `lattice` binary, which embeds them). Every cell serves it itself, on its
//! bridge's gateway: its Download actions are pointed there (see
//! [`crate::transfer::redirect`]), its containers resolve the name to the gateway
//! through the cell's DNS, and the cell's firewall sends their port 8080 to it —
//! so no host beyond the cell is involved, and nothing listens beyond the cell's
//! bridge. What it serves is public (our own builds), read-only and fixed.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// The name Diego's LRPs download lifecycles from.
pub const NAME: &str = "file-server.service.cf.internal";
/// Its port in those URLs.
pub const PORT: u16 = 8080;

/// The lifecycles served, by name (each at `/v1/static/NAME/NAME.tgz`).
pub const LIFECYCLES: &[&str] = &["buildpack_app_lifecycle", "docker_app_lifecycle"];

/// The binaries the lifecycles hold.
#[derive(Clone)]
pub struct Binaries {
    pub healthcheck: Bytes,
    pub diego_sshd: Bytes,
}

impl std::fmt::Debug for Binaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binaries")
            .field("healthcheck", &self.healthcheck.len())
            .field("diego_sshd", &self.diego_sshd.len())
            .finish()
    }
}

/// A lifecycle tarball: a gzip tar of flat entries `healthcheck` and `diego-sshd`,
/// mode 0755, owned by root (anyone can run them, whatever user the LRP's Download
/// action unpacks them as).
pub fn tarball(bins: &Binaries) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    // Fixed, so the same binaries make the same bytes.
    let mtime = 1_448_409_600; // 2015-11-25, Lattice v0.7's release
    for (name, body) in [
        ("healthcheck", &bins.healthcheck),
        ("diego-sshd", &bins.diego_sshd),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, &body[..])?;
    }
    tar.into_inner()?.finish()
}

/// Which tarball a request path names (`NAME`, `NAME.tgz`), if any.
pub fn lifecycle(dir: &str, file: &str) -> Option<&'static str> {
    LIFECYCLES
        .iter()
        .find(|l| dir == **l && file.strip_suffix(".tgz") == Some(**l))
        .copied()
}

/// What the server holds: the binaries, and the tarball made of them at the first
/// request (both lifecycles hold the same entries).
struct Served {
    bins: Binaries,
    tgz: OnceCell<Bytes>,
}

async fn get_lifecycle(
    State(s): State<Arc<Served>>,
    Path((dir, file)): Path<(String, String)>,
) -> Response {
    let Some(name) = lifecycle(&dir, &file) else {
        return (StatusCode::NOT_FOUND, "no such lifecycle\n").into_response();
    };
    let bins = s.bins.clone();
    let made = s
        .tgz
        .get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || tarball(&bins).map(Bytes::from))
                .await
                .map_err(std::io::Error::other)?
        })
        .await;
    match made {
        Ok(body) => {
            tracing::debug!(lifecycle = name, bytes = body.len(), "lifecycle served");
            ([(header::CONTENT_TYPE, "application/gzip")], body.clone()).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot make the lifecycle tarball");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot make the lifecycle\n",
            )
                .into_response()
        }
    }
}

/// The routes: `GET /v1/static/NAME/NAME.tgz`; anything else 404.
pub fn router(bins: Binaries) -> axum::Router {
    let served = Arc::new(Served {
        bins,
        tgz: OnceCell::new(),
    });
    axum::Router::new()
        .route("/v1/static/{dir}/{file}", axum::routing::get(get_lifecycle))
        .with_state(served)
}

/// A running file server.
pub struct FileServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    /// Listens on `ip` (a free port) and serves `bins`.
    pub async fn start(ip: Ipv4Addr, bins: Binaries) -> std::io::Result<FileServer> {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let app = router(bins);
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "the lifecycle file server stopped");
            }
        });
        tracing::info!(%addr, "lifecycle file server listening ({NAME}:{PORT} for containers)");
        Ok(FileServer { addr, stop, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn bins() -> Binaries {
        Binaries {
            healthcheck: Bytes::from_static(b"#!hc"),
            diego_sshd: Bytes::from_static(b"#!sshd"),
        }
    }

    #[test]
    fn the_tarball_holds_flat_executable_entries() {
        let tgz = tarball(&bins()).unwrap();
        assert_eq!(&tgz[..2], &[0x1f, 0x8b], "gzip");
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&tgz[..]));
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mode = e.header().mode().unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            seen.push((path, mode, body));
        }
        assert_eq!(
            seen,
            vec![
                ("healthcheck".to_string(), 0o755, b"#!hc".to_vec()),
                ("diego-sshd".to_string(), 0o755, b"#!sshd".to_vec()),
            ]
        );
    }

    #[test]
    fn paths_name_a_known_lifecycle_or_nothing() {
        assert_eq!(
            lifecycle("buildpack_app_lifecycle", "buildpack_app_lifecycle.tgz"),
            Some("buildpack_app_lifecycle")
        );
        assert_eq!(
            lifecycle("docker_app_lifecycle", "docker_app_lifecycle.tgz"),
            Some("docker_app_lifecycle")
        );
        for (d, f) in [
            ("buildpack_app_lifecycle", "docker_app_lifecycle.tgz"),
            ("windows_app_lifecycle", "windows_app_lifecycle.tgz"),
            ("buildpack_app_lifecycle", "buildpack_app_lifecycle"),
            ("..", "buildpack_app_lifecycle.tgz"),
        ] {
            assert_eq!(lifecycle(d, f), None, "{d}/{f}");
        }
    }

    #[tokio::test]
    async fn served_over_http_unknown_ones_404() {
        let server = FileServer::start(Ipv4Addr::LOCALHOST, bins())
            .await
            .unwrap();
        let base = format!("http://{}", server.addr());
        let http = reqwest::Client::new();
        for l in LIFECYCLES {
            let r = http
                .get(format!("{base}/v1/static/{l}/{l}.tgz"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "application/gzip");
            let body = r.bytes().await.unwrap();
            assert_eq!(&body[..], &tarball(&bins()).unwrap()[..]);
        }
        for bad in [
            "/v1/static/cell-helpers/cell-helpers.tgz",
            "/v1/static/buildpack_app_lifecycle",
            "/",
        ] {
            let r = http.get(format!("{base}{bad}")).send().await.unwrap();
            assert_eq!(r.status(), 404, "{bad}");
        }
        server.stop().await;
    }
}
