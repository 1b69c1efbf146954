//! Diego's lifecycle binaries, ours: what the original `ltc create` runs inside every
//! app's container from the lifecycle tarball the cell downloads into /tmp —
//! [`healthcheck`] (the monitor: `-port`, `-uri`, `-timeout`) and [`sshd`]
//! (`diego-sshd`: `-address`, `-hostKey`, `-authorizedKey`). Both parse their flags
//! the way Go's `flag` package does ([`flags`]). They are built static
//! (`cli/build.rs`), so they run in any image, busybox included.

pub mod flags;
pub mod healthcheck;
pub mod sshd;
