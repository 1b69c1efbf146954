//! Builds `pause`, the init process of every container: a tiny static C program (like
//! Kubernetes' pause) so it runs in any image, whatever libc the image has or lacks.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("pause");
    let src = "src/pause.c";
    println!("cargo:rerun-if-changed={src}");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc} to build the pause binary: {e}"));
    assert!(
        status.success(),
        "{cc} failed to build {src} statically (is libc6-dev installed?)"
    );
}
