//! The mock upstream's AWS Bedrock runtime: `POST /model/{modelId}/converse` and
//! `/converse-stream`, checking what the real service checks:
//!
//! - Authorization: a SigV4 signature (access key `AKIDMOCK`, secret `mock-secret`, region
//!   `us-east-1`, service `bedrock`), recomputed here from the request as received and compared
//!   (403 `InvalidSignatureException` when it differs, or when `x-amz-date` is over five
//!   minutes off), or a Bedrock API key `bedrock-test-key` as a bearer token.
//! - The body (400 `ValidationException`): no field Converse does not know, a first turn from
//!   the user, turns that alternate, no blank text, tool results that answer the previous
//!   turn's tool uses, and a `toolConfig` whenever tool blocks are in the conversation.
//! - Model `bedrock-long` is over its window ("Input is too long for requested model."),
//!   `bedrock-throttled` throttles (429 `ThrottlingException`).
//!
//! The answer says whether a system prompt came; offered a tool it must call (`any`, or one
//! named), it calls it with `{"q": 1}`. A stream is event-stream messages, sent in pieces
//! that do not fall on message boundaries.

use std::time::{Duration, SystemTime};

use actix_web::{HttpRequest, HttpResponse, web};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use serde_json::{Value, json};

pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/model/{model}/{action}", web::post().to(bedrock));
}

fn aws_error(status: u16, kind: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .insert_header((
            "x-amzn-ErrorType",
            format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        ))
        .json(json!({"message": message}))
}

fn header<'r>(request: &'r HttpRequest, name: &str) -> Option<&'r str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Checks the request's SigV4 signature as AWS would: recomputed from what arrived.
fn verify_signature(request: &HttpRequest, body: &[u8]) -> Result<(), String> {
    let authorization = header(request, "authorization").ok_or("no Authorization header")?;
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not an AWS4-HMAC-SHA256 signature")?;
    let field = |name: &str| {
        fields
            .split(", ")
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .ok_or(format!("the signature has no {name}"))
    };
    let (credential, signed, signature) = (
        field("Credential")?,
        field("SignedHeaders")?,
        field("Signature")?,
    );
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != "AKIDMOCK" || scope[4] != "aws4_request" {
        return Err(format!("unknown credential {credential}"));
    }
    if scope[2] != "us-east-1" || scope[3] != "bedrock" {
        return Err(format!(
            "the credential is scoped to {}/{}",
            scope[2], scope[3]
        ));
    }
    let date = header(request, "x-amz-date").ok_or("no x-amz-date")?;
    let format =
        time::format_description::parse_borrowed::<1>("[year][month][day]T[hour][minute][second]Z")
            .map_err(|e| e.to_string())?;
    let at: SystemTime = time::PrimitiveDateTime::parse(date, &format)
        .map_err(|e| format!("x-amz-date {date}: {e}"))?
        .assume_utc()
        .into();
    let skew = SystemTime::now()
        .duration_since(at)
        .or_else(|e| Ok::<_, String>(e.duration()))?;
    if skew > Duration::from_secs(300) {
        return Err("Signature expired".into());
    }
    let token = header(request, "x-amz-security-token").map(str::to_owned);
    if token.as_deref().is_some_and(|t| t != "mock-session-token") {
        return Err("The security token included in the request is invalid.".into());
    }
    let host = header(request, "host").ok_or("no Host header")?;
    let url = format!("http://{host}{}", request.uri());
    let mut headers = Vec::new();
    for name in signed.split(';') {
        if matches!(name, "host" | "x-amz-date" | "x-amz-security-token") {
            continue; // the signer adds these itself
        }
        headers.push((
            name,
            header(request, name).ok_or(format!("no {name} header"))?,
        ));
    }
    let identity: Identity =
        Credentials::new("AKIDMOCK", "mock-secret", token, None, "mock").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("bedrock")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable =
        SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body))
            .map_err(|e| e.to_string())?;
    let (_, expected) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    if expected != signature {
        return Err(
            "The request signature we calculated does not match the signature you provided.".into(),
        );
    }
    Ok(())
}

const FIELDS: [&str; 7] = [
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
];

/// Converse's checks of a body.
fn validate(body: &Value) -> Result<(), String> {
    let object = body.as_object().ok_or("the body is not an object")?;
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "Malformed input request: extraneous key [{unknown}] is not permitted"
        ));
    }
    for key in body["inferenceConfig"]
        .as_object()
        .into_iter()
        .flat_map(|c| c.keys())
    {
        if !["maxTokens", "temperature", "topP", "stopSequences"].contains(&key.as_str()) {
            return Err(format!("extraneous key [{key}] in inferenceConfig"));
        }
    }
    let messages = body["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or("messages must not be empty")?;
    let mut previous_uses: Vec<String> = Vec::new();
    let mut has_tool_blocks = false;
    for (at, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        let expected = if at % 2 == 0 { "user" } else { "assistant" };
        if role != expected {
            return Err("A conversation must alternate between user and assistant roles. Make sure the conversation starts with a user message.".into());
        }
        let blocks = message["content"]
            .as_array()
            .filter(|c| !c.is_empty())
            .ok_or("The content field in the Message object is empty.")?;
        let mut uses = Vec::new();
        for block in blocks {
            if block
                .get("text")
                .is_some_and(|t| t.as_str().is_none_or(|t| t.trim().is_empty()))
            {
                return Err("The text field in the ContentBlock object is blank.".into());
            }
            if let Some(id) = block.pointer("/toolUse/toolUseId").and_then(Value::as_str) {
                has_tool_blocks = true;
                uses.push(id.to_owned());
            }
            if let Some(id) = block
                .pointer("/toolResult/toolUseId")
                .and_then(Value::as_str)
            {
                has_tool_blocks = true;
                if !previous_uses.iter().any(|u| u == id) {
                    return Err(format!(
                        "The toolResult {id} does not answer a toolUse of the previous turn."
                    ));
                }
            }
        }
        previous_uses = uses;
    }
    if has_tool_blocks && body.get("toolConfig").is_none() {
        return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".into());
    }
    Ok(())
}

/// The tool the model must call, if it must call one.
fn forced_tool(body: &Value) -> Option<String> {
    let config = body.get("toolConfig")?;
    let choice = config.get("toolChoice")?;
    if let Some(name) = choice.pointer("/tool/name").and_then(Value::as_str) {
        return Some(name.to_owned());
    }
    choice.get("any")?;
    config
        .pointer("/tools/0/toolSpec/name")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn event(kind: &str, payload: Value) -> Vec<u8> {
    let message = Message::new(payload.to_string().into_bytes())
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(kind.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ));
    let mut out = Vec::new();
    let _ = aws_smithy_eventstream::frame::write_message_to(&message, &mut out);
    out
}

async fn bedrock(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    body: Bytes,
) -> HttpResponse {
    let (model, action) = path.into_inner();
    match header(&request, "authorization") {
        Some("Bearer bedrock-test-key") => {}
        Some(_) => {
            if let Err(why) = verify_signature(&request, &body) {
                return aws_error(403, "InvalidSignatureException", &why);
            }
        }
        None => {
            return aws_error(
                403,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            );
        }
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return aws_error(400, "SerializationException", "the body is not JSON");
    };
    if let Err(why) = validate(&body) {
        return aws_error(400, "ValidationException", &why);
    }
    match model.as_str() {
        "bedrock-long" => {
            return aws_error(
                400,
                "ValidationException",
                "Input is too long for requested model.",
            );
        }
        "bedrock-throttled" => {
            return aws_error(
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            );
        }
        _ => {}
    }
    let text = if body.get("system").is_some() {
        "hello from bedrock with a system prompt"
    } else {
        "hello from bedrock"
    };
    let tool = forced_tool(&body);
    let usage = json!({"inputTokens": 10, "outputTokens": 5, "totalTokens": 15});
    match action.as_str() {
        "converse" => {
            let (content, stop) = match &tool {
                Some(name) => (
                    json!([{"toolUse": {"toolUseId": "tooluse_1", "name": name, "input": {"q": 1}}}]),
                    "tool_use",
                ),
                None => (json!([{"text": text}]), "end_turn"),
            };
            HttpResponse::Ok().json(
                json!({"output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 1}}),
            )
        }
        "converse-stream" => {
            let mut frames = vec![event("messageStart", json!({"role": "assistant"}))];
            let stop = match &tool {
                Some(name) => {
                    frames.push(event(
                        "contentBlockStart",
                        json!({"contentBlockIndex": 0,
                        "start": {"toolUse": {"toolUseId": "tooluse_1", "name": name}}}),
                    ));
                    for piece in ["{\"q\"", ": 1}"] {
                        frames.push(event(
                            "contentBlockDelta",
                            json!({"contentBlockIndex": 0,
                            "delta": {"toolUse": {"input": piece}}}),
                        ));
                    }
                    "tool_use"
                }
                None => {
                    for word in text.split_inclusive(' ') {
                        frames.push(event(
                            "contentBlockDelta",
                            json!({"contentBlockIndex": 0, "delta": {"text": word}}),
                        ));
                    }
                    "end_turn"
                }
            };
            frames.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
            frames.push(event("messageStop", json!({"stopReason": stop})));
            frames.push(event(
                "metadata",
                json!({"usage": usage, "metrics": {"latencyMs": 1}}),
            ));
            let bytes = frames.concat();
            // Pieces of 37 bytes: messages split across reads, as the network may split them.
            let pieces: Vec<Result<Bytes, std::convert::Infallible>> = bytes
                .chunks(37)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            HttpResponse::Ok()
                .content_type("application/vnd.amazon.eventstream")
                .streaming(futures_util::stream::iter(pieces))
        }
        _ => aws_error(404, "UnknownOperationException", "no such operation"),
    }
}
