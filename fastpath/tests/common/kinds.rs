//! Message kinds the test daemons understand; shared by the tests and the peer binary.

/// Echo: respond with `kind + 1` and the same payload.
pub const ECHO: u16 = 1;
/// Respond with the number of posted messages this channel has delivered so far
/// (u64 little-endian).
pub const POSTS_SEEN: u16 = 100;
/// Never respond.
pub const BLACKHOLE: u16 = 200;
/// Detach the caller's channel instead of responding.
pub const DETACH_ME: u16 = 300;
