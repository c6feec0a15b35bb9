//! topology (under construction)
