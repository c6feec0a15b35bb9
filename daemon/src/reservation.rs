//! reservation (under construction)
