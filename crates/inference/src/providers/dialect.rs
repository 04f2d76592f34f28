//! The OpenAI-shaped APIs that differ from OpenAI's in their URL, credential or fields, spoken
//! by the one OpenAI-compatible adapter:
//!
//! - **Azure OpenAI** (`kind = "azure"`): a model's `upstream` is its deployment, called at
//!   `{base_url}/openai/deployments/{deployment}/chat/completions?api-version=…` with the key
//!   in the `api-key` header; the body carries no `model` (the deployment names it).
//! - **Mistral** (`kind = "mistral"`): OpenAI's body with Mistral's names (`max_tokens`,
//!   `random_seed`, `tool_choice: "any"` for `required`) and only the fields Mistral accepts
//!   (it refuses unknown ones with 422); its stream carries the usage on the last chunk unasked.

use serde_json::{Map, Value};

use crate::config::{ModelConfig, ProviderConfig, ProviderKind};

/// Azure OpenAI's API version when the provider names none (the current GA version).
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// The fields Mistral's chat completions accept.
const MISTRAL_FIELDS: [&str; 16] = [
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "stop",
    "random_seed",
    "response_format",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "parallel_tool_calls",
    "prediction",
];

/// How an OpenAI-shaped provider is spoken to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Azure { api_version: String },
    Mistral,
}

impl Dialect {
    pub fn of(config: &ProviderConfig) -> Self {
        match config.kind {
            ProviderKind::Azure => Dialect::Azure {
                api_version: config
                    .api_version
                    .clone()
                    .unwrap_or_else(|| AZURE_API_VERSION.to_owned()),
            },
            ProviderKind::Mistral => Dialect::Mistral,
            _ => Dialect::OpenAi,
        }
    }

    /// The URL of `path` (`/chat/completions`, `/embeddings`) for `model`.
    pub fn url(&self, base: &str, path: &str, model: &ModelConfig) -> String {
        match self {
            Dialect::Azure { api_version } => format!(
                "{base}/openai/deployments/{}{path}?api-version={}",
                segment(model.upstream_name()),
                segment(api_version)
            ),
            _ => format!("{base}{path}"),
        }
    }

    /// The request with its credential where the provider looks for it.
    pub fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        match (self, key) {
            (_, None) => request,
            (Dialect::Azure { .. }, Some(key)) => request.header("api-key", key),
            (_, Some(key)) => request.bearer_auth(key),
        }
    }

    /// An embeddings body in this dialect's form.
    pub fn shape_embeddings(&self, body: &mut Value) {
        let Some(object) = body.as_object_mut() else {
            return;
        };
        match self {
            Dialect::OpenAi => {}
            Dialect::Azure { .. } => {
                object.remove("model");
            }
            Dialect::Mistral => {
                if let Some(dimensions) = object.remove("dimensions") {
                    object.insert("output_dimension".into(), dimensions);
                }
            }
        }
    }

    /// The OpenAI chat body (its model already renamed) in this dialect's form.
    pub fn shape(&self, body: &mut Value) {
        let Some(object) = body.as_object_mut() else {
            return;
        };
        match self {
            Dialect::OpenAi => {}
            Dialect::Azure { .. } => {
                object.remove("model");
            }
            Dialect::Mistral => mistral(object),
        }
    }
}

fn mistral(object: &mut Map<String, Value>) {
    if let Some(cap) = object.remove("max_completion_tokens")
        && !cap.is_null()
    {
        object.insert("max_tokens".into(), cap);
    }
    if let Some(seed) = object.remove("seed")
        && !seed.is_null()
    {
        object.insert("random_seed".into(), seed);
    }
    if object.get("tool_choice").and_then(Value::as_str) == Some("required") {
        object.insert("tool_choice".into(), Value::String("any".into()));
    }
    object.retain(|field, value| MISTRAL_FIELDS.contains(&field.as_str()) && !value.is_null());
}

/// `text` as one URL path segment (or query value): unreserved characters kept, the rest
/// percent-encoded.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn mistral_gets_its_names_and_only_its_fields() {
        let mut body = json!({"model": "m", "messages": [], "max_completion_tokens": 5, "seed": 3,
            "tool_choice": "required", "stream_options": {"include_usage": true}, "user": "u",
            "metadata": {"k": "v"}, "temperature": null, "top_p": 0.5});
        Dialect::Mistral.shape(&mut body);
        assert_eq!(
            body,
            json!({"model": "m", "messages": [], "max_tokens": 5, "random_seed": 3,
                   "tool_choice": "any", "top_p": 0.5})
        );
    }

    #[test]
    fn azure_calls_the_deployment_with_its_version() {
        let model: ModelConfig =
            toml::from_str("name = \"gpt\"\nprovider = \"azure\"\nupstream = \"my deployment/1\"")
                .unwrap();
        let dialect = Dialect::Azure {
            api_version: "2024-10-21".into(),
        };
        assert_eq!(
            dialect.url("https://x.openai.azure.com", "/chat/completions", &model),
            "https://x.openai.azure.com/openai/deployments/my%20deployment%2F1/chat/completions?api-version=2024-10-21"
        );
        let mut body = json!({"model": "my deployment/1", "messages": []});
        dialect.shape(&mut body);
        assert_eq!(body, json!({"messages": []}));
    }
}
