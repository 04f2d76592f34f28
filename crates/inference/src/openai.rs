//! The OpenAI wire format of `/v1/chat/completions`: the request as clients send it (every
//! field the API documents, and nothing else: an unknown field is a 400 that names it), its
//! checks, and the token estimate used before a provider has counted.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ModelConfig;
use crate::error::Error;

/// Most messages one request may carry.
pub const MAX_MESSAGES: usize = 2_048;
/// Most choices (`n`) one request may ask for.
pub const MAX_CHOICES: u32 = 8;

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// A model from `GET /v1/models`, or `auto` to let the router choose.
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub tools: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub response_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub stop: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub logit_bias: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modalities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub prediction: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
    /// Switchyard's response cache for this request (`{"no-cache": true}`, `{"no-store":
    /// true}`, `{"ttl": seconds}`); never sent to a provider.
    #[serde(default, skip_serializing)]
    pub cache: Option<CacheOptions>,
    /// Switchyard: a registered prompt, `name@version` (or `name`: the newest), whose rendered
    /// messages go before the request's; never sent to a provider.
    #[serde(default, skip_serializing)]
    pub prompt: Option<String>,
    /// Switchyard: the variables the prompt's templates render with (a JSON object).
    #[serde(default, skip_serializing)]
    #[schema(value_type = Object)]
    pub prompt_variables: Option<Value>,
    /// Switchyard: retrieve from the tenant's documents and put the best chunks before the
    /// messages, numbered for citation: `{"k": 4, "mode": "hybrid", "document_ids": [...],
    /// "query": "..."}` (every field optional; the query defaults to the last user message);
    /// never sent to a provider.
    #[serde(default, skip_serializing)]
    #[schema(value_type = Object)]
    pub retrieval: Option<Value>,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// The request's `cache` option.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheOptions {
    /// Do not answer from the cache (the fresh answer is still stored).
    #[serde(default, rename = "no-cache")]
    pub no_cache: bool,
    /// Do not store this answer.
    #[serde(default, rename = "no-store")]
    pub no_store: bool,
    /// Keep this answer at most this many seconds (at most the configured TTL).
    #[serde(default)]
    pub ttl: Option<u64>,
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

/// One message: `content` is a string, an array of parts, or null (assistant tool calls).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub content: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub tool_calls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub function_call: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

impl Message {
    /// The message's text (string content, or the text parts of an array).
    pub fn text(&self) -> String {
        match &self.content {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        }
    }
}

/// `user` and tags: who and what a request's spend is attributed to.
pub mod attribution;
mod checks;
mod legacy;
mod responses;

pub use legacy::{CompletionRequest, text_chunk, text_completion};
pub use responses::{ResponseEvents, ResponsesRequest, response_body, response_id};

fn invalid(message: String) -> Error {
    Error::invalid(message)
}

impl ChatRequest {
    /// The output cap the client asked for (`max_completion_tokens` wins, as in OpenAI).
    pub fn output_cap(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    pub fn choices(&self) -> u32 {
        self.n.unwrap_or(1)
    }

    /// The checks OpenAI makes, so a bad request is refused here before it costs anything.
    pub fn validate(&self) -> Result<(), Error> {
        if self.model.is_empty() || self.model.len() > 256 {
            return Err(invalid("model must be 1-256 characters".into()));
        }
        if self.messages.is_empty() {
            return Err(invalid("messages must not be empty".into()));
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(invalid(format!(
                "at most {MAX_MESSAGES} messages per request"
            )));
        }
        for (i, message) in self.messages.iter().enumerate() {
            match (&message.content, message.role) {
                (Some(Value::String(_)) | Some(Value::Array(_)), _) => {}
                (None | Some(Value::Null), Role::Assistant) => {}
                (None | Some(Value::Null), _) => {
                    return Err(invalid(format!("messages[{i}].content is required")));
                }
                (Some(_), _) => {
                    return Err(invalid(format!(
                        "messages[{i}].content must be a string or an array of parts"
                    )));
                }
            }
            if message.role == Role::Tool && message.tool_call_id.is_none() {
                return Err(invalid(format!(
                    "messages[{i}]: a tool message needs tool_call_id"
                )));
            }
        }
        if let Some(n) = self.n
            && !(1..=MAX_CHOICES).contains(&n)
        {
            return Err(invalid(format!("n must be between 1 and {MAX_CHOICES}")));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(invalid("temperature must be between 0 and 2".into()));
        }
        if let Some(p) = self.top_p
            && !(0.0..=1.0).contains(&p)
        {
            return Err(invalid("top_p must be between 0 and 1".into()));
        }
        if self.output_cap() == Some(0) {
            return Err(invalid("max_tokens must be at least 1".into()));
        }
        if self.stream_options.is_some() && !self.stream {
            return Err(invalid(
                "stream_options is only allowed when stream is true".into(),
            ));
        }
        attribution::check_user(self.user.as_deref()).map_err(invalid)?;
        attribution::tags(self.metadata.as_ref(), None).map_err(invalid)?;
        self.validate_tools()?;
        self.validate_response_format()
    }

    /// `stop` as a list (one string becomes a list of one); `None` when unset.
    pub fn stop_sequences(&self) -> Option<Value> {
        match &self.stop {
            Some(Value::String(stop)) => Some(Value::Array(vec![Value::String(stop.clone())])),
            Some(Value::Array(stops)) => Some(Value::Array(stops.clone())),
            _ => None,
        }
    }

    /// The request's tags (`metadata.tags`; checked by [`ChatRequest::validate`]).
    pub fn tags(&self) -> Vec<String> {
        attribution::tags(self.metadata.as_ref(), None).unwrap_or_default()
    }

    /// Prompt tokens before the provider counts them: about four characters a token, plus the
    /// framing of each message (what tiktoken-based estimates do, within a few percent for
    /// English; the provider's count is what is billed).
    pub fn estimate_prompt_tokens(&self) -> u64 {
        let chars: usize = self
            .messages
            .iter()
            .map(|m| {
                m.text().chars().count() + m.tool_calls.as_ref().map_or(0, |t| t.to_string().len())
            })
            .sum();
        let tools = self.tools.as_ref().map_or(0, |t| t.to_string().len());
        ((chars + tools) as u64).div_ceil(4) + 4 * self.messages.len() as u64 + 3
    }
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// A string or an array of strings.
    #[schema(value_type = Object)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `{"tags": ...}`: the request's tags, as a chat request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
}

/// Most inputs one embeddings request may carry.
pub const MAX_EMBEDDING_INPUTS: usize = 2_048;
/// Most tokens one embeddings input may hold (estimated, as OpenAI bounds it).
pub const MAX_EMBEDDING_INPUT_TOKENS: u64 = 8_192;
/// Most numbers one embeddings answer may hold (inputs × dimensions): each request's memory
/// budget, about 4 MiB of vectors (a JSON answer of at most ~20 MB).
pub const MAX_EMBEDDING_VALUES: u64 = 1 << 20;
/// The dimensions a request gets when it asks for none.
pub const DEFAULT_EMBEDDING_DIMENSIONS: u32 = 64;

/// Refuses an answer of more than [`MAX_EMBEDDING_VALUES`] numbers (inputs × dimensions).
pub fn check_embedding_size(inputs: usize, dimensions: u32) -> Result<(), Error> {
    let values = inputs as u64 * u64::from(dimensions);
    if values > MAX_EMBEDDING_VALUES {
        return Err(invalid(format!(
            "{inputs} inputs of {dimensions} dimensions would answer {values} numbers; one request may ask for at most {MAX_EMBEDDING_VALUES} (fewer inputs, or fewer dimensions)"
        )));
    }
    Ok(())
}

impl EmbeddingsRequest {
    /// The dimensions `model` answers this request with: those asked for, if the model has
    /// that many, else its own. Refused (400) when the model has fewer than asked, or when the
    /// answer would exceed [`MAX_EMBEDDING_VALUES`].
    pub fn dimensions_for(&self, model: &ModelConfig, inputs: usize) -> Result<u32, Error> {
        let own = model.embedding_dimensions;
        if let (Some(asked), Some(own)) = (self.dimensions, own)
            && asked > own
        {
            return Err(invalid(format!(
                "model {} embeds in {own} dimensions: dimensions must be 1-{own}",
                model.name
            )));
        }
        let dimensions = self
            .dimensions
            .or(own)
            .unwrap_or(DEFAULT_EMBEDDING_DIMENSIONS);
        check_embedding_size(inputs, dimensions)?;
        Ok(dimensions)
    }

    /// The request's tags (`metadata.tags`), checked.
    pub fn tags(&self) -> Result<Vec<String>, Error> {
        attribution::check_user(self.user.as_deref()).map_err(invalid)?;
        attribution::tags(self.metadata.as_ref(), None).map_err(invalid)
    }

    /// The inputs as strings, checked.
    pub fn inputs(&self) -> Result<Vec<String>, Error> {
        let inputs = match &self.input {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid("input must be a string or an array of strings".into()))?,
            _ => {
                return Err(invalid(
                    "input must be a string or an array of strings".into(),
                ));
            }
        };
        if inputs.is_empty() || inputs.len() > MAX_EMBEDDING_INPUTS {
            return Err(invalid(format!(
                "input must hold 1-{MAX_EMBEDDING_INPUTS} strings"
            )));
        }
        if self
            .encoding_format
            .as_deref()
            .is_some_and(|f| f != "float" && f != "base64")
        {
            return Err(invalid(
                "encoding_format must be \"float\" or \"base64\"".into(),
            ));
        }
        if self.dimensions.is_some_and(|d| d == 0 || d > 4_096) {
            return Err(invalid("dimensions must be between 1 and 4096".into()));
        }
        if let Some(long) = inputs
            .iter()
            .position(|i| (i.chars().count() as u64).div_ceil(4) > MAX_EMBEDDING_INPUT_TOKENS)
        {
            return Err(invalid(format!(
                "input[{long}] is longer than {MAX_EMBEDDING_INPUT_TOKENS} tokens"
            )));
        }
        check_embedding_size(
            inputs.len(),
            self.dimensions.unwrap_or(DEFAULT_EMBEDDING_DIMENSIONS),
        )?;
        Ok(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ChatRequest, serde_json::Error> {
        serde_json::from_str(body)
    }

    #[test]
    fn what_the_openai_sdk_sends_is_accepted() {
        let request = parse(
            r#"{"model":"auto","messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hello"}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"42"}],
            "stream":true,"stream_options":{"include_usage":true},"max_tokens":50,"temperature":0.2,
            "n":2,"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],
            "response_format":{"type":"json_object"},"seed":7,"user":"u1"}"#,
        )
        .unwrap();
        request.validate().unwrap();
        assert_eq!(request.choices(), 2);
        assert_eq!(request.messages[1].text(), "hello");
        assert!(request.estimate_prompt_tokens() > 16);
    }

    #[test]
    fn unknown_fields_wrong_types_and_bad_roles_do_not_parse() {
        for body in [
            r#"{"model":"m","messages":[],"surprise":1}"#,
            r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x","mood":"sad"}]}"#,
            r#"{"model":7,"messages":[]}"#,
            r#"{"model":"m","messages":"hi"}"#,
            r#"{"model":"m","messages":[],"stream":"yes"}"#,
        ] {
            assert!(parse(body).is_err(), "{body}");
        }
    }

    #[test]
    fn requests_that_parse_but_make_no_sense_are_refused() {
        let base = |extra: &str, messages: &str| {
            parse(&format!(r#"{{"model":"m","messages":{messages}{extra}}}"#)).unwrap()
        };
        let user = r#"[{"role":"user","content":"x"}]"#;
        for (request, says) in [
            (base("", "[]"), "empty"),
            (base(r#","n":0"#, user), "n must"),
            (base(r#","n":9"#, user), "n must"),
            (base(r#","temperature":3"#, user), "temperature"),
            (base(r#","max_tokens":0"#, user), "max_tokens"),
            (
                base(r#","stream_options":{"include_usage":true}"#, user),
                "stream_options",
            ),
            (base("", r#"[{"role":"user"}]"#), "content is required"),
            (
                base("", r#"[{"role":"user","content":5}]"#),
                "string or an array",
            ),
            (
                base("", r#"[{"role":"tool","content":"x"}]"#),
                "tool_call_id",
            ),
            (base(r#","tools":{"a":1}"#, user), "tools must"),
        ] {
            let error = request.validate().unwrap_err();
            assert!(error.to_string().contains(says), "{error} lacks {says}");
        }
        let many = format!(
            "[{}]",
            vec![r#"{"role":"user","content":"x"}"#; MAX_MESSAGES + 1].join(",")
        );
        assert!(base("", &many).validate().is_err());
    }

    #[test]
    fn embeddings_inputs_are_strings() {
        let ok: EmbeddingsRequest =
            serde_json::from_str(r#"{"model":"m","input":["a","b"]}"#).unwrap();
        assert_eq!(ok.inputs().unwrap().len(), 2);
        for body in [
            r#"{"model":"m","input":[1,2]}"#,
            r#"{"model":"m","input":[]}"#,
            r#"{"model":"m","input":{"a":1}}"#,
            r#"{"model":"m","input":"x","encoding_format":"hex"}"#,
        ] {
            let request: EmbeddingsRequest = serde_json::from_str(body).unwrap();
            assert!(request.inputs().is_err(), "{body}");
        }
    }

    #[test]
    fn embeddings_requests_are_bounded_in_memory() {
        let request = |input: Value, dimensions: Option<u32>| EmbeddingsRequest {
            model: "m".into(),
            input,
            encoding_format: None,
            dimensions,
            user: None,
            metadata: None,
        };
        let many = Value::Array(vec![Value::String("a".into()); 2_048]);
        let error = request(many.clone(), Some(4_096)).inputs().unwrap_err();
        assert!(error.to_string().contains("at most 1048576"), "{error}");
        assert!(request(many, Some(512)).inputs().is_ok());
        let long = Value::String("word ".repeat(10_000));
        let error = request(long, None).inputs().unwrap_err();
        assert!(error.to_string().contains("8192 tokens"), "{error}");
    }

    #[test]
    fn a_model_answers_in_its_own_dimensions_never_more() {
        let request = |dimensions: Option<u32>| EmbeddingsRequest {
            model: "e".into(),
            input: Value::String("a".into()),
            encoding_format: None,
            dimensions,
            user: None,
            metadata: None,
        };
        let model = |own: Option<u32>| {
            let mut config: crate::config::Config = toml::from_str(
                "[[providers]]\nname = \"p\"\nkind = \"sim\"\n[[models]]\nname = \"e\"\nprovider = \"p\"\n",
            )
            .unwrap();
            let mut model = config.models.remove(0);
            model.embedding_dimensions = own;
            model
        };
        // Asked for fewer than the model has: as asked; for none: the model's own.
        assert_eq!(
            request(Some(256))
                .dimensions_for(&model(Some(1536)), 1)
                .unwrap(),
            256
        );
        assert_eq!(
            request(None).dimensions_for(&model(Some(1536)), 1).unwrap(),
            1536
        );
        assert_eq!(
            request(None).dimensions_for(&model(None), 1).unwrap(),
            DEFAULT_EMBEDDING_DIMENSIONS
        );
        // More than it has: refused, naming the model's dimensions.
        let error = request(Some(3072))
            .dimensions_for(&model(Some(1536)), 1)
            .unwrap_err();
        assert!(
            error.to_string().contains("embeds in 1536 dimensions"),
            "{error}"
        );
        // The model's own dimensions count toward the answer's size.
        let error = request(None)
            .dimensions_for(&model(Some(4096)), 2_048)
            .unwrap_err();
        assert!(error.to_string().contains("at most 1048576"), "{error}");
    }
}
