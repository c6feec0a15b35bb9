//! consent (under construction)
