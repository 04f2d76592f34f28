//! Black-box tests: the real `switchyard` binary on a random port, spoken to over HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

mod admin;
mod admin_identity;
mod backing_tls;
mod bedrock;
mod billing;
mod budgets;
mod budgets_below;
mod cache;
mod captures;
mod cli;
mod cluster;
mod config_profiles;
mod drain;
mod durability;
mod embeddings;
mod flags;
mod fsync;
mod gateway;
mod guardrails;
mod hostile;
mod idp;
mod openai_sdk;
mod operators;
mod pg_restart;
mod prometheus;
mod providers;
mod rag;
mod read_side;
mod redis_down;
mod registry;
mod retrieval;
mod router;
mod router_bench;
mod routing;
mod secrets;
mod semantic_cache;
mod serve;
mod server;
mod spend;
mod traces;
mod workflows;
