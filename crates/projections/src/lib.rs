//! The read side of Switchyard: projectors that fold the global log into read models with the
//! checkpoint written in the same transaction, and the tenant-scoped analytics queries.
//!
//! Empty for now: projectors and read models come with the read-side issue. The crate exists so
//! the dependency rule (`events` ← `projections`, never `projections` ↔ `actors`) is checked from
//! the first commit.
