//! Diego's `diego-sshd`, ours (see `lattice_lifecycle::sshd`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The daemon runs itself so for a session's sftp subsystem.
    if args.first().map(String::as_str) == Some(lattice_lifecycle::sshd::sftp::SFTP_MODE) {
        std::process::exit(lattice_lifecycle::sshd::sftp::serve_stdio());
    }
    std::process::exit(lattice_lifecycle::sshd::main_with(&args));
}
