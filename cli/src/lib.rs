//! Shared code of the `lattice` and `ltc` binaries lives in the binaries for now.
