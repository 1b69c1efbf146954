//! The layer cache: each layer unpacked once into `images/layers/sha256/HEX`, keyed
//! by its blob's digest (checked before a byte is unpacked), touched when used and
//! collected when no overlay has used it for a while.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::Digest;

use super::hex_of;
use super::unpack::unpack_layer;

/// The cell's image cache.
#[derive(Debug, Clone)]
pub struct ImageStore {
    pub(super) root: PathBuf,
    /// Registries (HOST:PORT) spoken to over plain HTTP.
    pub(super) insecure: Vec<String>,
    /// Registry → (user, password).
    pub(super) credentials: BTreeMap<String, (String, String)>,
    /// CA certificates (PEM) trusted besides the system's roots.
    pub(super) extra_ca: Vec<String>,
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
            extra_ca: Vec::new(),
        }
    }

    /// Registries' certificates are verified against the system's roots plus these
    /// CA certificates (PEM texts).
    pub fn with_extra_ca(mut self, extra_ca: Vec<String>) -> ImageStore {
        self.extra_ca = extra_ca;
        self
    }

    pub(super) fn layer_dir(&self, digest: &str) -> anyhow::Result<PathBuf> {
        Ok(self.root.join("layers/sha256").join(hex_of(digest)?))
    }

    /// A cached layer is being used: its time of last use (the directory's mtime) is now.
    pub(super) fn touch(dir: &Path) {
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
    pub(super) fn add_layer(
        &self,
        blob: &Path,
        media_type: &str,
        digest: &str,
    ) -> anyhow::Result<PathBuf> {
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
