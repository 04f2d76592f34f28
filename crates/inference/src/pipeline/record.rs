//! The events an inference leaves in the log, in the form the operator chooses
//! (`SWITCHYARD_INFERENCE_RECORD`):
//!
//! - [`RecordForm::One`] (the default): one event, the outcome (`InferenceCompleted` or
//!   `InferenceFailed` v2) carrying the request and the route, after any guardrail decisions.
//! - [`RecordForm::Split`]: the form of releases before v2 of the outcome events:
//!   `InferenceRequested`, `RouteChosen` (when a route was drawn), the guardrail decisions, then
//!   the outcome as v1. A node of such a release cannot decode a v2 outcome: it would leave the
//!   spend out of its budget folds and dead-letter the event in its projectors. A cluster
//!   upgraded one node at a time runs `split` until every node runs this release, then `one`.
//!   This release reads both forms alike.

use std::fmt;
use std::str::FromStr;

use switchyard_events::{
    Event, GuardrailChecked, InferenceRequested, Metadata, NewEvent, RouteChosen,
};

/// The form of an inference's events in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordForm {
    #[default]
    One,
    Split,
}

impl RecordForm {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordForm::One => "one",
            RecordForm::Split => "split",
        }
    }
}

impl fmt::Display for RecordForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordForm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "one" => Ok(RecordForm::One),
            "split" => Ok(RecordForm::Split),
            other => Err(format!(
                "unknown inference record form {other:?}: expected \"one\" or \"split\""
            )),
        }
    }
}

/// The events of one inference in `form`, ready to append: `outcome` (an `InferenceCompleted`
/// or `InferenceFailed`, its `request` and `route` left empty) with its request, its route (if
/// one was drawn) and the guardrails' decisions.
pub(super) fn inference_record(
    form: RecordForm,
    request: &InferenceRequested,
    route: Option<&RouteChosen>,
    guardrails: &[GuardrailChecked],
    mut outcome: Event,
    metadata: &Metadata,
) -> switchyard_events::Result<Vec<NewEvent>> {
    let checks = guardrails.iter().cloned().map(Event::GuardrailChecked);
    match form {
        RecordForm::One => {
            match &mut outcome {
                Event::InferenceCompleted(done) => {
                    done.request = Some(request.clone());
                    done.route = route.cloned();
                }
                Event::InferenceFailed(failed) => {
                    failed.request = Some(request.clone());
                    failed.route = route.cloned();
                }
                _ => {}
            }
            checks
                .chain([outcome])
                .map(|event| event.to_new_event(metadata.clone()))
                .collect()
        }
        RecordForm::Split => [Event::InferenceRequested(request.clone())]
            .into_iter()
            .chain(route.cloned().map(Event::RouteChosen))
            .chain(checks)
            .map(|event| event.to_new_event(metadata.clone()))
            .chain([outcome.to_new_event_v1(metadata.clone())])
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_parses_its_two_names_and_refuses_others() {
        assert_eq!("one".parse(), Ok(RecordForm::One));
        assert_eq!("split".parse(), Ok(RecordForm::Split));
        for bad in ["", "One", "three", "split "] {
            let error = bad.parse::<RecordForm>().unwrap_err();
            assert!(error.contains("\"one\" or \"split\""), "{error}");
        }
        assert_eq!(RecordForm::default(), RecordForm::One);
    }
}
