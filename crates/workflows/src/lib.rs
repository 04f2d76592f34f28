//! Durable LLM workflows.
//!
//! - [`spec`]: the WorkflowSpec (YAML or JSON), fragments, overlays, validation with line and field.
//! - [`template`]: templates and conditions on a run's state.
//! - [`run`]: the workflow-run actor: pure decisions from the run's events.
//! - [`registry`]: the tenant's workflows, fragments and tools (an actor).
//! - [`engine`]: drives runs: carries out what the actor decided, recovers after a crash.
//! - [`replay`]: exact replay with a determinism check.
//! - [`eval`]: golden task sets, scorers, eval runs, reports and comparisons.

pub mod engine;
pub mod error;
pub mod eval;
mod metrics;
pub mod registry;
pub mod replay;
pub mod run;
pub mod spec;
pub mod template;

pub use engine::{Engine, Executor, StartOptions, StepCall, StepError, StepOutput};
pub use error::{Error, Result};
