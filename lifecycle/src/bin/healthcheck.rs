//! Diego's `healthcheck`, ours (see `lattice_lifecycle::healthcheck`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(lattice_lifecycle::healthcheck::main_with(&args));
}
