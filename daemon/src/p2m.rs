//! p2m (under construction)
