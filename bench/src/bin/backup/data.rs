//! The benchmark's data set, made the same way every run (a seeded generator): many
//! small text files, medium log files, a few large files (compressible tables and
//! incompressible media), with a few modes and symlinks; the deterministic 1% change
//! between the two backups; and the comparison of a restored tree with the original.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// xorshift64: the same bytes for the same seed, fast enough for a GiB.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// In `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    /// Random bytes (incompressible).
    pub fn bytes(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "fn",
    "let",
    "mut",
    "self",
    "return",
    "match",
    "impl",
    "struct",
    "volume",
    "backup",
    "snapshot",
    "cell",
    "task",
    "repository",
    "error",
    "Ok",
    "Err",
    "if",
    "else",
    "for",
    "in",
    "while",
    "async",
    "await",
    "String",
    "Vec",
    "u64",
    "pub",
    "use",
    "mod",
    "{",
    "}",
    "(",
    ")",
    ";",
    "=",
    "->",
    "&",
    "data",
    "path",
    "size",
    "bytes",
    "name",
    "state",
    "config",
    "index",
];

/// Source-like text of `len` bytes: words from a small vocabulary, lines of 20-100.
fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    let mut line = 0;
    while out.len() < len {
        let w = WORDS[(rng.next() % WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        line += w.len() + 1;
        if line > 20 + (rng.next() % 80) as usize {
            out.push(b'\n');
            line = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

/// Log lines of `len` bytes, numbered from `from`.
fn log_lines(rng: &mut Rng, from: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    let mut n = from;
    while out.len() < len {
        let _ = writeln!(
            out,
            "2026-12-06T{:02}:{:02}:{:02}.{:03}Z INFO req={n:08x} path=/api/items/{} status={} ms={} user={:x}",
            (n / 3600) % 24,
            (n / 60) % 60,
            n % 60,
            rng.next() % 1000,
            rng.next() % 10007,
            [200, 200, 200, 201, 204, 304, 404, 500][(rng.next() % 8) as usize],
            rng.next() % 900,
            rng.next() % 4096
        );
        n += 1;
    }
    out.truncate(len);
    out
}

/// CSV rows of `len` bytes (compressible, not trivially).
fn table(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    let mut id = 0u64;
    while out.len() < len {
        let _ = writeln!(
            out,
            "{id},{},{}.{:02},{},{}",
            rng.next() % 100_000,
            rng.next() % 10_000,
            rng.next() % 100,
            ["eu-west", "us-east", "ap-south", "eu-north"][(rng.next() % 4) as usize],
            rng.next() & 1 == 0
        );
        id += 1;
    }
    out.truncate(len);
    out
}

fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Writes the data set of about `total` bytes into `dir`: 25% small text files
/// (512 B-16 KiB, 200 a directory), 35% log files (64 KiB-2 MiB), 15% tables and 25%
/// media (32-64 MiB each, fewer when the set is small); a few files 0600 or 0755, a
/// few symlinks. Returns the number of files.
pub fn write_set(dir: &Path, total: u64) -> usize {
    let mut rng = Rng::new(25);
    let mut files = 0;
    let mut fill = |share: f64, lo: u64, hi: u64, kind: &str, rng: &mut Rng| {
        let budget = (total as f64 * share) as u64;
        let (mut written, mut i) = (0u64, 0usize);
        while written < budget {
            let len = rng.range(lo, hi).min(budget - written).max(1) as usize;
            let (path, data) = match kind {
                "small" => (
                    dir.join(format!("src/d{:03}/f{i:05}.rs", i / 200)),
                    text(rng, len),
                ),
                "logs" => (
                    dir.join(format!("logs/app-{i:04}.log")),
                    log_lines(rng, i as u64 * 1_000_000, len),
                ),
                "tables" => (dir.join(format!("tables/t{i:02}.csv")), table(rng, len)),
                _ => {
                    let mut b = vec![0u8; len];
                    rng.bytes(&mut b);
                    (dir.join(format!("media/m{i:02}.bin")), b)
                }
            };
            write(&path, &data);
            written += len as u64;
            i += 1;
        }
        files += i;
    };
    let big = (total / 16).clamp(1 << 20, 64 << 20);
    fill(0.25, 512, 16 << 10, "small", &mut rng);
    fill(0.35, 64 << 10, 2 << 20, "logs", &mut rng);
    fill(0.15, big / 2, big, "tables", &mut rng);
    fill(0.25, big / 2, big, "media", &mut rng);
    for (i, mode) in [(0usize, 0o600), (1, 0o755), (2, 0o640)] {
        let p = dir.join(format!("src/d000/f{i:05}.rs"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::os::unix::fs::symlink("../logs/app-0000.log", dir.join("src/latest.log")).unwrap();
    std::os::unix::fs::symlink("d000", dir.join("src/first")).unwrap();
    files
}

/// Changes about 1% of the set's `total` bytes, as a day of use would: a quarter of
/// it in rewritten small files, a quarter appended to logs, a quarter overwritten in
/// the middle of a media file, a quarter in new files. Returns the bytes written.
pub fn change_one_percent(dir: &Path, total: u64) -> u64 {
    let mut rng = Rng::new(2025);
    let quarter = (total / 400).max(4096);
    let mut changed = 0;
    // Rewritten small files (every 97th, until a quarter is rewritten).
    let mut small: Vec<_> = walk(&dir.join("src"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    small.sort();
    for p in small.iter().step_by(97) {
        if changed >= quarter {
            break;
        }
        let len = std::fs::metadata(p).unwrap().len() as usize;
        write(p, &text(&mut rng, len));
        changed += len as u64;
    }
    // Appended log lines, over the first ten logs.
    for i in 0..10u64 {
        let p = dir.join(format!("logs/app-{i:04}.log"));
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        let add = log_lines(&mut rng, 900_000_000 + i * 10_000, (quarter / 10) as usize);
        f.write_all(&add).unwrap();
        changed += add.len() as u64;
    }
    // Overwritten in place in the middle of the first media file.
    {
        use std::io::{Seek, SeekFrom};
        let p = dir.join("media/m00.bin");
        let len = std::fs::metadata(&p).unwrap().len();
        let n = quarter.min(len);
        let mut b = vec![0u8; n as usize];
        rng.bytes(&mut b);
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start((len - n) / 2)).unwrap();
        f.write_all(&b).unwrap();
        changed += n;
    }
    // New files.
    let mut i = 0;
    let mut added = 0;
    while added < quarter {
        let len = rng.range(512, 16 << 10) as usize;
        write(
            &dir.join(format!("src/new/n{i:05}.rs")),
            &text(&mut rng, len),
        );
        added += len as u64;
        i += 1;
    }
    changed + added
}

/// Every path under `dir` (not following symlinks), `dir` itself left out.
pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Bytes the files under `dir` take (their lengths).
pub fn tree_bytes(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .map(|p| std::fs::symlink_metadata(p).unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Whether `got` holds what `want` holds: the same paths, kinds, modes, owners,
/// file contents, symlink targets and file mtimes. The first difference, if any.
pub fn same_tree(want: &Path, got: &Path) -> Result<(), String> {
    let rel = |root: &Path| {
        let mut v: Vec<_> = walk(root)
            .into_iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .collect();
        v.sort();
        v
    };
    let (a, b) = (rel(want), rel(got));
    if a != b {
        let missing = a.iter().find(|p| !b.contains(p));
        let extra = b.iter().find(|p| !a.contains(p));
        return Err(format!(
            "{} paths restored for {}: missing {missing:?}, extra {extra:?}",
            b.len(),
            a.len()
        ));
    }
    for p in &a {
        let (x, y) = (want.join(p), got.join(p));
        let (mx, my) = (
            std::fs::symlink_metadata(&x).unwrap(),
            std::fs::symlink_metadata(&y).unwrap(),
        );
        let what = |m: &std::fs::Metadata| (m.mode(), m.uid(), m.gid());
        if what(&mx) != what(&my) {
            return Err(format!(
                "{}: mode/owner {:?}, restored {:?}",
                p.display(),
                what(&mx),
                what(&my)
            ));
        }
        if mx.file_type().is_symlink() {
            if std::fs::read_link(&x).unwrap() != std::fs::read_link(&y).unwrap() {
                return Err(format!("{}: symlink target differs", p.display()));
            }
        } else if mx.is_file() {
            if mx.mtime() != my.mtime() {
                return Err(format!("{}: mtime differs", p.display()));
            }
            if std::fs::read(&x).unwrap() != std::fs::read(&y).unwrap() {
                return Err(format!("{}: content differs", p.display()));
            }
        }
    }
    Ok(())
}
