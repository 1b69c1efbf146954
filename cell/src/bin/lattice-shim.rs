//! The per-container shim as its own small binary (tests and benchmarks use it; the
//! server binary runs the same code as `lattice shim DIR`).

fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    lattice_cell::shim::main(&args)
}
