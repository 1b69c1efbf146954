//! Diego's `diego-sshd`, ours (see `lattice_lifecycle::sshd`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(lattice_lifecycle::sshd::main_with(&args));
}
