//! Docker's v1 registry API, read side, in front of a v2 registry (the `distribution`
//! API every registry speaks today). The original Lattice `ltc create` (2015) reads an
//! image's start command, working directory and ports the way Docker 1.6 pulled: ping,
//! `GET /v1/repositories/NAME/images`, `GET /v1/repositories/NAME/tags` (a map of tag
//! to image id), `GET /v1/images/ID/json`. Registries stopped serving that API years
//! ago; this answers it from the v2 registry's tags, manifests and image configs, and
//! passes `/v2/` through, so the cell pulls the same `docker://HOST:PORT/NAME#TAG`
//! the original `ltc` writes into its DesiredLRP.
//!
//! The decisions (which request is which, the names to try upstream, the v1 image
//! JSON) are here; `serve` is the HTTP runner, `upstream` the v2 client behind a trait.
//!
//! A v1 image id names a *tag of a repository* (sha256 of `REPO:TAG`), not content:
//! v1 ids were layer ids, which a v2 registry does not have. The v1 clients this
//! serves read metadata only; layers are pulled over v2.

pub mod serve;
pub mod upstream;

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};
use sha2::Digest;

/// A request of the v1 API, by its path.
#[derive(Debug, PartialEq, Eq)]
pub enum V1Request {
    /// `GET /v1/_ping`.
    Ping,
    /// `GET /v1/repositories/NAME/images`: the repository's images (ids).
    Images(String),
    /// `GET /v1/repositories/NAME/tags`: tag → image id.
    Tags(String),
    /// `GET /v1/repositories/NAME/tags/TAG`: the tag's image id.
    Tag(String, String),
    /// `GET /v1/images/ID/json`.
    ImageJson(String),
    /// `GET /v1/images/ID/ancestry`: the image and its parents (ours have none).
    Ancestry(String),
    /// `GET /v1/images/ID/layer`: not served (layers come over v2).
    Layer(String),
    /// Anything else under `/v1/` (search, pushes, ...).
    Unsupported,
}

/// What a `/v1/...` path asks for; None when it is not under `/v1/`.
pub fn v1_request(path: &str) -> Option<V1Request> {
    let rest = path.strip_prefix("/v1/")?;
    let rest = rest.trim_end_matches('/');
    if rest == "_ping" {
        return Some(V1Request::Ping);
    }
    if let Some(repo) = rest.strip_prefix("repositories/") {
        if let Some(name) = repo.strip_suffix("/images") {
            return Some(checked(name).map_or(V1Request::Unsupported, V1Request::Images));
        }
        if let Some(name) = repo.strip_suffix("/tags") {
            return Some(checked(name).map_or(V1Request::Unsupported, V1Request::Tags));
        }
        if let Some((name, tag)) = repo.rsplit_once("/tags/") {
            return Some(match (checked(name), check_tag(tag)) {
                (Some(n), true) => V1Request::Tag(n, tag.to_string()),
                _ => V1Request::Unsupported,
            });
        }
        return Some(V1Request::Unsupported);
    }
    if let Some(image) = rest.strip_prefix("images/") {
        let Some((id, what)) = image.split_once('/') else {
            return Some(V1Request::Unsupported);
        };
        if !is_id(id) {
            return Some(V1Request::Unsupported);
        }
        let id = id.to_string();
        return Some(match what {
            "json" => V1Request::ImageJson(id),
            "ancestry" => V1Request::Ancestry(id),
            "layer" => V1Request::Layer(id),
            _ => V1Request::Unsupported,
        });
    }
    Some(V1Request::Unsupported)
}

/// A repository name as the distribution spec allows it (lower-case path components
/// of `[a-z0-9]` joined by `.`, `_`, `__` or `-`); None otherwise.
fn checked(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        });
    ok.then(|| name.to_string())
}

/// A tag as the distribution spec allows it: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn check_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn is_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The repositories to ask the v2 registry for, in order, for a v1 `name`. Docker's
/// 2015 client asks for the tags of `library/NAME` when the name has no namespace
/// (Docker Hub's official images), even of a private registry that knows it as
/// `NAME`; a v2 registry does no such mapping, so `library/NAME` falls back to `NAME`.
pub fn upstream_names(name: &str) -> Vec<String> {
    let mut names = vec![name.to_string()];
    if let Some(bare) = name.strip_prefix("library/") {
        if !bare.contains('/') {
            names.push(bare.to_string());
        }
    }
    names
}

/// The v1 id of `repository:tag`: 64 hex digits, as v1 ids were.
pub fn image_id(repository: &str, tag: &str) -> String {
    format!(
        "{:x}",
        sha2::Sha256::digest(format!("{repository}:{tag}").as_bytes())
    )
}

/// The v1 image JSON of an image whose v2 config blob is `config` (Docker's image
/// config or OCI's: the same field names). Docker's v1 JSON had the run settings in
/// `config` and the build container's in `container_config`; the original `ltc` reads
/// the start command and working directory from the first and the exposed ports from
/// the second, so a config without `container_config` (OCI images, most v2 builds)
/// gets `config` there too.
pub fn image_json(id: &str, config: &Value) -> Value {
    let run = config.get("config").cloned().unwrap_or_else(|| json!({}));
    let container = config
        .get("container_config")
        .filter(|c| c.get("ExposedPorts").is_some_and(|p| !p.is_null()))
        .cloned()
        .unwrap_or_else(|| run.clone());
    let mut out = json!({
        "id": id,
        "config": run,
        "container_config": container,
        "architecture": config.get("architecture").cloned().unwrap_or(json!("amd64")),
        "os": config.get("os").cloned().unwrap_or(json!("linux")),
        "Size": 0,
    });
    // Go's time.Time wants RFC 3339; leave it out rather than send something else.
    if let Some(created) = config
        .get("created")
        .and_then(Value::as_str)
        .filter(|c| chrono::DateTime::parse_from_rfc3339(c).is_ok())
    {
        out["created"] = json!(created);
    }
    out
}

/// The v1 ids handed out, each with the repository and tag it names: a v1 client asks
/// for `/v1/images/ID/json` after the repository's tags, without the repository. At
/// most `cap` are kept, the oldest forgotten first (a client asks within seconds).
pub struct KnownIds {
    cap: usize,
    order: VecDeque<String>,
    by_id: HashMap<String, (String, String)>,
}

impl KnownIds {
    pub fn new(cap: usize) -> KnownIds {
        KnownIds {
            cap: cap.max(1),
            order: VecDeque::new(),
            by_id: HashMap::new(),
        }
    }

    /// Records `repository:tag`; its id.
    pub fn remember(&mut self, repository: &str, tag: &str) -> String {
        let id = image_id(repository, tag);
        if !self.by_id.contains_key(&id) {
            if self.order.len() == self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.by_id.remove(&old);
                }
            }
            self.order.push_back(id.clone());
            self.by_id
                .insert(id.clone(), (repository.to_string(), tag.to_string()));
        }
        id
    }

    /// The repository and tag an id names, if it was handed out and not forgotten.
    pub fn get(&self, id: &str) -> Option<&(String, String)> {
        self.by_id.get(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests;
