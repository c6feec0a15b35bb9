//! `trace2e-fastpath`: shared-memory request/response channels (see issue "Fast path").
