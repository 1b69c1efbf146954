//! OCI images: `oci:PATH[:TAG]` (an OCI image layout on the cell's disk) and
//! `docker://HOST[:PORT]/REPO[:TAG]` (pulled over the OCI distribution API, HTTPS, or
//! plain HTTP for registries the cell is told are insecure). Each layer is unpacked once
//! into a content-addressed cache (`images/layers/sha256/HEX`, keyed by the layer blob's
//! digest, verified) and shared by every container, which stacks the layers as overlay
//! lower directories. Whiteouts become overlayfs whiteouts (`.wh.NAME` → a 0/0 character
//! device, `.wh..wh..opq` → the `trusted.overlay.opaque` attribute). The image's
//! configuration (env, working directory, user, entrypoint, cmd, exposed ports) is kept
//! for the container's defaults.
//!
//! The rooms: `cache` holds the content-addressed layer cache and its garbage
//! collection, `layout` reads (and, for tests and benchmarks, writes) OCI image
//! layouts, `registry` pulls from registries, `unpack` turns a layer tar into a
//! directory; this module holds the image's configuration and the defaults it gives.

mod cache;
mod layout;
mod registry;
#[cfg(test)]
mod tests;
mod unpack;

pub use cache::ImageStore;
pub use layout::{write_layout, write_layout_with};
pub use unpack::unpack_layer;

use std::path::PathBuf;

use anyhow::Context;
use lattice_specs::models;
use serde::{Deserialize, Serialize};

/// What the image's configuration says a container should default to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub env: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub exposed_ports: Vec<u32>,
}

/// An image ready to mount: its unpacked layers (lowest first) and its configuration.
#[derive(Debug, Clone, Default)]
pub struct Image {
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConfigFile {
    config: RawConfig,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConfig {
    #[serde(rename = "Env")]
    env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint")]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd")]
    cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir")]
    working_dir: String,
    #[serde(rename = "User")]
    user: String,
    #[serde(rename = "ExposedPorts")]
    exposed_ports: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// Parses an image configuration blob (OCI or Docker).
pub fn parse_config(json: &[u8]) -> anyhow::Result<ImageConfig> {
    let c: ConfigFile =
        serde_json::from_slice(json).context("the image configuration is not JSON")?;
    let c = c.config;
    Ok(ImageConfig {
        env: c
            .env
            .unwrap_or_default()
            .iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        workdir: c.working_dir,
        user: c.user,
        exposed_ports: c
            .exposed_ports
            .unwrap_or_default()
            .keys()
            .filter_map(|p| p.split('/').next()?.parse().ok())
            .collect(),
    })
}

/// A Run left without a command after [`with_defaults`], if any.
pub fn missing_command(a: &models::Action) -> bool {
    use models::action::Action as A;
    match &a.action {
        Some(A::Run(r)) => r.path.is_empty(),
        Some(A::Timeout(t)) => t.action.as_deref().is_some_and(missing_command),
        Some(A::EmitProgress(e)) => e.action.as_deref().is_some_and(missing_command),
        Some(A::Try(t)) => t.action.as_deref().is_some_and(missing_command),
        Some(A::Serial(s)) => s.actions.iter().any(missing_command),
        Some(A::Parallel(p)) => p.actions.iter().any(missing_command),
        Some(A::Codependent(c)) => c.actions.iter().any(missing_command),
        _ => false,
    }
}

/// The image's environment under the request's: a variable the request sets wins.
pub fn merge_env(
    image: &[(String, String)],
    request: &[(String, String)],
) -> Vec<(String, String)> {
    image
        .iter()
        .filter(|(k, _)| !request.iter().any(|(r, _)| r == k))
        .chain(request)
        .cloned()
        .collect()
}

/// `action` with every Run that names no directory or user given the image's, and a
/// Run that names no path given the image's entrypoint and cmd.
pub fn with_defaults(action: &models::Action, cfg: &ImageConfig) -> models::Action {
    use models::action::Action as A;
    let mut a = action.clone();
    fn walk(a: &mut models::Action, cfg: &ImageConfig) {
        match a.action.as_mut() {
            Some(A::Run(r)) => {
                if r.path.is_empty() {
                    // Docker's rule: the entrypoint, then the given args or else cmd.
                    let rest = if r.args.is_empty() { &cfg.cmd } else { &r.args };
                    let mut argv = cfg.entrypoint.iter().chain(rest.iter()).cloned();
                    if let Some(path) = argv.next() {
                        r.path = path;
                        r.args = argv.collect();
                    }
                }
                if r.dir.is_empty() {
                    r.dir = cfg.workdir.clone();
                }
                if r.user.is_empty() {
                    r.user = cfg.user.clone();
                }
            }
            Some(A::Timeout(t)) => t.action.iter_mut().for_each(|a| walk(a, cfg)),
            Some(A::EmitProgress(e)) => e.action.iter_mut().for_each(|a| walk(a, cfg)),
            Some(A::Try(t)) => t.action.iter_mut().for_each(|a| walk(a, cfg)),
            Some(A::Serial(s)) => s.actions.iter_mut().for_each(|a| walk(a, cfg)),
            Some(A::Parallel(p)) => p.actions.iter_mut().for_each(|a| walk(a, cfg)),
            Some(A::Codependent(c)) => c.actions.iter_mut().for_each(|a| walk(a, cfg)),
            Some(A::Download(_)) | Some(A::Upload(_)) | Some(A::Repository(_)) | None => {}
        }
    }
    walk(&mut a, cfg);
    a
}

fn hex_of(digest: &str) -> anyhow::Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("unsupported digest {digest:?}: only sha256 is"))?;
    anyhow::ensure!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "malformed digest {digest:?}"
    );
    Ok(hex)
}
