//! `switchyard replay <dataset>`: a captured dataset (`switchyard dataset export`) re-run
//! against another model or routing policy, in-process for the local tenant, each answer
//! beside the recorded one.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use switchyard_actors::router::policy::Policy;
use switchyard_inference::Principal;
use switchyard_inference::openai::ChatRequest;

use super::Local;

/// Whether `text` is a task set rather than a run's episode: its first line is a task.
pub fn is_dataset(text: &str) -> bool {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .is_some_and(|v| v.get("scorer").is_some() && v.get("input").is_some())
}

/// The messages a task's input stands for: a prompt, or `{"messages": [...]}`.
fn messages(input: &Value) -> anyhow::Result<Value> {
    match input {
        Value::String(prompt) => Ok(json!([{"role": "user", "content": prompt}])),
        Value::Object(map) => match (map.get("messages"), map.get("prompt")) {
            (Some(messages @ Value::Array(_)), _) => Ok(messages.clone()),
            (_, Some(Value::String(prompt))) => Ok(json!([{"role": "user", "content": prompt}])),
            _ => bail!("an input object needs messages or a prompt"),
        },
        _ => bail!("an input must be a prompt or {{\"messages\": [...]}}"),
    }
}

/// The answer of a `chat.completion` body: its text, or its tool calls.
fn answer(body: &Value) -> Value {
    let message = &body["choices"][0]["message"];
    match &message["content"] {
        Value::String(text) => Value::String(text.clone()),
        _ => message
            .get("tool_calls")
            .cloned()
            .unwrap_or(Value::String(String::new())),
    }
}

/// Re-runs every task; the report, and whether every task got an answer.
pub async fn replay(
    local: &Local,
    text: &str,
    model: Option<&str>,
    policy: Option<Policy>,
) -> anyhow::Result<(Value, bool)> {
    if model.is_none() && policy.is_none() {
        bail!("a dataset is re-run against another --model or --policy");
    }
    let principal = Principal {
        tenant: local.tenant,
        key_id: uuid::Uuid::nil(),
        scopes: Vec::new(),
    };
    let mut results = Vec::new();
    let (mut same, mut failed, mut cost) = (0u64, 0u64, 0u64);
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let task: Value =
            serde_json::from_str(line).with_context(|| format!("line {} is not JSON", n + 1))?;
        let id = task["id"].clone();
        let messages = messages(&task["input"]).with_context(|| format!("line {}", n + 1))?;
        let request: ChatRequest =
            serde_json::from_value(json!({"model": model.unwrap_or("auto"), "messages": messages}))
                .with_context(|| format!("line {}: not a chat request", n + 1))?;
        let recorded = task.get("expected").cloned().unwrap_or(Value::Null);
        match local
            .pipeline
            .complete(None, &principal, &request, policy.as_ref(), None)
            .await
        {
            Ok(done) => {
                let replayed = answer(&done.body);
                let equal = replayed == recorded;
                same += u64::from(equal);
                cost += done.cost_micros;
                results.push(
                    json!({"id": id, "model": done.body["model"], "recorded": recorded,
                    "replayed": replayed, "same": equal, "cost_micros": done.cost_micros}),
                );
            }
            Err(error) => {
                failed += 1;
                results.push(json!({"id": id, "recorded": recorded, "error": error.to_string()}));
            }
        }
    }
    let report = json!({
        "tasks": results.len(),
        "same_answer": same,
        "failed": failed,
        "cost_micros": cost,
        "results": results,
    });
    Ok((report, failed == 0))
}
