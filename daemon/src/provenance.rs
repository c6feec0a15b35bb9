//! provenance (under construction)
