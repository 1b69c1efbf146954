//! Shared bits of the benchmark programs in `src/bin`; see bench/RESULTS.md.

/// The value after `--name` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A runc bundle in `dir/bundle` running `args` in the busybox image (read-only root,
/// no terminal); with `host_network` it shares the host's network namespace.
pub fn runc_bundle(dir: &std::path::Path, args: &[&str], host_network: bool) -> std::path::PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let st = std::process::Command::new("runc")
        .args(["spec"])
        .current_dir(&bundle)
        .status()
        .expect("runc not found: run scripts/setup-bench.sh");
    assert!(st.success());
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["root"]["path"] = lattice_cell::testing::busybox_rootfs()
        .display()
        .to_string()
        .into();
    spec["root"]["readonly"] = true.into();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(args);
    if host_network {
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    }
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    bundle
}
