//! What each command decides on a state: the external events it records, or the rejection;
//! `Advance` decides through the rounds of [`advance`].

use switchyard_events::{Event, RunCancelRequested, SignalReceived, TimerFired};

use super::rounds::advance;
use super::{Command, Rejection, RunState, RunStatus, StepStatus};

/// The events a command produces on a state.
pub fn decide(state: &RunState, command: Command) -> Result<Vec<Event>, Rejection> {
    match command {
        Command::Start(started) => {
            if state.status != RunStatus::New {
                return Err(Rejection::AlreadyStarted);
            }
            Ok(vec![Event::RunStarted(*started)])
        }
        Command::Resume {
            state: carried,
            at_ms,
        } => {
            if state.status != RunStatus::New {
                return Err(Rejection::AlreadyStarted);
            }
            let text = serde_json::to_string(&*carried)
                .map_err(|e| Rejection::Invalid(format!("cannot carry the state over: {e}")))?;
            Ok(vec![Event::SegmentStarted(
                switchyard_events::SegmentStarted {
                    run_id: carried.run_id,
                    segment: carried.segment,
                    state: text,
                    at_ms,
                },
            )])
        }
        Command::Advance { now_ms } => {
            live(state)?;
            Ok(advance(state, now_ms))
        }
        Command::Result(event) => {
            live(state)?;
            let step = match &*event {
                Event::StepCompleted(e) if !e.decided => &e.step,
                Event::StepFailed(e) if !e.decided => &e.step,
                _ => return Err(Rejection::Invalid("not a step result".into())),
            };
            // A result for a step that is not running (a duplicate delivery) changes nothing.
            match state.steps.get(step) {
                Some(s) if s.status == StepStatus::Running => Ok(vec![*event]),
                _ => Ok(Vec::new()),
            }
        }
        Command::Fire { step, at_ms } => {
            live(state)?;
            match state.steps.get(&step) {
                Some(s) if matches!(s.status, StepStatus::Timer { .. }) => {
                    Ok(vec![Event::TimerFired(TimerFired { step, at_ms })])
                }
                _ => Ok(Vec::new()),
            }
        }
        Command::Signal {
            name,
            payload,
            at_ms,
        } => {
            live(state)?;
            Ok(vec![Event::SignalReceived(SignalReceived {
                name,
                payload: payload.to_string(),
                at_ms,
            })])
        }
        Command::Cancel { reason, at_ms } => {
            live(state)?;
            if state.cancel.is_some() {
                return Ok(Vec::new());
            }
            Ok(vec![Event::RunCancelRequested(RunCancelRequested {
                reason,
                at_ms,
            })])
        }
    }
}

fn live(state: &RunState) -> Result<(), Rejection> {
    if state.status != RunStatus::New && !super::ENGINES.contains(&state.engine) {
        return Err(Rejection::Engine(state.engine));
    }
    match state.status {
        RunStatus::New => Err(Rejection::NotStarted),
        RunStatus::Running => Ok(()),
        RunStatus::Completed => Err(Rejection::Ended("completed")),
        RunStatus::Failed => Err(Rejection::Ended("failed")),
        RunStatus::Cancelled => Err(Rejection::Ended("cancelled")),
        RunStatus::Continued => Err(Rejection::Ended("continued in a later segment")),
    }
}
