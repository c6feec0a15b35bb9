//! enrollment (under construction)
