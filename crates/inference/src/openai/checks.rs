//! OpenAI's checks of tools, `tool_choice` and `response_format`.

use serde_json::Value;

use super::{ChatRequest, invalid};
use crate::error::Error;

impl ChatRequest {
    /// Tools are function definitions with a usable name, and `tool_choice` is one OpenAI
    /// knows, naming an offered function when it names one.
    pub(super) fn validate_tools(&self) -> Result<(), Error> {
        let mut names = Vec::new();
        if let Some(tools) = &self.tools {
            let tools = tools
                .as_array()
                .ok_or_else(|| invalid("tools must be an array".into()))?;
            for (i, tool) in tools.iter().enumerate() {
                if tool.get("type").and_then(Value::as_str) != Some("function") {
                    continue; // other kinds of tool go to the provider as they are
                }
                let name = tool
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("tools[{i}].function.name is required")))?;
                let valid = (1..=64).contains(&name.len())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !valid {
                    return Err(invalid(format!(
                        "tools[{i}].function.name must be 1-64 letters, digits, '_' or '-'"
                    )));
                }
                if let Some(parameters) = tool.pointer("/function/parameters")
                    && !parameters.is_object()
                {
                    return Err(invalid(format!(
                        "tools[{i}].function.parameters must be a JSON Schema object"
                    )));
                }
                names.push(name);
            }
        }
        match &self.tool_choice {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(choice))
                if ["none", "auto", "required"].contains(&choice.as_str()) =>
            {
                Ok(())
            }
            Some(choice) if choice.get("type").and_then(Value::as_str) == Some("function") => {
                let name = choice
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("tool_choice.function.name is required".into()))?;
                if names.contains(&name) {
                    Ok(())
                } else {
                    Err(invalid(format!(
                        "tool_choice names {name:?}, which is not among the tools"
                    )))
                }
            }
            Some(Value::Object(_)) => Ok(()), // allowed_tools and newer forms: the provider's
            Some(_) => Err(invalid(
                "tool_choice must be \"none\", \"auto\", \"required\" or a function".into(),
            )),
        }
    }

    /// `response_format` is text, a JSON object, or a JSON Schema that is a schema.
    pub(super) fn validate_response_format(&self) -> Result<(), Error> {
        let Some(format) = &self.response_format else {
            return Ok(());
        };
        match format.get("type").and_then(Value::as_str) {
            Some("text" | "json_object") => Ok(()),
            Some("json_schema") => match format.pointer("/json_schema/schema") {
                None | Some(Value::Object(_) | Value::Bool(_)) => Ok(()),
                Some(_) => Err(invalid(
                    "response_format.json_schema.schema must be a JSON Schema object".into(),
                )),
            },
            _ => Err(invalid(
                "response_format.type must be \"text\", \"json_object\" or \"json_schema\"".into(),
            )),
        }
    }
}
