//! operator (under construction)
