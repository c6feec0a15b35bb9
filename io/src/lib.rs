//! `trace2e-io`
