//! compliance (under construction)
