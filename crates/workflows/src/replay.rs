//! Episode replay, exact: a run's recorded events are folded again with the current code, and
//! every decision the run recorded is decided again and compared. A difference is a divergence:
//! the code no longer does what it did when the episode was recorded (Temporal's replay test).
//!
//! Episodes are files of JSON lines, one event per line: `{"type", "schema_version", "data"}`
//! (the form `GET /v1/runs/{id}/events` answers, whose other fields are ignored).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_events::{Event, RecordedEvent};

use crate::error::{Error, Result};
use crate::run::{self, RunState, RunStatus, is_external};

/// The longest episode file read.
const MAX_EPISODE_BYTES: usize = 256 << 20;

/// What an exact replay found.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub run_id: uuid::Uuid,
    pub workflow: String,
    pub events: usize,
    /// Decisions (batches of decided events) decided again and compared.
    pub decisions: usize,
    pub status: RunStatus,
    pub output: Option<Value>,
    /// The first divergence, if any.
    pub divergence: Option<Divergence>,
}

/// Where the code and the recording part ways.
#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    /// 0-based index of the first differing event in the episode.
    pub at: usize,
    pub message: String,
    pub recorded: Vec<Value>,
    pub decided: Vec<Value>,
}

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "type")]
    event_type: String,
    schema_version: u16,
    data: Value,
}

/// Reads an episode file's text.
pub fn parse_episode(text: &str) -> Result<Vec<Event>> {
    if text.len() > MAX_EPISODE_BYTES {
        return Err(Error::Eval(format!(
            "the episode is {} bytes; at most {MAX_EPISODE_BYTES}",
            text.len()
        )));
    }
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| Error::TaskSet {
            line: i + 1,
            message,
        };
        let line: Line = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let event = Event::from_json(&line.event_type, line.schema_version, line.data)
            .map_err(|e| bad(e.to_string()))?;
        events.push(event);
    }
    Ok(events)
}

/// An episode file's text from recorded events.
pub fn episode_text(events: &[RecordedEvent]) -> Result<String> {
    let mut out = String::new();
    for recorded in events {
        let event = Event::from_recorded(recorded)?;
        let line = serde_json::json!({
            "type": event.event_type(),
            "schema_version": event.schema_version(),
            "data": event.to_json()?,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    Ok(out)
}

fn at_ms(event: &Event) -> u64 {
    match event {
        Event::StepStarted(e) => e.at_ms,
        Event::StepCompleted(e) => e.at_ms,
        Event::StepFailed(e) => e.at_ms,
        Event::TimerStarted(e) => e.at_ms,
        Event::RunCompleted(e) => e.at_ms,
        Event::RunFailed(e) => e.at_ms,
        Event::RunCancelled(e) => e.at_ms,
        Event::RunContinued(e) => e.at_ms,
        _ => 0,
    }
}

fn json(event: &Event) -> Value {
    serde_json::json!({"type": event.event_type(), "data": event.to_json().unwrap_or(Value::Null)})
}

/// Replays an episode exactly; the report says whether (and where) it diverged.
pub fn replay_exact(events: &[Event]) -> ReplayReport {
    let mut state = RunState::default();
    let mut decisions = 0;
    let mut divergence = None;
    let mut i = 0;
    while i < events.len() {
        let event = &events[i];
        if is_external(event) {
            if let Event::SegmentStarted(e) = event
                && let Some(d) = carried_state_differs(&state, e, i)
            {
                divergence = Some(d);
                break;
            }
            state.apply(event);
            i += 1;
            continue;
        }
        if !run::ENGINES.contains(&state.engine) {
            divergence = Some(Divergence {
                at: i,
                message: format!(
                    "the episode was recorded by workflow engine version {}; this build \
                     replays versions {} to {}",
                    state.engine,
                    run::ENGINES.start(),
                    run::ENGINES.end()
                ),
                recorded: vec![json(event)],
                decided: Vec::new(),
            });
            break;
        }
        let decided = run::advance(&state, at_ms(event));
        let recorded = &events[i..(i + decided.len().max(1)).min(events.len())];
        if decided.len() > recorded.len()
            || decided.is_empty()
            || decided.iter().zip(recorded).any(|(d, r)| d != r)
        {
            let first = decided
                .iter()
                .zip(recorded)
                .position(|(d, r)| d != r)
                .unwrap_or(decided.len().min(recorded.len()));
            divergence = Some(Divergence {
                at: i + first,
                message: if decided.is_empty() {
                    format!(
                        "the episode records `{}` where the current code decides nothing",
                        event.event_type()
                    )
                } else {
                    "the current code decides differently".into()
                },
                recorded: recorded.iter().map(json).collect(),
                decided: decided.iter().map(json).collect(),
            });
            break;
        }
        for event in &decided {
            state.apply(event);
        }
        decisions += 1;
        i += decided.len();
    }
    ReplayReport {
        run_id: state.run_id,
        workflow: state.workflow.clone(),
        events: events.len(),
        decisions,
        status: state.status,
        output: state.output.clone(),
        divergence,
    }
}

/// A later segment's carried state must be the state the replay reached.
fn carried_state_differs(
    state: &RunState,
    started: &switchyard_events::SegmentStarted,
    at: usize,
) -> Option<Divergence> {
    if state.status == RunStatus::New {
        // An episode that begins at a later segment: nothing to compare against.
        return None;
    }
    let carried: RunState = serde_json::from_str(&started.state).ok()?;
    let expected = state.carried(started.segment);
    (carried != expected).then(|| Divergence {
        at,
        message: "the state carried into the next segment differs from the replayed state".into(),
        recorded: vec![serde_json::to_value(&carried).unwrap_or(Value::Null)],
        decided: vec![serde_json::to_value(&expected).unwrap_or(Value::Null)],
    })
}
