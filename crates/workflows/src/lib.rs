//! Durable LLM workflows: a WorkflowSpec (YAML or JSON) is registered per tenant; each run is an
//! actor whose pure decisions come from its events; the engine carries out what the actor
//! decided (model and tool calls through an [`Executor`], timers, child runs) and recovers after
//! a crash; episodes replay exactly, and evals score runs against golden task sets.

pub mod engine; // drives runs: carries out what the actor decided, recovers after a crash
pub mod error; // the crate's one error type
pub mod eval; // golden task sets, scorers, eval runs, reports and comparisons
#[cfg(test)]
mod fuzz; // fuzz target: workflow specs and tool definitions
pub mod metrics; // Prometheus metrics of runs, steps and manifests
pub mod prompt; // prompts: versioned message templates named `name@version`
pub mod registry; // the tenant's workflows, fragments, tools and prompts (an actor)
pub mod replay; // exact replay with a determinism check
pub mod run; // the workflow-run actor: pure decisions from the run's events
pub mod spec; // the WorkflowSpec, fragments, overlays, validation with line and field
pub mod template; // templates and conditions on a run's state

pub use engine::{Engine, Executor, StartOptions, StepCall, StepError, StepOutput};
pub use error::{Error, Result};
