//! The mock upstream's other providers, each speaking its own wire format and checking what it
//! is sent as the real service would:
//!
//! - Azure OpenAI, `POST /openai/deployments/{deployment}/chat/completions?api-version=…`
//!   (and `/embeddings`): 404 without `api-version`, 401 without the `api-key` header, 400 when
//!   the body names a `model` (the deployment does); the answer's model is the deployment.
//! - Mistral, `POST /mistral/v1/chat/completions`: 422 for a field Mistral does not know
//!   (`stream_options`, `max_completion_tokens`, `user`, ...) or `tool_choice: "required"`
//!   (Mistral's is `any`); a stream carries its usage on the last chunk, unasked.
//! - Gemini, `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`
//!   (and `:batchEmbedContents`): 401 without `x-goog-api-key`, 400 `INVALID_ARGUMENT` for a
//!   turn whose role is not `user` or `model`; the text says whether a `systemInstruction` came;
//!   offered tools, it calls the first; model `gemini-blocked` blocks every prompt (SAFETY).

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::{chunk, completion, sse};

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            web::post().to(azure_chat),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            web::post().to(azure_embeddings),
        )
        .route("/mistral/v1/chat/completions", web::post().to(mistral_chat))
        .route("/v1beta/models/{call}", web::post().to(gemini));
}

fn header(request: &HttpRequest, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Azure's checks: the version, the key, no model in the body.
fn azure_refusal(request: &HttpRequest, body: &Value) -> Option<HttpResponse> {
    if !request.query_string().contains("api-version=") {
        return Some(
            HttpResponse::NotFound()
                .json(json!({"error": {"code": "404", "message": "Resource not found"}})),
        );
    }
    if header(request, "api-key").is_none() || header(request, "authorization").is_some() {
        return Some(HttpResponse::Unauthorized().json(json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}})));
    }
    if body.get("model").is_some() {
        return Some(HttpResponse::BadRequest().json(json!({"error": {"code": "invalid_request", "message": "the deployment names the model"}})));
    }
    None
}

async fn azure_chat(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> HttpResponse {
    if let Some(refusal) = azure_refusal(&request, &body) {
        return refusal;
    }
    let deployment = path.into_inner();
    if body["stream"].as_bool().unwrap_or(false) {
        return sse(super::stream_body(&deployment), None);
    }
    HttpResponse::Ok().json(completion(&deployment))
}

async fn azure_embeddings(request: HttpRequest, body: web::Json<Value>) -> HttpResponse {
    if let Some(refusal) = azure_refusal(&request, &body) {
        return refusal;
    }
    let count = body["input"].as_array().map_or(1, Vec::len);
    let data: Vec<Value> = (0..count)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.6, 0.8]}))
        .collect();
    HttpResponse::Ok().json(
        json!({"object": "list", "data": data, "usage": {"prompt_tokens": 3, "total_tokens": 3}}),
    )
}

const MISTRAL_FIELDS: [&str; 17] = [
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
    "safe_prompt",
];

async fn mistral_chat(body: web::Json<Value>) -> HttpResponse {
    let unknown: Vec<&String> = body
        .as_object()
        .map(|o| {
            o.keys()
                .filter(|k| !MISTRAL_FIELDS.contains(&k.as_str()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(field) = unknown.first() {
        return HttpResponse::UnprocessableEntity().json(json!({"object": "error", "type": "invalid_request_error",
            "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", field], "msg": "Extra inputs are not permitted"}]}}));
    }
    if body["tool_choice"] == "required" {
        return HttpResponse::UnprocessableEntity()
            .json(json!({"object": "error", "type": "invalid_request_error",
            "message": "tool_choice must be one of auto, none, any"}));
    }
    let model = body["model"].as_str().unwrap_or("mistral").to_owned();
    if !body["stream"].as_bool().unwrap_or(false) {
        return HttpResponse::Ok().json(completion(&model));
    }
    let mut events = vec![chunk(
        &model,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    for word in ["hello ", "from ", "mistral"] {
        events.push(chunk(&model, json!({"content": word}), None));
    }
    // The last chunk: the finish reason and the usage together, as Mistral sends them.
    let last = json!({"id": "cmpl-mistral", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}});
    events.push(format!("data: {last}\n\n"));
    events.push("data: [DONE]\n\n".to_owned());
    sse(events, None)
}

fn gemini_error(status: u16, reason: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .json(json!({"error": {"code": status, "message": message, "status": reason}}))
}

async fn gemini(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> HttpResponse {
    let call = path.into_inner();
    let Some((model, method)) = call.split_once(':') else {
        return gemini_error(404, "NOT_FOUND", "no method");
    };
    if header(&request, "x-goog-api-key").is_none() {
        return gemini_error(401, "UNAUTHENTICATED", "API key not valid.");
    }
    if method == "batchEmbedContents" {
        let count = body["requests"].as_array().map_or(0, Vec::len);
        let embeddings: Vec<Value> = (0..count).map(|_| json!({"values": [0.6, 0.8]})).collect();
        return HttpResponse::Ok().json(json!({"embeddings": embeddings}));
    }
    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    if contents.is_empty()
        || contents
            .iter()
            .any(|c| !matches!(c["role"].as_str(), Some("user" | "model")))
    {
        return gemini_error(
            400,
            "INVALID_ARGUMENT",
            "Please use a valid role: user, model.",
        );
    }
    if model == "gemini-blocked" {
        return HttpResponse::Ok().json(json!({"promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10}}));
    }
    let usage = json!({"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15});
    let tool = body["tools"][0]["functionDeclarations"][0]["name"].as_str();
    let parts = match tool {
        Some(name) => vec![json!({"functionCall": {"name": name, "args": {"q": 1}}})],
        None => {
            let text = if body.get("systemInstruction").is_some() {
                "hello from gemini with a system instruction"
            } else {
                "hello from gemini"
            };
            text.split_inclusive(' ')
                .map(|t| json!({"text": t}))
                .collect()
        }
    };
    match method {
        "generateContent" => HttpResponse::Ok().json(json!({"candidates": [{"index": 0,
            "content": {"role": "model", "parts": parts}, "finishReason": "STOP"}], "usageMetadata": usage,
            "modelVersion": model})),
        "streamGenerateContent" if request.query_string().contains("alt=sse") => {
            let count = parts.len();
            let events = parts
                .into_iter()
                .enumerate()
                .map(|(i, part)| {
                    let mut response = json!({"candidates": [{"index": 0, "content": {"role": "model", "parts": [part]}}]});
                    if i + 1 == count {
                        response["candidates"][0]["finishReason"] = json!("STOP");
                        response["usageMetadata"] = usage.clone();
                    }
                    format!("data: {response}\r\n\r\n")
                })
                .collect();
            sse(events, None)
        }
        _ => gemini_error(400, "INVALID_ARGUMENT", "streaming needs alt=sse"),
    }
}
