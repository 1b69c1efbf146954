//! A repository over restic's REST protocol (v2, as rest-server and the BBS serve it):
//! `HEAD /config`, `GET /{type}/` listings, `GET` (with `Range`), `POST` and `DELETE`
//! of `/{type}/{id}`, `POST /?create=true`. rustic_backend has one too, but it reads its
//! CA roots from a file and resolves names itself; the chrooted helper can do neither,
//! so this one takes its roots from memory and its addresses from the job.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{StatusCode, Url};
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};

use super::job::RepoError;

/// Attempts of a request that failed without an answer or with a server error.
const ATTEMPTS: u32 = 4;
/// restic's packs are tens of MB; a slow store may take a while for one.
const TIMEOUT: Duration = Duration::from_secs(600);

/// One entry of a v2 listing.
#[derive(serde::Deserialize)]
struct Entry {
    name: String,
    size: u32,
}

/// The REST backend of one repository URL.
#[derive(Debug, Clone)]
pub(crate) struct RestBackend {
    url: Url,
    client: Client,
}

impl RestBackend {
    /// `url` (`https://USER:PASS@HOST:PORT/v1/repos/NAME/`), trusting `extra_ca_pem`
    /// besides the system's roots and reaching the names of `resolve` at their addresses;
    /// `confined`: no name may be resolved by the system (the helper is chrooted).
    pub(crate) fn new(
        url: &str,
        extra_ca_pem: &[String],
        resolve: &[(String, SocketAddr)],
        confined: bool,
    ) -> Result<RestBackend, RepoError> {
        let mut url = url.to_string();
        if !url.ends_with('/') {
            url.push('/');
        }
        let url = Url::parse(&url)
            .map_err(|e| RepoError::Job(format!("repository: not a URL after `rest:`: {e}")))?;
        let host = url.host_str().unwrap_or_default().to_string();
        let is_ip = host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok();
        if confined && !is_ip && !resolve.iter().any(|(name, _)| *name == host) {
            return Err(RepoError::Job(format!(
                "resolve: the repository host {host:?} has no address in the job (the \
                 confined helper resolves no name: the caller passes its addresses)"
            )));
        }
        let mut certs = Vec::new();
        for (i, pem) in extra_ca_pem.iter().enumerate() {
            certs.push(reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| {
                RepoError::Job(format!("extra_ca_pem[{i}]: not a PEM certificate: {e}"))
            })?);
        }
        let mut builder = Client::builder()
            .no_proxy()
            .timeout(TIMEOUT)
            .user_agent("lattice-repo")
            .tls_certs_merge(certs);
        let mut names: Vec<&str> = resolve.iter().map(|(n, _)| n.as_str()).collect();
        names.dedup();
        for name in names {
            let addrs: Vec<SocketAddr> = resolve
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, a)| *a)
                .collect();
            builder = builder.resolve_to_addrs(name, &addrs);
        }
        let client = builder
            .build()
            .map_err(|e| RepoError::Repository(format!("building the HTTP client: {e}")))?;
        Ok(RestBackend { url, client })
    }

    fn path_url(&self, path: &str) -> RusticResult<Url> {
        self.url.join(path).map_err(|e| {
            RusticError::with_source(ErrorKind::Internal, "joining the repository URL", e)
        })
    }

    fn file_url(&self, tpe: FileType, id: &Id) -> RusticResult<Url> {
        if tpe == FileType::Config {
            self.path_url("config")
        } else {
            self.path_url(&format!("{}/{}", tpe.dirname(), id.to_hex().as_str()))
        }
    }

    /// Sends the request `make` builds, again after a failure without an answer or a
    /// server error; a client error (4xx) is final (`Ok(None)` for a 404 when
    /// `ok_404`).
    fn try_send(
        &self,
        what: &str,
        make: impl Fn() -> RequestBuilder,
        ok_404: bool,
    ) -> Result<Option<Response>, String> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 << attempt));
            }
            match make().send() {
                Ok(r) if r.status().is_success() => return Ok(Some(r)),
                Ok(r) if ok_404 && r.status() == StatusCode::NOT_FOUND => return Ok(None),
                Ok(r) if r.status().is_client_error() => {
                    let status = r.status();
                    let body = r.text().unwrap_or_default();
                    return Err(format!("{status}: {}", body.trim()));
                }
                Ok(r) => last = format!("{}", r.status()),
                Err(e) => last = format!("{e:#}"),
            }
            tracing::warn!("{what}: {last} (attempt {})", attempt + 1);
        }
        Err(last)
    }

    /// [`Self::try_send`] for a request that must succeed.
    fn send(&self, what: &str, make: impl Fn() -> RequestBuilder) -> RusticResult<Response> {
        match self.try_send(what, make, false) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(http_error(what, "not found")),
            Err(e) => Err(http_error(what, &e)),
        }
    }

    /// The names in directory `dir` (restic's v2 listing).
    pub(crate) fn list_raw(&self, dir: &str) -> Result<Vec<String>, String> {
        Ok(self
            .list_entries(dir)?
            .into_iter()
            .map(|e| e.name)
            .collect())
    }

    fn list_entries(&self, dir: &str) -> Result<Vec<Entry>, String> {
        let url = self
            .url
            .join(&format!("{dir}/"))
            .map_err(|e| e.to_string())?;
        let what = format!("listing {dir}");
        let resp = self.try_send(
            &what,
            || {
                self.client
                    .get(url.clone())
                    .header("Accept", "application/vnd.x.restic.rest.v2")
            },
            true,
        )?;
        let Some(resp) = resp else {
            return Ok(Vec::new());
        };
        let entries: Option<Vec<Entry>> = resp.json().map_err(|e| format!("{what}: {e}"))?;
        Ok(entries.unwrap_or_default())
    }

    /// The whole file at `path`.
    pub(crate) fn get_raw(&self, path: &str) -> Result<Vec<u8>, String> {
        let url = self.url.join(path).map_err(|e| e.to_string())?;
        let resp = self.try_send(path, || self.client.get(url.clone()), false)?;
        let resp = resp.ok_or_else(|| format!("{path}: not found"))?;
        resp.bytes().map(|b| b.to_vec()).map_err(|e| e.to_string())
    }

    /// Deletes the file at `path`.
    pub(crate) fn delete_raw(&self, path: &str) -> Result<(), String> {
        let url = self.url.join(path).map_err(|e| e.to_string())?;
        self.try_send(path, || self.client.delete(url.clone()), true)?;
        Ok(())
    }

    fn redacted(&self) -> Url {
        let mut u = self.url.clone();
        if u.password().is_some() {
            let _ = u.set_password(Some("***"));
        }
        u
    }
}

fn http_error(what: &str, why: &str) -> Box<RusticError> {
    RusticError::new(ErrorKind::Backend, "{what}: {why}")
        .attach_context("what", what)
        .attach_context("why", why)
}

fn body_error(what: &str, e: reqwest::Error) -> Box<RusticError> {
    http_error(what, &format!("{e:#}"))
}

impl ReadBackend for RestBackend {
    fn location(&self) -> String {
        format!("rest:{}", self.redacted())
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            let url = self.path_url("config")?;
            let found = self
                .try_send("HEAD config", || self.client.head(url.clone()), true)
                .map_err(|e| http_error("HEAD config", &e))?;
            return Ok(found.map(|_| (Id::default(), 0)).into_iter().collect());
        }
        let entries = self
            .list_entries(tpe.dirname())
            .map_err(|e| http_error(&format!("listing {}", tpe.dirname()), &e))?;
        Ok(entries
            .into_iter()
            .filter_map(|e| Some((Id::parse_some(&e.name, tpe)?, e.size)))
            .collect())
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let what = format!("reading {}/{}", tpe.dirname(), id.to_hex().as_str());
        let url = self.file_url(tpe, id)?;
        let resp = self.send(&what, || self.client.get(url.clone()))?;
        resp.bytes().map_err(|e| body_error(&what, e))
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let what = format!(
            "reading {}/{} at {offset}",
            tpe.dirname(),
            id.to_hex().as_str()
        );
        let url = self.file_url(tpe, id)?;
        let range = format!(
            "bytes={offset}-{}",
            u64::from(offset) + u64::from(length).max(1) - 1
        );
        let resp = self.send(&what, || {
            self.client.get(url.clone()).header("Range", range.clone())
        })?;
        resp.bytes().map_err(|e| body_error(&what, e))
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        format!(
            "{}{}/{}",
            self.redacted(),
            tpe.dirname(),
            id.to_hex().as_str()
        )
    }
}

impl WriteBackend for RestBackend {
    fn create(&self) -> RusticResult<()> {
        let url = self.path_url("?create=true")?;
        self.send("creating the repository", || self.client.post(url.clone()))?;
        Ok(())
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let what = format!("writing {}/{}", tpe.dirname(), id.to_hex().as_str());
        let url = self.file_url(tpe, id)?;
        let body: Bytes = match content.slice() {
            [one] => one.clone(),
            parts => parts.concat().into(),
        };
        self.send(&what, || self.client.post(url.clone()).body(body.clone()))?;
        Ok(())
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let what = format!("removing {}/{}", tpe.dirname(), id.to_hex().as_str());
        let url = self.file_url(tpe, id)?;
        self.send(&what, || self.client.delete(url.clone()))?;
        Ok(())
    }
}
