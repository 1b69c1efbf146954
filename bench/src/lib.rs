//! Benchmarks live in src/bin; see bench/RESULTS.md for how to run them.
