//! Unpacking a layer tar into a directory: gzip, zstd or plain; whiteouts become
//! overlayfs whiteouts (`.wh.NAME` → a 0/0 character device, `.wh..wh..opq` → the
//! `trusted.overlay.opaque` attribute); nothing climbs out of the layer.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

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
pub(super) fn safe_join(dest: &Path, rel: &Path) -> anyhow::Result<PathBuf> {
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
    // SAFETY: `path` and `name` are NUL-terminated strings alive for the call, and the
    // value is 1 byte long, as the size passed says; the call only reads them.
    let r = unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    anyhow::ensure!(
        r == 0,
        "marking {} opaque: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
    Ok(())
}
