//! Download and Upload actions: moving files between a URL and a container's
//! filesystem, from the host side (paths resolve inside the container's root). HTTPS
//! servers are verified against the system's roots plus the CAs the cell was given
//! (`--extra-ca`, see [`client`]).

use std::path::Path;

use anyhow::Context;
use lattice_specs::models::{DownloadAction, UploadAction};
use sha2::Digest;

use crate::inroot::{self, InRoot, Rooted};

/// Fetches `d.from` and unpacks it (tar, or gzip-compressed tar) into `dest` (where
/// `d.to` is: every path under it is resolved inside its root, see [`crate::inroot`]),
/// its checksum (when given) deciding:
///
/// - into a directory that does not exist yet, the archive is unpacked as it arrives
///   (no copy of it is kept); a checksum mismatch or a failed unpack removes the
///   directory, so a bad archive leaves nothing behind;
/// - into an existing directory, the archive is first streamed to a file in `scratch`
///   (the container's own filesystem, never a volume) and verified before anything is
///   unpacked.
pub async fn download(
    http: &reqwest::Client,
    dest: Rooted,
    scratch: &Path,
    d: &DownloadAction,
) -> anyhow::Result<()> {
    let exists = dest.run(|p| p.symlink_metadata().is_ok()).await?;
    if !exists {
        return stream_unpack(http, dest, d).await;
    }
    let tmp = scratch.join(format!(
        ".lattice-download-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let result = async {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let digests = fetch(http, &d.from, Sink::File(file.try_clone()?.into())).await?;
        verify(&digests, &d.checksum_algorithm, &d.checksum_value)?;
        let to = d.to.clone();
        dest.run(move |p| {
            let mut file = file;
            std::io::Seek::rewind(&mut file)?;
            unpack(std::io::BufReader::new(file), p, &to)
        })
        .await?
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Unpacks the body into `dest` on a thread of its own while hashing it here; the
/// checksum is judged once the whole body has arrived (a corrupt archive is reported
/// as a checksum mismatch, its root cause, rather than as whatever the unpacker hit).
async fn stream_unpack(
    http: &reqwest::Client,
    dest: Rooted,
    d: &DownloadAction,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
    let to = d.to.clone();
    let unpacker = dest.spawn(move |p| {
        let reader = ChannelReader {
            rx,
            chunk: bytes::Bytes::new(),
        };
        // Dropping the reader (on success or failure) tells the fetch to stop sending.
        unpack(std::io::BufReader::with_capacity(1 << 20, reader), p, &to)
    })?;
    // Until the archive is whole and verified, `dest` goes on any way out: an error,
    // or the action being cancelled (this future dropped) mid-download.
    let mut cleanup = RemoveUnlessKept {
        dest,
        unpacker: Some(unpacker),
        keep: false,
    };
    let fetched = fetch(http, &d.from, Sink::Channel(Some(tx))).await;
    let unpacked = cleanup.unpacker.take().expect("set above").await;
    let outcome = fetched
        .and_then(|digests| verify(&digests, &d.checksum_algorithm, &d.checksum_value))
        .and_then(|()| unpacked?);
    // The unpacker is done: what it left goes now, before the action's failure is
    // reported (so the next action never sees it), not behind its back.
    cleanup.keep = true;
    if outcome.is_err() {
        let _ = cleanup.dest.run(|p| std::fs::remove_dir_all(p)).await;
    }
    outcome
}

/// Removes a download's destination (inside its root) when dropped unless kept (the
/// action cancelled midway); an unpacker still running is waited for first.
struct RemoveUnlessKept {
    dest: Rooted,
    unpacker: Option<InRoot<anyhow::Result<()>>>,
    keep: bool,
}

impl Drop for RemoveUnlessKept {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Cancelled mid-download: the unpacker stops once its input is gone, then the
        // destination is removed.
        let dest = self.dest.clone();
        let unpacker = self.unpacker.take();
        match (unpacker, tokio::runtime::Handle::try_current()) {
            (Some(u), Ok(rt)) => {
                rt.spawn(async move {
                    let _ = u.await;
                    let _ = dest.run(|p| std::fs::remove_dir_all(p)).await;
                });
            }
            _ => {
                let _ = dest.blocking(|p| std::fs::remove_dir_all(p));
            }
        }
    }
}

/// Where a fetched body goes.
enum Sink {
    File(tokio::fs::File),
    /// The unpacker's input; None once it stopped reading.
    Channel(Option<tokio::sync::mpsc::Sender<bytes::Bytes>>),
}

/// A blocking `Read` over the chunks of an async body.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    chunk: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
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

/// Streams `url` into `sink`, hashing on the way. The whole body is always read (and
/// hashed), even after a channel's unpacker stopped.
async fn fetch(http: &reqwest::Client, url: &str, mut sink: Sink) -> anyhow::Result<Digests> {
    use tokio::io::AsyncWriteExt;
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable_server(e, url))?
        .error_for_status()?;
    let (mut s256, mut s1, mut m5) = (sha2::Sha256::new(), sha1::Sha1::new(), md5::Md5::new());
    while let Some(chunk) = resp.chunk().await? {
        s256.update(&chunk);
        s1.update(&chunk);
        m5.update(&chunk);
        match &mut sink {
            Sink::File(f) => f.write_all(&chunk).await?,
            Sink::Channel(tx) => {
                if let Some(t) = tx {
                    if t.send(chunk).await.is_err() {
                        *tx = None;
                    }
                }
            }
        }
    }
    if let Sink::File(f) = &mut sink {
        f.flush().await?;
    }
    Ok(Digests {
        sha256: hex(&s256.finalize()),
        sha1: hex(&s1.finalize()),
        md5: hex(&m5.finalize()),
    })
}

fn unpack<R: std::io::BufRead + 'static>(mut f: R, dest: &Path, to: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {to}"))?;
    let gz = f.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn std::io::Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
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

/// Sends `src` (where `u.from` is, resolved inside its root) to `u.to` with an HTTP
/// POST: a regular file as it is, a directory as a gzip-compressed tar made on the fly.
/// Either is streamed, never held in memory; an error midway aborts the request, so
/// the receiver never sees a whole body.
pub async fn upload(http: &reqwest::Client, src: Rooted, u: &UploadAction) -> anyhow::Result<()> {
    let from = u.from.clone();
    let opened = src
        .run(|p| -> std::io::Result<Option<std::fs::File>> {
            if p.metadata()?.is_dir() {
                return Ok(None);
            }
            inroot::open_regular(p).map(Some)
        })
        .await?
        .with_context(|| format!("reading {from}"))?;
    let body = match opened {
        Some(f) => reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(
            tokio::fs::File::from_std(f),
        )),
        None => {
            let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
            src.spawn(move |p| {
                let mut w = ChannelWriter {
                    tx: tx.clone(),
                    buf: Vec::with_capacity(CHUNK),
                };
                match write_tgz(p, &mut w) {
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
            })?;
            reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        }
    };
    http.post(&u.to)
        .body(body)
        .send()
        .await
        .map_err(|e| unreachable_server(e, &u.to))?
        .error_for_status()?;
    Ok(())
}

/// `url` fetched from another address when its `HOST:PORT` is one of `redirects`
/// (the lifecycle file server's name, served by the cell itself: see
/// [`crate::fileserver`]); any other URL as it is.
pub fn redirect(url: &str, redirects: &[(String, std::net::SocketAddr)]) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return url.to_string();
    };
    let Some(host) = u.host_str().map(|h| h.to_ascii_lowercase()) else {
        return url.to_string();
    };
    let authority = format!("{host}:{}", u.port_or_known_default().unwrap_or(0));
    let Some((_, to)) = redirects
        .iter()
        .find(|(from, _)| from.eq_ignore_ascii_case(&authority))
    else {
        return url.to_string();
    };
    if u.set_ip_host(to.ip()).is_err() || u.set_port(Some(to.port())).is_err() {
        return url.to_string();
    }
    u.to_string()
}

/// The HTTP client of Download and Upload actions: HTTPS servers are verified
/// against the system's roots plus `extra_ca` (PEM texts of CA certificates: the
/// cell's `--extra-ca` files).
pub fn client(extra_ca: &[String]) -> anyhow::Result<reqwest::Client> {
    lattice_tls::web::client(extra_ca).context("building the HTTP client for downloads and uploads")
}

/// A request that got no answer, saying what to do when the server's certificate
/// was the reason.
fn unreachable_server(e: reqwest::Error, url: &str) -> anyhow::Error {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        if let Some(rustls::Error::InvalidCertificate(why)) = as_rustls(err) {
            return anyhow::anyhow!(
                "{url}: the server's certificate is not trusted by this cell ({why:?}): for a private CA, start the cell with --extra-ca CA.pem"
            );
        }
        cur = err.source();
    }
    anyhow::Error::from(e).context(format!("cannot reach {url}"))
}

/// `e` as rustls's error: itself, or inside I/O errors (which hide it from
/// `source()`; hyper-rustls wraps tokio-rustls's I/O error in another).
fn as_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    as_rustls(inner)
}

/// Writes directory `dir` as a gzip-compressed tar to `w`: files, directories,
/// symlinks (as links) and fifos; Unix sockets are skipped (they cannot be archived,
/// and a live app's socket in a volume must not fail its backups).
fn write_tgz(dir: &Path, w: &mut impl std::io::Write) -> std::io::Result<()> {
    fn add<W: std::io::Write>(
        tar: &mut tar::Builder<W>,
        root: &Path,
        rel: &Path,
    ) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = rel.join(e.file_name());
            let kind = e.file_type()?;
            if std::os::unix::fs::FileTypeExt::is_socket(&kind) {
                continue;
            }
            tar.append_path_with_name(root.join(&name), &name)?;
            if kind.is_dir() {
                add(tar, root, &name)?;
            }
        }
        Ok(())
    }
    let gz = flate2::write::GzEncoder::new(w, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_path_with_name(dir, ".")?;
    add(&mut tar, dir, Path::new("."))?;
    tar.into_inner()?.finish()?;
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
    fn directories_archive_without_their_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/file"), b"data").unwrap();
        std::os::unix::fs::symlink("sub/file", d.join("link")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(d.join("app.sock")).unwrap();
        let mut out = vec![];
        write_tgz(d, &mut out).unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&out[..]));
        let mut names: Vec<String> = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, [".", "link", "sub", "sub/file"]);
        // Unpacked, it is the same tree (the link still a link).
        let into = tempfile::tempdir().unwrap();
        unpack(std::io::Cursor::new(out), into.path(), "/x").unwrap();
        assert_eq!(
            std::fs::read(into.path().join("sub/file")).unwrap(),
            b"data"
        );
        assert!(std::fs::symlink_metadata(into.path().join("link"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn the_file_servers_name_goes_to_the_cells_own() {
        let to: std::net::SocketAddr = "10.9.0.1:41234".parse().unwrap();
        let r = vec![("file-server.service.cf.internal:8080".to_string(), to)];
        assert_eq!(
            redirect(
                "http://file-server.service.cf.internal:8080/v1/static/buildpack_app_lifecycle/buildpack_app_lifecycle.tgz",
                &r
            ),
            "http://10.9.0.1:41234/v1/static/buildpack_app_lifecycle/buildpack_app_lifecycle.tgz"
        );
        assert_eq!(
            redirect("http://FILE-SERVER.service.cf.internal:8080/x?y=1", &r),
            "http://10.9.0.1:41234/x?y=1"
        );
        for same in [
            "http://file-server.service.cf.internal/x",
            "http://file-server.service.cf.internal:8081/x",
            "https://example.com/x.tgz",
            "not a url",
        ] {
            assert_eq!(redirect(same, &r), same);
        }
        assert_eq!(redirect("http://a:1/x", &[]), "http://a:1/x");
    }

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
