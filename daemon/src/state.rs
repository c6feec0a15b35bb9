//! state (under construction)
