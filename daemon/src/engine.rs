//! engine (under construction)
