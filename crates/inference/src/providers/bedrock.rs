//! AWS Bedrock's Converse API behind the OpenAI shape: `POST /model/{modelId}/converse` for a
//! whole answer, `/converse-stream` for a stream of event-stream messages
//! ([`stream::EventStream`]), each request signed with SigV4 (`aws-sigv4`, service `bedrock`)
//! from the standard AWS credentials, or sent with a Bedrock API key as a bearer token when
//! `api_key_env`/`api_key_file` names one. The request and answer mapping is in [`converse`].
//!
//! Errors: Bedrock names them in `x-amzn-ErrorType` and a JSON `message`. Throttling (429) and
//! service errors (5xx) are retried; a model's own error (424) and its timeout (408) too; a
//! prompt over the model's window ("Input is too long") is `context_length_exceeded`, so the
//! fallback is tried.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::dialect::segment;
use super::framed::relay_framed;
use super::http::Endpoint;
use super::openai_compat::{refusal, send_within};
use super::{ChunkStream, Completion, Embeddings, Provider, ProviderError};
use crate::config::{ModelConfig, ProviderConfig};
use crate::openai::ChatRequest;

pub mod converse;
pub mod stream;

/// How requests are authorized.
enum Auth {
    /// A Bedrock API key (`Authorization: Bearer`).
    Bearer,
    /// SigV4 with these credentials.
    SigV4(Identity),
}

/// One Bedrock runtime endpoint in one region.
pub struct Bedrock {
    http: Endpoint,
    region: String,
    auth: Auth,
}

impl std::fmt::Debug for Bedrock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bedrock")
            .field("base_url", &self.http.base_url)
            .field("region", &self.region)
            .field("sigv4", &matches!(self.auth, Auth::SigV4(_)))
            .finish()
    }
}

/// The credentials of the standard AWS environment variables.
fn environment_credentials(provider: &str) -> crate::Result<Credentials> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) else {
        return Err(crate::Error::Config(format!(
            "provider {provider} (bedrock) needs credentials: AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or a Bedrock API \
             key through api_key_env or api_key_file"
        )));
    };
    Ok(Credentials::new(
        id,
        secret,
        var("AWS_SESSION_TOKEN"),
        None,
        "environment",
    ))
}

impl Bedrock {
    pub fn new(config: &ProviderConfig) -> crate::Result<Self> {
        let region = config.region.clone().ok_or_else(|| {
            crate::Error::Config(format!("provider {} needs a region", config.name))
        })?;
        let mut config = config.clone();
        config
            .base_url
            .get_or_insert_with(|| format!("https://bedrock-runtime.{region}.amazonaws.com"));
        let http = Endpoint::new(&config)?;
        let auth = match http.api_key {
            Some(_) => Auth::Bearer,
            None => Auth::SigV4(environment_credentials(&config.name)?.into()),
        };
        Ok(Bedrock { http, region, auth })
    }

    /// The headers that sign a POST of `body` to `url` at `time`.
    pub fn signature(
        identity: &Identity,
        region: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, ProviderError> {
        let failed = |e: &dyn std::fmt::Display| {
            ProviderError::fatal("internal", 500, format!("cannot sign the request: {e}"))
        };
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(identity)
            .region(region)
            .name("bedrock")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let request = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(request, &params).map_err(|e| failed(&e))?.into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }

    async fn send(
        &self,
        model: &ModelConfig,
        action: &str,
        body: &Value,
    ) -> Result<reqwest::Response, ProviderError> {
        let url = format!(
            "{}/model/{}/{action}",
            self.http.base_url,
            segment(model.upstream_name())
        );
        let body = serde_json::to_vec(body)
            .map_err(|e| ProviderError::fatal("internal", 500, e.to_string()))?;
        let accept = if action == "converse-stream" {
            "application/vnd.amazon.eventstream"
        } else {
            "application/json"
        };
        let headers = [("content-type", "application/json"), ("accept", accept)];
        let mut request = self.http.client.post(&url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request = match (&self.auth, &self.http.api_key) {
            (Auth::Bearer, Some(key)) => request.bearer_auth(key),
            (Auth::SigV4(identity), _) => {
                let signed = Self::signature(
                    identity,
                    &self.region,
                    &url,
                    &headers,
                    &body,
                    SystemTime::now(),
                )?;
                signed
                    .into_iter()
                    .fold(request, |r, (name, value)| r.header(name, value))
            }
            (Auth::Bearer, None) => request,
        };
        let response = send_within(request.body(body), self.http.first_token_timeout)
            .await
            .map_err(|e| e.redact(self.http.api_key.as_deref()))?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(response);
        }
        let kind = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(':').next())
            .unwrap_or_default()
            .to_owned();
        let error = refusal(response, self.http.timeout)
            .await
            .redact(self.http.api_key.as_deref());
        Err(match status {
            408 => ProviderError::timeout(format!("{kind}: {}", error.message)),
            424 => ProviderError::retryable(
                "upstream_unavailable",
                format!("{kind}: {}", error.message),
            ),
            _ => error,
        })
    }
}

impl Provider for Bedrock {
    fn chat<'a>(
        &'a self,
        model: &'a ModelConfig,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let (body, structured) = converse::request_body(request)?;
            let response = self.send(model, "converse", &body).await?;
            let value = self.http.json(response).await?;
            let choice = converse::choice(&value, structured)?;
            let usage =
                converse::usage(&value).ok_or_else(|| super::http::malformed("no usage"))?;
            Ok(Completion {
                choices: vec![choice],
                usage,
            })
        })
    }

    fn chat_stream<'a>(
        &'a self,
        model: &'a ModelConfig,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            let (body, structured) = converse::request_body(request)?;
            let response = self.send(model, "converse-stream", &body).await?;
            let mut mapper = stream::StreamMapper::new(structured);
            Ok(relay_framed(
                &self.http,
                response,
                stream::EventStream,
                move |message| mapper.step(message),
            ))
        })
    }

    fn embed<'a>(
        &'a self,
        _model: &'a ModelConfig,
        _inputs: &'a [String],
        _dimensions: Option<u32>,
    ) -> BoxFuture<'a, Result<Embeddings, ProviderError>> {
        Box::pin(async {
            Err(converse::rejected(
                "this Bedrock adapter serves chat through Converse, not embeddings",
            ))
        })
    }
}

#[cfg(test)]
mod tests;
