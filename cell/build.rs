//! Builds `pause`, the init process of every container: a tiny static C program (like
//! Kubernetes' pause) so it runs in any image, whatever libc the image has or lacks.
//!
//! It is linked against musl (`musl-gcc`, Debian's `musl-tools`, installed by
//! `scripts/setup.sh`) when that is there: ~20 KB instead of ~700 KB with glibc, and
//! each container start execs it (~0.5 ms less per start on the project's machine).
//! `PAUSE_CC` names another compiler; without musl it falls back to `cc -static`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("pause");
    let src = "src/pause.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=PAUSE_CC");
    let cc = std::env::var("PAUSE_CC").unwrap_or_else(|_| {
        let musl = Command::new("musl-gcc")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if musl {
            "musl-gcc".into()
        } else {
            println!(
                "cargo:warning=musl-gcc not found (scripts/setup.sh installs musl-tools): \
                 linking the containers' pause binary statically against glibc, which \
                 makes every container start ~0.5 ms slower"
            );
            std::env::var("CC").unwrap_or_else(|_| "cc".into())
        }
    });
    let status = Command::new(&cc)
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc} to build the pause binary: {e}"));
    assert!(
        status.success(),
        "{cc} failed to build {src} statically (is musl-tools or libc6-dev installed?)"
    );
}
