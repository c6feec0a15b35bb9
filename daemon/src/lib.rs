//! `trace2e-daemon`: the traceability engine and the services of `trace2ed`.
//!
//! The engine ([`engine::Engine`]) holds every decision: it maps client fds to resources
//! ([`enrollment`]), reserves labels for the length of a flow ([`reservation`]), evaluates
//! the compliance rules ([`compliance`], [`consent`]) over provenance ([`provenance`]),
//! and records everything in the audit trail ([`audit`]). All durable state changes go
//! through one mutation path ([`state::State::apply`]). The engine does no I/O of its own.
//!
//! Around it: [`p2m`] serves processes (gRPC on a Unix socket, callers identified by
//! `SO_PEERCRED`), [`operator`] serves operators (O2M), [`daemon`] wires them into
//! `trace2ed`, and [`cli`] is the operator CLI `trace2e`.

/// The engine's in-memory maps: keyed by labels, fds and grant ids the daemon assigns or
/// checks, hashed with a fast seeded hasher (SipHash was a large share of a mediated
/// I/O; bench `engine`, docs/decisions.md). Seeded per map, so keys chosen by a client cannot be aimed at a bucket.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// The set counterpart of [`FastMap`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

pub mod audit;
pub mod breakdown;
pub mod compliance;
pub mod consent;
pub mod durable;
pub mod engine;
pub mod enrollment;
pub mod provenance;
pub mod remote;
pub mod reservation;
pub mod state;
pub mod status;
pub mod topology;

pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod federation;
pub mod launch;
pub mod operator;
pub mod p2m;
pub mod process;
pub mod socket;
