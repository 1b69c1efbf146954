//! OCI images: `oci:PATH[:TAG]` (an OCI image layout on the cell's disk) and
//! `docker://HOST[:PORT]/REPO[:TAG]` (pulled over the OCI distribution API, HTTPS, or
//! plain HTTP for registries the cell is told are insecure). Each layer is unpacked once
//! into a content-addressed cache (`images/layers/sha256/HEX`, keyed by the layer blob's
//! digest, verified) and shared by every container, which stacks the layers as overlay
//! lower directories. Whiteouts become overlayfs whiteouts (`.wh.NAME` → a 0/0 character
//! device, `.wh..wh..opq` → the `trusted.overlay.opaque` attribute). The image's
//! configuration (env, working directory, user, entrypoint, cmd, exposed ports) is kept
//! for the container's defaults.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use lattice_specs::models;
use serde::{Deserialize, Serialize};
use sha2::Digest;

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
            Some(A::Download(_)) | Some(A::Upload(_)) | None => {}
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

/// The cell's image cache.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    /// Registries (HOST:PORT) spoken to over plain HTTP.
    insecure: Vec<String>,
    /// Registry → (user, password).
    credentials: BTreeMap<String, (String, String)>,
}

impl ImageStore {
    /// The cache at `root`, cleared of what a cell that died mid-unpack or mid-pull left
    /// (`.tmp-*` layer directories, `.pull-*` blobs).
    pub fn new(
        root: PathBuf,
        insecure: Vec<String>,
        credentials: BTreeMap<String, (String, String)>,
    ) -> ImageStore {
        for (dir, prefix) in [("layers/sha256", ".tmp-"), ("blobs", ".pull-")] {
            for e in std::fs::read_dir(root.join(dir))
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    let p = e.path();
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
            }
        }
        ImageStore {
            root,
            insecure,
            credentials,
        }
    }

    fn layer_dir(&self, digest: &str) -> anyhow::Result<PathBuf> {
        Ok(self.root.join("layers/sha256").join(hex_of(digest)?))
    }

    /// A cached layer is being used: its time of last use (the directory's mtime) is now.
    fn touch(dir: &Path) {
        if let Ok(f) = std::fs::File::open(dir) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// Garbage-collects the layer cache: removes every layer that no mounted overlay
    /// uses and that was last used more than `keep` ago. Returns how many went. The
    /// caller keeps containers from being created meanwhile (see the executor).
    pub fn collect(&self, keep: std::time::Duration) -> usize {
        let dir = self.root.join("layers/sha256");
        let in_use = mounted_lower_dirs();
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || in_use.contains(&path) {
                continue;
            }
            let idle = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if idle >= keep && std::fs::remove_dir_all(&path).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "image layers collected");
        }
        removed
    }

    /// Unpacks a layer blob (a file) into the cache unless it is there, checking its
    /// digest on the way.
    fn add_layer(&self, blob: &Path, media_type: &str, digest: &str) -> anyhow::Result<PathBuf> {
        let dest = self.layer_dir(digest)?;
        if dest.is_dir() {
            Self::touch(&dest);
            return Ok(dest);
        }
        let parent = dest.parent().unwrap();
        std::fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            // A regular file only (not a link to /dev/zero or elsewhere), whose digest is
            // checked before a byte of it is unpacked.
            let meta = std::fs::symlink_metadata(blob)
                .with_context(|| format!("reading layer {}", blob.display()))?;
            anyhow::ensure!(
                meta.is_file(),
                "layer {} is not a regular file",
                blob.display()
            );
            let mut hasher = sha2::Sha256::new();
            std::io::copy(&mut std::fs::File::open(blob)?, &mut hasher)?;
            let got = format!("sha256:{:x}", hasher.finalize());
            anyhow::ensure!(
                got == digest,
                "layer digest mismatch: expected {digest}, got {got}"
            );
            unpack_layer(&mut std::fs::File::open(blob)?, media_type, &tmp)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e.context(format!("unpacking layer {digest}")));
        }
        if std::fs::rename(&tmp, &dest).is_err() {
            // Someone else unpacked it meanwhile: theirs is as good.
            let _ = std::fs::remove_dir_all(&tmp);
            anyhow::ensure!(
                dest.is_dir(),
                "could not move layer {digest} into the cache"
            );
        }
        Ok(dest)
    }

    /// `oci:PATH[:TAG]`: the manifest named TAG (`org.opencontainers.image.ref.name`),
    /// or the only one, or the linux/amd64 one of a multi-platform index.
    pub fn from_layout(&self, path: &Path, tag: Option<&str>) -> anyhow::Result<Image> {
        let read = |p: &Path| -> anyhow::Result<Vec<u8>> {
            let meta =
                std::fs::symlink_metadata(p).with_context(|| format!("reading {}", p.display()))?;
            anyhow::ensure!(meta.is_file(), "{} is not a regular file", p.display());
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))
        };
        let blob = |digest: &str| -> anyhow::Result<PathBuf> {
            Ok(path.join("blobs/sha256").join(hex_of(digest)?))
        };
        let index: Index = serde_json::from_slice(&read(&path.join("index.json"))?)
            .with_context(|| format!("{}/index.json is not an OCI image index", path.display()))?;
        let mut chosen = match tag {
            Some(t) => index
                .manifests
                .iter()
                .find(|m| {
                    m.annotations
                        .get("org.opencontainers.image.ref.name")
                        .map(String::as_str)
                        == Some(t)
                })
                .with_context(|| format!("no image tagged {t:?} in {}", path.display()))?,
            None if index.manifests.len() == 1 => &index.manifests[0],
            None => anyhow::bail!(
                "{} holds {} images: name one with oci:{}:TAG",
                path.display(),
                index.manifests.len(),
                path.display()
            ),
        };
        let nested;
        if chosen.media_type.contains("image.index") || chosen.media_type.contains("manifest.list")
        {
            nested = serde_json::from_slice::<Index>(&read(&blob(&chosen.digest)?)?)?;
            chosen = nested
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .context("the image has no linux/amd64 variant")?;
        }
        let manifest: Manifest = serde_json::from_slice(&read(&blob(&chosen.digest)?)?)
            .with_context(|| format!("manifest {} is not an image manifest", chosen.digest))?;
        let config = parse_config(&read(&blob(&manifest.config.digest)?)?)?;
        let layers = manifest
            .layers
            .iter()
            .map(|l| self.add_layer(&blob(&l.digest)?, &l.media_type, &l.digest))
            .collect::<anyhow::Result<_>>()?;
        Ok(Image { layers, config })
    }

    /// `docker://REGISTRY/REPO:TAG`: pulls what the cache lacks; `progress` hears about
    /// each layer.
    pub async fn pull(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> anyhow::Result<Image> {
        use oci_client::client::{ClientConfig, ClientProtocol};
        let reference: oci_client::Reference = format!("{registry}/{repository}:{tag}")
            .parse()
            .with_context(|| format!("bad image reference {registry}/{repository}:{tag}"))?;
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.insecure.clone()),
            // A registry that stops answering fails the pull instead of stalling it.
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        });
        let auth = match self.credentials.get(registry) {
            Some((user, password)) => {
                oci_client::secrets::RegistryAuth::Basic(user.clone(), password.clone())
            }
            None => oci_client::secrets::RegistryAuth::Anonymous,
        };
        let (manifest, _digest, config) = client
            .pull_manifest_and_config(&reference, &auth)
            .await
            .map_err(|e| {
                let text = format!("{e:#}").to_ascii_lowercase();
                let hint = if !(text.contains("unauthorized")
                    || text.contains("not authorized")
                    || text.contains("401"))
                {
                    ""
                } else if self.credentials.contains_key(registry) {
                    " (the registry refused this cell's credentials for it)"
                } else {
                    " (the registry wants credentials: start the cell with --registry-credential HOST=USER:PASSWORD)"
                };
                anyhow::Error::from(e).context(format!("pulling the manifest of {reference}{hint}"))
            })?;
        let config = parse_config(config.as_bytes())?;
        let n = manifest.layers.len();
        let t0 = std::time::Instant::now();
        let mut layers = Vec::with_capacity(n);
        let mut fetched = 0u64;
        for (i, l) in manifest.layers.iter().enumerate() {
            let dest = self.layer_dir(&l.digest)?;
            if dest.is_dir() {
                Self::touch(&dest);
                layers.push(dest);
                continue;
            }
            progress(format!(
                "Downloading layer {}/{n} ({:.1} MB)",
                i + 1,
                l.size as f64 / 1e6
            ));
            std::fs::create_dir_all(self.root.join("blobs"))?;
            let tmp = self
                .root
                .join("blobs")
                .join(format!(".pull-{}", uuid::Uuid::new_v4().simple()));
            let file = tokio::fs::File::create(&tmp).await?;
            let pulled = client.pull_blob(&reference, l, file).await;
            let unpacked = match pulled {
                Ok(()) => {
                    let (store, tmp2, mt, dg) = (
                        self.clone(),
                        tmp.clone(),
                        l.media_type.clone(),
                        l.digest.clone(),
                    );
                    tokio::task::spawn_blocking(move || store.add_layer(&tmp2, &mt, &dg)).await?
                }
                Err(e) => {
                    Err(anyhow::Error::from(e).context(format!("pulling layer {}", l.digest)))
                }
            };
            let _ = std::fs::remove_file(&tmp);
            layers.push(unpacked?);
            fetched += l.size.max(0) as u64;
        }
        if fetched > 0 {
            progress(format!(
                "Downloaded {reference} ({:.1} MB) in {:.1}s",
                fetched as f64 / 1e6,
                t0.elapsed().as_secs_f64()
            ));
        }
        Ok(Image { layers, config })
    }
}

/// The lower directories of every overlay mounted in this mount namespace.
fn mounted_lower_dirs() -> std::collections::HashSet<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" - ")?;
            let mut f = rest.split(' ');
            (f.next()? == "overlay").then_some(())?;
            let opts = f.nth(1)?;
            opts.split(',')
                .find_map(|o| o.strip_prefix("lowerdir="))
                .map(String::from)
        })
        .flat_map(|lower| lower.split(':').map(PathBuf::from).collect::<Vec<_>>())
        .collect()
}

/// Unpacks a layer tar (gzip- or zstd-compressed or not, by media type) into `dest`,
/// turning whiteouts into overlayfs's.
pub fn unpack_layer(blob: &mut dyn Read, media_type: &str, dest: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest)?;
    let reader: Box<dyn Read + '_> = if media_type.contains("zstd") {
        Box::new(zstd::stream::read::Decoder::new(blob).context("reading a zstd layer")?)
    } else if media_type.contains("gzip") {
        Box::new(flate2::read::MultiGzDecoder::new(blob))
    } else {
        Box::new(blob)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    // Not the layer's xattrs: a layer must not plant trusted.overlay.* attributes.
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = safe_join(dest, path.parent().unwrap_or(Path::new("")))?;
            create_dirs_inside(dest, &parent)?;
            if hidden == ".wh..opq" {
                set_opaque(&parent)?;
            } else {
                let target = parent.join(hidden);
                let _ = std::fs::remove_file(&target);
                nix::sys::stat::mknod(
                    &target,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    nix::sys::stat::makedev(0, 0),
                )
                .with_context(|| format!("whiteout {}", target.display()))?;
            }
            continue;
        }
        entry
            .unpack_in(dest)
            .with_context(|| format!("unpacking {}", path.display()))?;
    }
    Ok(())
}

/// Creates `dir` (under `dest`) like `create_dir_all`, refusing to pass through a
/// symlink: a layer's `x -> /etc` followed by `x/.wh.shadow` must not reach the host.
fn create_dirs_inside(dest: &Path, dir: &Path) -> anyhow::Result<()> {
    let rel = dir
        .strip_prefix(dest)
        .context("a whiteout outside the layer")?;
    let mut at = dest.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                anyhow::bail!("whiteout under {}: a symlink in the layer", at.display())
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => anyhow::bail!("whiteout under {}: not a directory", at.display()),
            Err(_) => std::fs::create_dir(&at)?,
        }
    }
    Ok(())
}

/// `dest/rel`, refusing anything that climbs out of `dest`.
fn safe_join(dest: &Path, rel: &Path) -> anyhow::Result<PathBuf> {
    let mut out = dest.to_path_buf();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(p) => out.push(p),
            std::path::Component::CurDir | std::path::Component::RootDir => {}
            _ => anyhow::bail!("layer path {} leaves the layer", rel.display()),
        }
    }
    Ok(out)
}

fn set_opaque(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: valid NUL-terminated strings and a 1-byte value.
    let r = unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    anyhow::ensure!(
        r == 0,
        "marking {} opaque: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Builds an OCI image layout at `dir` tagged `tag`: one gzip layer per entry of
/// `layers` (each a list of (path in the image, content); a path ending in `/` is a
/// directory, `.wh.NAME` a whiteout), with `config` as the image's configuration. For
/// tests and benchmarks; a base directory (e.g. the busybox image) can be the first
/// layer via `base`.
pub fn write_layout(
    dir: &Path,
    tag: &str,
    base: Option<&Path>,
    layers: &[Vec<(&str, &str)>],
    config: &serde_json::Value,
) -> anyhow::Result<()> {
    write_layout_with(dir, tag, base, layers, config, false)
}

/// [`write_layout`] with zstd-compressed layers when `zstd`.
pub fn write_layout_with(
    dir: &Path,
    tag: &str,
    base: Option<&Path>,
    layers: &[Vec<(&str, &str)>],
    config: &serde_json::Value,
    zstd: bool,
) -> anyhow::Result<()> {
    let media_type = if zstd {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    } else {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    };
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let put = |bytes: &[u8]| -> anyhow::Result<(String, usize)> {
        let hex = format!("{:x}", sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes)?;
        Ok((format!("sha256:{hex}"), bytes.len()))
    };
    let gz_tar = |build: &dyn Fn(&mut tar::Builder<Vec<u8>>) -> anyhow::Result<()>| -> anyhow::Result<(Vec<u8>, String)> {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        build(&mut b)?;
        let tar = b.into_inner()?;
        let diff_id = format!("sha256:{:x}", sha2::Sha256::digest(&tar));
        if zstd {
            return Ok((zstd::stream::encode_all(&tar[..], 3)?, diff_id));
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar)?;
        Ok((gz.finish()?, diff_id))
    };
    let mut descs = vec![];
    let mut diff_ids = vec![];
    if let Some(base) = base {
        let (gz, diff) = gz_tar(&|b| Ok(b.append_dir_all(".", base)?))?;
        let (d, s) = put(&gz)?;
        descs.push(serde_json::json!({"mediaType": media_type, "digest": d, "size": s}));
        diff_ids.push(diff);
    }
    for files in layers {
        let (gz, diff) = gz_tar(&|b| {
            for (path, content) in files {
                let mut h = tar::Header::new_gnu();
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                if let Some(d) = path.strip_suffix('/') {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, d, std::io::empty())?;
                } else {
                    h.set_mode(0o644);
                    h.set_size(content.len() as u64);
                    b.append_data(&mut h, path, content.as_bytes())?;
                }
            }
            Ok(())
        })?;
        let (d, s) = put(&gz)?;
        descs.push(serde_json::json!({"mediaType": media_type, "digest": d, "size": s}));
        diff_ids.push(diff);
    }
    let mut cfg = config.clone();
    cfg["architecture"] = "amd64".into();
    cfg["os"] = "linux".into();
    cfg["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": diff_ids});
    let (cd, cs) = put(&serde_json::to_vec(&cfg)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs,
    });
    let (md, ms) = put(&serde_json::to_vec(&manifest)?)?;
    std::fs::write(
        dir.join("oci-layout"),
        br#"{"imageLayoutVersion": "1.0.0"}"#,
    )?;
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": md, "size": ms,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        }))?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_give_defaults() {
        let c = parse_config(
            br#"{"config": {"Env": ["PATH=/bin", "A=b=c"], "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "x"],
                 "WorkingDir": "/srv", "User": "vcap", "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.env,
            vec![("PATH".into(), "/bin".into()), ("A".into(), "b=c".into())]
        );
        assert_eq!((c.workdir.as_str(), c.user.as_str()), ("/srv", "vcap"));
        assert_eq!(c.exposed_ports, vec![53, 8080]);
        assert_eq!(parse_config(b"{}").unwrap(), ImageConfig::default());
        assert!(parse_config(b"nope").is_err());
    }

    #[test]
    fn layouts_unpack_once_with_whiteouts_and_checked_digests() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = tmp.path().join("layout");
        write_layout(
            &layout,
            "v1",
            None,
            &[
                vec![
                    ("etc/", ""),
                    ("etc/a", "one"),
                    ("etc/gone", "x"),
                    ("opaque/", ""),
                    ("opaque/old", "o"),
                ],
                vec![
                    ("etc/.wh.gone", ""),
                    ("opaque/.wh..wh..opq", ""),
                    ("opaque/new", "n"),
                ],
            ],
            &serde_json::json!({"config": {"WorkingDir": "/etc"}}),
        )
        .unwrap();
        let store = ImageStore::new(tmp.path().join("images"), vec![], Default::default());
        let img = store.from_layout(&layout, Some("v1")).unwrap();
        assert_eq!(img.layers.len(), 2);
        assert_eq!(img.config.workdir, "/etc");
        assert_eq!(
            std::fs::read_to_string(img.layers[0].join("etc/a")).unwrap(),
            "one"
        );
        let wh = std::fs::symlink_metadata(img.layers[1].join("etc/gone")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(
            wh.file_type().is_char_device(),
            "a whiteout is a 0/0 char device"
        );
        assert!(xattr_is_set(&img.layers[1].join("opaque")));
        // Leftovers of an interrupted unpack or pull are cleared when the cache opens.
        std::fs::create_dir_all(tmp.path().join("images/layers/sha256/.tmp-dead")).unwrap();
        std::fs::create_dir_all(tmp.path().join("images/blobs")).unwrap();
        std::fs::write(tmp.path().join("images/blobs/.pull-dead"), b"x").unwrap();
        let store = ImageStore::new(tmp.path().join("images"), vec![], Default::default());
        assert!(!tmp.path().join("images/layers/sha256/.tmp-dead").exists());
        assert!(!tmp.path().join("images/blobs/.pull-dead").exists());
        // Cached: the same directories, nothing unpacked twice.
        let again = store.from_layout(&layout, None).unwrap();
        assert_eq!(again.layers, img.layers);
        assert!(store
            .from_layout(&layout, Some("v2"))
            .unwrap_err()
            .to_string()
            .contains("no image tagged"));

        // A corrupted blob is refused and leaves nothing behind.
        let store2 = ImageStore::new(tmp.path().join("images2"), vec![], Default::default());
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let md = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(&md)).unwrap())
                .unwrap();
        let l0 = m["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        let blob = layout.join("blobs/sha256").join(&l0);
        let mut bytes = std::fs::read(&blob).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&blob, bytes).unwrap();
        let e = format!("{:#}", store2.from_layout(&layout, None).unwrap_err());
        assert!(e.contains("unpacking layer"), "{e}");
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("images2/layers/sha256"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "no half-unpacked layer kept");
    }

    fn xattr_is_set(p: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        let mut buf = [0u8; 4];
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        n == 1 && buf[0] == b'y'
    }

    #[test]
    fn image_defaults_fill_what_the_request_leaves_out() {
        let cfg = ImageConfig {
            workdir: "/srv".into(),
            user: "vcap".into(),
            ..Default::default()
        };
        let run = |dir: &str| models::Action {
            action: Some(models::action::Action::Run(models::RunAction {
                path: "x".into(),
                dir: dir.into(),
                ..Default::default()
            })),
        };
        let tree = models::Action {
            action: Some(models::action::Action::Serial(models::SerialAction {
                actions: vec![run(""), run("/mine")],
                ..Default::default()
            })),
        };
        let Some(models::action::Action::Serial(s)) = with_defaults(&tree, &cfg).action else {
            panic!()
        };
        let dirs: Vec<_> = s
            .actions
            .iter()
            .map(|a| match &a.action {
                Some(models::action::Action::Run(r)) => (r.dir.clone(), r.user.clone()),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            dirs,
            vec![
                ("/srv".into(), "vcap".into()),
                ("/mine".into(), "vcap".into())
            ]
        );
        let cmd = ImageConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo default".into()],
            ..Default::default()
        };
        let bare = |args: &[&str]| models::Action {
            action: Some(models::action::Action::Run(models::RunAction {
                args: args.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })),
        };
        let argv = |a: models::Action| match a.action {
            Some(models::action::Action::Run(r)) => (r.path, r.args),
            _ => panic!(),
        };
        assert_eq!(
            argv(with_defaults(&bare(&[]), &cmd)),
            ("/bin/sh".into(), vec!["-c".into(), "echo default".into()])
        );
        assert_eq!(
            argv(with_defaults(&bare(&["echo mine"]), &cmd)),
            ("/bin/sh".into(), vec!["-c".into(), "echo mine".into()]),
            "args replace cmd, the entrypoint stays"
        );
        assert!(missing_command(&with_defaults(
            &bare(&[]),
            &ImageConfig::default()
        )));
        assert!(!missing_command(&with_defaults(&bare(&[]), &cmd)));
        let env = merge_env(
            &[("PATH".into(), "/img".into()), ("A".into(), "1".into())],
            &[("PATH".into(), "/mine".into())],
        );
        assert_eq!(
            env,
            vec![("A".into(), "1".into()), ("PATH".into(), "/mine".into())]
        );
    }

    #[test]
    fn unsafe_whiteouts_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("shadow"), "secret").unwrap();
        // A layer with `x -> victim`, then `x/.wh.shadow`.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_link(&mut h, "x", &victim).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "x/.wh.shadow", std::io::empty())
            .unwrap();
        let layer = b.into_inner().unwrap();
        let dest = tmp.path().join("layer");
        let e = unpack_layer(
            &mut &layer[..],
            "application/vnd.oci.image.layer.v1.tar",
            &dest,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("symlink"), "{e:#}");
        assert_eq!(
            std::fs::read_to_string(victim.join("shadow")).unwrap(),
            "secret"
        );
        assert!(safe_join(Path::new("/x"), Path::new("../etc")).is_err());
        assert_eq!(
            safe_join(Path::new("/x"), Path::new("./a/b")).unwrap(),
            Path::new("/x/a/b")
        );
    }
}
