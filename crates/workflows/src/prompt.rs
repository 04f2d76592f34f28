//! Prompts as registry entries: versioned message templates that chat requests
//! (`"prompt": "name@version"`) and workflow `llm` nodes (`prompt_ref`) name. Each message's
//! content is a template over the caller's variables, rendered strictly (an undefined
//! variable is an error, never an empty string) with the workflows' fuel budget.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::spec::SpecError;
use crate::template;

/// Most messages in one prompt.
const MAX_MESSAGES: usize = 64;
/// Longest prompt, as JSON.
const MAX_BYTES: usize = 256 * 1024;

/// A prompt: messages whose contents are templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    /// The prompt's name (the manifest's name wins; kept when the body carries it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub messages: Vec<PromptMessage>,
}

/// One message of a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// A template over the caller's variables (`{{ topic }}`).
    pub content: String,
}

impl Prompt {
    /// Parses and checks a prompt body; every problem at once.
    pub fn load(body: &Value) -> Result<Prompt> {
        let spec = |field: &str, message: String| Error::Spec(vec![SpecError::new(field, message)]);
        let size = serde_json::to_vec(body).map_or(usize::MAX, |b| b.len());
        if size > MAX_BYTES {
            return Err(spec("", format!("a prompt is at most {MAX_BYTES} bytes")));
        }
        let prompt: Prompt = serde_json::from_value(body.clone()).map_err(|e| {
            spec(
                "",
                format!("a prompt is {{\"messages\": [{{\"role\", \"content\"}}]}}: {e}"),
            )
        })?;
        let mut problems = Vec::new();
        if prompt.messages.is_empty() || prompt.messages.len() > MAX_MESSAGES {
            problems.push(SpecError::new(
                "messages",
                format!("1-{MAX_MESSAGES} messages"),
            ));
        }
        for (i, message) in prompt.messages.iter().enumerate() {
            if !matches!(
                message.role.as_str(),
                "system" | "developer" | "user" | "assistant"
            ) {
                problems.push(SpecError::new(
                    format!("messages[{i}].role"),
                    "system, developer, user or assistant",
                ));
            }
            if let Err(e) = template::check_template(&message.content) {
                problems.push(SpecError::new(format!("messages[{i}].content"), e));
            }
        }
        if problems.is_empty() {
            Ok(prompt)
        } else {
            Err(Error::Spec(problems))
        }
    }

    /// The messages with their contents rendered from `variables` (a JSON object).
    pub fn render(&self, variables: &Value) -> Result<Vec<PromptMessage>> {
        let context = match variables {
            Value::Null => Value::Object(Default::default()),
            Value::Object(_) => variables.clone(),
            _ => {
                return Err(Error::Template {
                    field: "prompt_variables".into(),
                    message: "must be a JSON object".into(),
                });
            }
        };
        self.messages
            .iter()
            .enumerate()
            .map(|(i, message)| {
                Ok(PromptMessage {
                    role: message.role.clone(),
                    content: template::render(&message.content, &context).map_err(|message| {
                        Error::Template {
                            field: format!("prompt.messages[{i}].content"),
                            message,
                        }
                    })?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_prompt_renders_its_variables_strictly() {
        let prompt = Prompt::load(&json!({"messages": [
            {"role": "system", "content": "Answer in {{ words }} words."},
            {"role": "user", "content": "Topic: {{ topic | upper }}"}
        ]}))
        .unwrap();
        let rendered = prompt
            .render(&json!({"words": 20, "topic": "tides"}))
            .unwrap();
        assert_eq!(rendered[0].content, "Answer in 20 words.");
        assert_eq!(rendered[1].content, "Topic: TIDES");
        let missing = prompt.render(&json!({"words": 20})).unwrap_err();
        assert!(missing.to_string().contains("messages[1]"), "{missing}");
        assert!(prompt.render(&json!([1])).is_err());
    }

    #[test]
    fn hostile_prompts_are_refused_with_every_problem() {
        for (body, expect) in [
            (json!({}), "messages"),
            (json!({"messages": []}), "1-64 messages"),
            (
                json!({"messages": [{"role": "root", "content": "x"}]}),
                "role",
            ),
            (
                json!({"messages": [{"role": "user", "content": "{{ x"}]}),
                "content",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x", "extra": 1}]}),
                "unknown field",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x".repeat(300_000)}]}),
                "at most",
            ),
        ] {
            let error = Prompt::load(&body).unwrap_err().to_string();
            assert!(error.contains(expect), "{body}: {error}");
        }
        let both = Prompt::load(&json!({"messages": [
            {"role": "root", "content": "{{ x"}
        ]}))
        .unwrap_err();
        let Error::Spec(problems) = both else {
            panic!()
        };
        assert_eq!(problems.len(), 2);
    }
}
