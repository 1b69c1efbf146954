//! OCI image layouts on disk: reading one (`oci:PATH[:TAG]`) into the cache, and
//! writing one (for tests and benchmarks).

use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::Digest;

use super::{hex_of, parse_config, Image, ImageStore, Index, Manifest};

impl ImageStore {
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
