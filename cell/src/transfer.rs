//! Download and Upload actions: moving files between a URL and a container's
//! filesystem, from the host side (paths resolve inside the container's root).

use std::path::Path;

use anyhow::Context;
use lattice_specs::models::{DownloadAction, UploadAction};
use sha2::Digest;

use crate::shim::resolve_in_root;

/// Fetches `d.from` and unpacks it (tar, or gzip-compressed tar) into `d.to` inside the
/// container; verifies the checksum first when one is given.
pub async fn download(rootfs: &Path, d: &DownloadAction) -> anyhow::Result<()> {
    let resp = reqwest::get(&d.from).await?.error_for_status()?;
    let body = resp.bytes().await?;
    verify(&body, &d.checksum_algorithm, &d.checksum_value)?;
    let dest = resolve_in_root(rootfs, &d.to);
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", d.to))?;
    let gz = body.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn std::io::Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(&body[..]))
    } else {
        Box::new(&body[..])
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    // tar's unpack refuses entries that would land outside `dest`.
    archive
        .unpack(&dest)
        .with_context(|| format!("unpacking into {} (expected a tar or tgz)", d.to))?;
    Ok(())
}

/// Checks `body` against a hex digest; an empty algorithm means no check.
pub fn verify(body: &[u8], algorithm: &str, expected: &str) -> anyhow::Result<()> {
    let actual = match algorithm {
        "" => return Ok(()),
        "sha256" => hex(&sha2::Sha256::digest(body)),
        "sha1" => hex(&sha1::Sha1::digest(body)),
        "md5" => hex(&md5::Md5::digest(body)),
        other => {
            anyhow::bail!("unsupported checksum algorithm {other:?} (use sha256, sha1 or md5)")
        }
    };
    if !actual.eq_ignore_ascii_case(expected.trim()) {
        anyhow::bail!("checksum mismatch: expected {algorithm} {expected}, got {actual}");
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends the file at `u.from` inside the container to `u.to` (HTTP POST of its bytes).
pub async fn upload(rootfs: &Path, u: &UploadAction) -> anyhow::Result<()> {
    let src = resolve_in_root(rootfs, &u.from);
    let body = std::fs::read(&src).with_context(|| format!("reading {}", u.from))?;
    reqwest::Client::new()
        .post(&u.to)
        .body(body)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        let sum = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        verify(b"hello", "sha256", sum).unwrap();
        verify(b"hello", "", "").unwrap();
        verify(b"hello", "md5", "5d41402abc4b2a76b9719d911017c592").unwrap();
        verify(b"hello", "sha1", "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d").unwrap();
        let err = verify(b"hellO", "sha256", sum).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(verify(b"x", "crc", "1")
            .unwrap_err()
            .to_string()
            .contains("sha256"));
    }
}
