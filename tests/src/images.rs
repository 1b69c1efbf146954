//! Images for end-to-end tests beyond the preloaded busybox: busybox plus programs of
//! the host (Debian's), with the shared libraries they load.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files `ldd BINARY` names: each shared library at its path, and the dynamic
/// loader at the path the binary asks for (not the vDSO, which is in no file).
pub fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .unwrap_or_else(|e| panic!("running ldd {} ({e})", binary.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("not found"),
        "ldd {}: {text}{}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| {
            // `libz.so.1 => /lib/…/libz.so.1 (0x…)`, `/lib64/ld-linux-x86-64.so.2 (0x…)`.
            let file = l.split_once("=>").map_or(l, |(_, to)| to);
            let path = file.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Writes an OCI image layout at `layout`, tagged `tag`, of one layer: the busybox
/// image with each of the host's `binaries` at its path and the shared libraries it
/// loads ([`shared_libraries`]), copied as files; `config` is the image's
/// configuration (`{"config": {"Env": …}}`). Panics when a binary is missing, naming
/// `package` (what scripts/setup.sh installs).
pub fn busybox_with_host_binaries(
    layout: &Path,
    tag: &str,
    binaries: &[&str],
    package: &str,
    config: &serde_json::Value,
) {
    // Busybox built here, not the process's shared copy (`testing::busybox_rootfs`),
    // which stays in /tmp after the test.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    lattice_cell::rootfs::build_busybox(Path::new("/bin/busybox"), &root)
        .expect("building the busybox image (install busybox-static with scripts/setup.sh)");
    for binary in binaries {
        let binary = Path::new(binary);
        assert!(
            binary.is_file(),
            "{} not found: run scripts/setup.sh (it installs Debian's {package})",
            binary.display()
        );
        for file in std::iter::once(binary.to_path_buf()).chain(shared_libraries(binary)) {
            let to = root.join(file.strip_prefix("/").unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            // The file itself (a library's path is often a symlink to its version).
            std::fs::copy(&file, &to)
                .unwrap_or_else(|e| panic!("copying {} into the image: {e}", file.display()));
        }
    }
    lattice_cell::image::write_layout(layout, tag, Some(&root), &[], config)
        .expect("writing the image layout");
}
