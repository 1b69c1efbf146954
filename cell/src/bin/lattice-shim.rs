//! The per-container shim as its own small binary (tests and benchmarks use it; the
//! server binary runs the same code as `lattice shim DIR`).

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: lattice-shim CONTAINER_DIR");
        std::process::exit(2);
    };
    lattice_cell::shim::main(std::path::Path::new(&dir))
}
