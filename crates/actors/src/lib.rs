//! The write side of Switchyard: the actor trait (pure `decide`/`apply`), the runtime that
//! activates, rehydrates and passivates actors, and the domain actors (tenant, quota, billing,
//! router, inference, workflow run).
//!
//! Empty for now: the actor runtime and the tenant, quota and billing actors are the next issue.
//! The crate exists so the dependency rule (`events` ← `actors`, never `actors` ↔ `projections`)
//! is checked from the first commit.
