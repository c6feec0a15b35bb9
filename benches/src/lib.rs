//! Benchmark support: starting a daemon, preparing files.
