//! Download and Upload actions: moving files between a URL and a container's
//! filesystem, from the host side (paths resolve inside the container's root).

use std::path::{Path, PathBuf};

use anyhow::Context;
use lattice_specs::models::{DownloadAction, UploadAction};
use sha2::Digest;

/// Fetches `d.from` and unpacks it (tar, or gzip-compressed tar) into `dest` (the
/// host path of `d.to`). The archive is streamed to a file in `scratch` (the
/// container's own filesystem, so a volume never holds it) and its checksum, when
/// given, verified before anything is unpacked; a failed unpack removes what it had
/// made, so a bad archive leaves nothing behind.
pub async fn download(dest: PathBuf, scratch: &Path, d: &DownloadAction) -> anyhow::Result<()> {
    let tmp = scratch.join(format!(
        ".lattice-download-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let fetched = fetch(&d.from, &tmp).await;
    let result = async {
        let digests = fetched?;
        verify(&digests, &d.checksum_algorithm, &d.checksum_value)?;
        let existed = dest.exists();
        let (tmp2, dest2, to) = (tmp.clone(), dest.clone(), d.to.clone());
        let unpacked = tokio::task::spawn_blocking(move || unpack(&tmp2, &dest2, &to)).await?;
        if unpacked.is_err() && !existed {
            let _ = std::fs::remove_dir_all(&dest);
        }
        unpacked
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    result
}

struct Digests {
    sha256: String,
    sha1: String,
    md5: String,
}

impl Digests {
    #[cfg(test)]
    fn of(body: &[u8]) -> Digests {
        Digests {
            sha256: hex(&sha2::Sha256::digest(body)),
            sha1: hex(&sha1::Sha1::digest(body)),
            md5: hex(&md5::Md5::digest(body)),
        }
    }
}

/// Streams `url` into `file`, hashing on the way.
async fn fetch(url: &str, file: &Path) -> anyhow::Result<Digests> {
    use tokio::io::AsyncWriteExt;
    let mut resp = reqwest::get(url).await?.error_for_status()?;
    let mut out = tokio::fs::File::create(file).await?;
    let (mut s256, mut s1, mut m5) = (sha2::Sha256::new(), sha1::Sha1::new(), md5::Md5::new());
    while let Some(chunk) = resp.chunk().await? {
        s256.update(&chunk);
        s1.update(&chunk);
        m5.update(&chunk);
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    Ok(Digests {
        sha256: hex(&s256.finalize()),
        sha1: hex(&s1.finalize()),
        md5: hex(&m5.finalize()),
    })
}

fn unpack(archive: &Path, dest: &Path, to: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {to}"))?;
    let mut f = std::io::BufReader::new(std::fs::File::open(archive)?);
    let gz = std::io::BufRead::fill_buf(&mut f)?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn std::io::Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    // tar's unpack refuses entries that would land outside `dest`.
    archive
        .unpack(dest)
        .with_context(|| format!("unpacking into {to} (expected a tar or tgz)"))
}

/// Checks the digests against a hex digest; an empty algorithm means no check.
fn verify(d: &Digests, algorithm: &str, expected: &str) -> anyhow::Result<()> {
    let actual = match algorithm {
        "" => return Ok(()),
        "sha256" => &d.sha256,
        "sha1" => &d.sha1,
        "md5" => &d.md5,
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

/// Sends `src` (the host path of `u.from`) to `u.to` with an HTTP POST: a file as it
/// is, a directory as a gzip-compressed tar made on the fly. Either is streamed, never
/// held in memory; an error midway aborts the request, so the receiver never sees a
/// whole body.
pub async fn upload(src: PathBuf, u: &UploadAction) -> anyhow::Result<()> {
    let meta = std::fs::metadata(&src).with_context(|| format!("reading {}", u.from))?;
    let body = if meta.is_dir() {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
        let from = u.from.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let made = (|| -> std::io::Result<()> {
                let gz = flate2::write::GzEncoder::new(&mut w, flate2::Compression::default());
                let mut tar = tar::Builder::new(gz);
                tar.follow_symlinks(false);
                tar.append_dir_all(".", &src)?;
                tar.into_inner()?.finish()?;
                Ok(())
            })();
            match made {
                Ok(()) => {
                    let _ = std::io::Write::flush(&mut w);
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(
                        e.kind(),
                        format!("archiving {from}: {e}"),
                    )));
                }
            }
        });
        reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
    } else {
        let f = tokio::fs::File::open(&src)
            .await
            .with_context(|| format!("reading {}", u.from))?;
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f))
    };
    reqwest::Client::new()
        .post(&u.to)
        .body(body)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

const CHUNK: usize = 1 << 20;

/// A `Write` that hands 1 MB chunks to an async body stream.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk.into()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload cancelled"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        let sum = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        verify(&Digests::of(b"hello"), "sha256", sum).unwrap();
        verify(&Digests::of(b"hello"), "", "").unwrap();
        verify(
            &Digests::of(b"hello"),
            "md5",
            "5d41402abc4b2a76b9719d911017c592",
        )
        .unwrap();
        verify(
            &Digests::of(b"hello"),
            "sha1",
            "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
        )
        .unwrap();
        let err = verify(&Digests::of(b"hellO"), "sha256", sum)
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(verify(&Digests::of(b"x"), "crc", "1")
            .unwrap_err()
            .to_string()
            .contains("sha256"));
    }
}
