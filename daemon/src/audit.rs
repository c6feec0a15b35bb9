//! audit (under construction)
