//! Builds Diego's lifecycle binaries, ours (`healthcheck`, `diego-sshd`, the
//! `lattice-lifecycle` crate), as STATIC executables for the `lattice` binary to embed:
//! every cell serves them to its containers (see `lattice_cell::fileserver`), and they
//! must run in any image, busybox's included, whatever libc it has or lacks.
//!
//! A nested `cargo build --release --target TARGET` of that crate with
//! `-C target-feature=+crt-static` (glibc, statically linked: the machine has no musl
//! Rust target), into a target directory of its own beside the outer one
//! (`TARGET_DIR/lifecycle-static`: the outer build holds its own directory's lock).
//! With `--target`, the flag reaches only the target's crates, not build scripts or
//! proc macros. `LATTICE_LIFECYCLE_BIN_DIR=DIR` takes `DIR/healthcheck` and
//! `DIR/diego-sshd` as they are instead (prebuilt, e.g. by a packager).

use std::path::{Path, PathBuf};
use std::process::Command;

const BINS: &[&str] = &["healthcheck", "diego-sshd"];

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=LATTICE_LIFECYCLE_BIN_DIR");
    if let Ok(dir) = std::env::var("LATTICE_LIFECYCLE_BIN_DIR") {
        for bin in BINS {
            let from = Path::new(&dir).join(bin);
            println!("cargo:rerun-if-changed={}", from.display());
            std::fs::copy(&from, out.join(bin))
                .unwrap_or_else(|e| panic!("LATTICE_LIFECYCLE_BIN_DIR: {}: {e}", from.display()));
        }
        return;
    }
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().expect("cli/ is in the workspace");
    for watched in ["lifecycle/src", "lifecycle/Cargo.toml", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    // OUT_DIR is TARGET_DIR/PROFILE/build/lattice-cli-HASH/out (or with a target
    // triple before PROFILE): the outer target directory is above `build`.
    let target_dir = out
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(|b| b.parent())
        .and_then(|p| p.parent())
        .map(|t| t.to_path_buf())
        .unwrap_or_else(|| out.join("target"));
    let nested = target_dir.join("lifecycle-static");
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "--profile",
        "lifecycle",
        "-p",
        "lattice-lifecycle",
        "--bins",
    ])
    .arg("--manifest-path")
    .arg(workspace.join("Cargo.toml"))
    .arg("--target")
    .arg(&target)
    .arg("--target-dir")
    .arg(&nested)
    .env("RUSTFLAGS", "-C target-feature=+crt-static");
    // What the outer build set for its own compilations stays out of this one.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo} to build the lifecycle binaries: {e}"));
    assert!(
        status.success(),
        "building the static lifecycle binaries (healthcheck, diego-sshd) failed"
    );
    let built = nested.join(&target).join("lifecycle");
    for bin in BINS {
        std::fs::copy(built.join(bin), out.join(bin))
            .unwrap_or_else(|e| panic!("{}: {e}", built.join(bin).display()));
    }
}
