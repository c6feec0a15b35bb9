//! process (under construction)
