//! Tool calling by a simulated model: with tools offered, it calls the ones the prompt is about
//! (their names' and descriptions' words in the last user message), and now and then one
//! unprompted when none is; `tool_choice` `required` or a named function forces a call, `none`
//! forbids one. The arguments fit each tool's `parameters` schema ([`super::schema`]) and take
//! the prompt's numbers and words where they fit. Once the conversation ends in tool results,
//! the model answers from them instead of calling again (unless a call is forced).

use serde_json::{Value, json};

use super::schema;
use super::source::{Source, content_words, last_user_text};
use crate::config::ModelConfig;
use crate::openai::{ChatRequest, Role};
use crate::providers::ProviderError;

/// How often an `auto` choice calls a tool the prompt does not mention.
const UNPROMPTED: f64 = 0.25;
/// The most calls one answer makes at once.
const MOST_PARALLEL: usize = 4;
/// How much of one tool result the answer quotes.
const QUOTED: usize = 240;

/// One call the model makes.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON text, as OpenAI sends them.
    pub arguments: String,
}

impl ToolCall {
    /// The call as a message's `tool_calls` entry.
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "type": "function",
               "function": {"name": self.name, "arguments": self.arguments}})
    }
}

struct Tool<'a> {
    name: &'a str,
    description: &'a str,
    parameters: Option<&'a Value>,
}

fn offered(request: &ChatRequest) -> Vec<Tool<'_>> {
    let Some(Value::Array(tools)) = &request.tools else {
        return Vec::new();
    };
    tools
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .filter_map(|t| {
            let function = t.get("function")?;
            Some(Tool {
                name: function.get("name")?.as_str()?,
                description: function
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                parameters: function.get("parameters"),
            })
        })
        .collect()
}

/// The calls answer `index` makes, or `None` when it answers in words.
pub fn plan(
    model: &ModelConfig,
    request: &ChatRequest,
    index: u32,
) -> Result<Option<Vec<ToolCall>>, ProviderError> {
    let tools = offered(request);
    if tools.is_empty() {
        return Ok(None);
    }
    let mut source = Source::new(model, request, index, "tool-choice");
    let choice = request.tool_choice.as_ref();
    let forced = choice
        .and_then(|c| c.pointer("/function/name"))
        .and_then(Value::as_str);
    let chosen: Vec<&Tool<'_>> = match (choice.and_then(Value::as_str), forced) {
        (Some("none"), _) => return Ok(None),
        (_, Some(name)) => {
            let tool = tools.iter().find(|t| t.name == name).ok_or_else(|| {
                ProviderError::fatal(
                    "invalid_request_error",
                    400,
                    format!("tool_choice names {name:?}, which is not among the tools offered"),
                )
            })?;
            vec![tool]
        }
        (Some("required"), _) => {
            let relevant = relevant(&tools, request, parallel(request));
            if relevant.is_empty() {
                vec![&tools[pick(&mut source, tools.len())]]
            } else {
                relevant
            }
        }
        _ => {
            if answered(request) {
                return Ok(None);
            }
            let relevant = relevant(&tools, request, parallel(request));
            if !relevant.is_empty() {
                relevant
            } else if source.chance(UNPROMPTED) {
                vec![&tools[pick(&mut source, tools.len())]]
            } else {
                return Ok(None);
            }
        }
    };
    let mut calls = Vec::with_capacity(chosen.len());
    for (i, tool) in chosen.into_iter().enumerate() {
        let mut source = Source::new(model, request, index, &format!("tool-args/{}", tool.name));
        let parameters = tool
            .parameters
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let arguments = schema::generate(&parameters, &mut source).map_err(|reason| {
            ProviderError::fatal(
                "invalid_request_error",
                400,
                format!("tool {:?}: {reason}", tool.name),
            )
        })?;
        let id = blake3::Hasher::new()
            .update(b"tool-call-id")
            .update(&source.seed())
            .update(&i.to_le_bytes())
            .finalize()
            .to_hex();
        calls.push(ToolCall {
            id: format!("call_{}", &id[..24]),
            name: tool.name.to_owned(),
            arguments: arguments.to_string(),
        });
    }
    Ok(Some(calls))
}

fn pick(source: &mut Source, n: usize) -> usize {
    usize::try_from(source.below(n as u64)).unwrap_or(0)
}

fn parallel(request: &ChatRequest) -> bool {
    request.parallel_tool_calls != Some(false)
}

/// Whether the conversation ends in tool results (the model has what it asked for).
pub fn answered(request: &ChatRequest) -> bool {
    request
        .messages
        .last()
        .is_some_and(|m| m.role == Role::Tool)
}

/// The tools the last user message is about, best first: one, or up to [`MOST_PARALLEL`] when
/// parallel calls are allowed.
fn relevant<'t, 'a>(
    tools: &'t [Tool<'a>],
    request: &ChatRequest,
    parallel: bool,
) -> Vec<&'t Tool<'a>> {
    let prompt = content_words(&last_user_text(request));
    let mut scored: Vec<(usize, usize, &Tool<'_>)> = tools
        .iter()
        .enumerate()
        .map(|(at, tool)| {
            let mut words = name_words(tool.name);
            words.extend(content_words(tool.description));
            words.retain(|w| w.len() >= 3);
            words.sort();
            words.dedup();
            let score = words
                .iter()
                .filter(|w| prompt.iter().any(|p| alike(p, w)))
                .count();
            (score, at, tool)
        })
        .filter(|(score, _, _)| *score > 0)
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let most = if parallel { MOST_PARALLEL } else { 1 };
    scored.into_iter().take(most).map(|(_, _, t)| t).collect()
}

/// The words of an identifier: `get_weather`, `getWeather` and `get-weather` are "get" and
/// "weather".
fn name_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        previous_lower = c.is_lowercase();
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The same word, or one of its forms (`multiply`, `multiplied`; `search`, `searching`).
fn alike(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let shared = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    shared >= 5 || (shared >= 4 && shared + 3 >= a.len().max(b.len()))
}

/// An answer made from the tool results that end the conversation.
pub fn summary(request: &ChatRequest) -> Option<String> {
    if !answered(request) {
        return None;
    }
    let results: Vec<_> = request
        .messages
        .iter()
        .rev()
        .take_while(|m| m.role == Role::Tool)
        .collect();
    let name_of = |id: &str| -> String {
        request
            .messages
            .iter()
            .filter_map(|m| m.tool_calls.as_ref()?.as_array())
            .flatten()
            .find(|call| call.get("id").and_then(Value::as_str) == Some(id))
            .and_then(|call| call.pointer("/function/name")?.as_str())
            .unwrap_or("the tool")
            .to_owned()
    };
    let parts: Vec<String> = results
        .iter()
        .rev()
        .map(|m| {
            let text = m.text();
            let quoted: String = text.chars().take(QUOTED).collect();
            format!(
                "{} returned {}",
                name_of(m.tool_call_id.as_deref().unwrap_or("")),
                quoted.trim()
            )
        })
        .collect();
    Some(format!("From the tool results: {}.", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_word_forms() {
        assert_eq!(name_words("getWeather"), ["get", "weather"]);
        assert_eq!(
            name_words("get_current-weather"),
            ["get", "current", "weather"]
        );
        assert_eq!(name_words("HTTPGet"), ["httpget"]);
        assert!(alike("multiply", "multiplied"));
        assert!(alike("search", "searching"));
        assert!(!alike("weather", "whether"));
        assert!(!alike("add", "address"));
    }
}
