//! daemon (under construction)
