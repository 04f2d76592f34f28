//! Documents in: the text out of an upload (a PDF in a child process under time and memory
//! limits), its chunks recorded through the document actor, and its chunks' vectors computed
//! through the pipeline (billed to the uploading key like any embedding) and recorded batch by
//! batch in the background. Every node folds those events into its retrieval library.

use std::process::Stdio;
use std::time::Duration;

use actix_web::http::StatusCode;
use serde_json::{Value, json};
use switchyard_events::{DocumentAdded, DocumentIndexed, Metadata};
use switchyard_inference::config::RetrievalConfig;
use switchyard_inference::openai::EmbeddingsRequest;
use switchyard_inference::{Pipeline, Principal};
use switchyard_retrieval::chunk::{ChunkOptions, chunk};
use switchyard_retrieval::document::{DocumentCommand, DocumentKey, DocumentState, parts};
use switchyard_retrieval::extract::{self, Media};
use switchyard_retrieval::index::quantize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use crate::http::ApiError;
use crate::state::Admin;

/// The text of one `DocumentChunked` event, at most (the log takes up to 1 MiB per event).
const PART_BYTES: usize = 256 * 1024;
/// Chunks embedded per request to the embedding model.
const EMBED_BATCH: usize = 32;
/// The most text a PDF may yield.
const MAX_PDF_TEXT: u64 = 64 << 20;

/// An upload's outcome.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub id: Uuid,
    /// False: these bytes were already the tenant's document; nothing changed.
    pub created: bool,
    pub state: DocumentState,
    pub position: u64,
}

fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::owned(status, code.into(), message.into())
}

fn unsupported(error: switchyard_retrieval::Error) -> ApiError {
    match error {
        switchyard_retrieval::Error::TooLarge(m) => {
            refused(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m)
        }
        other => refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unreadable_document",
            other.to_string(),
        ),
    }
}

/// A document actor's refusal or the log's failure as an HTTP answer.
pub fn actor_error(
    error: switchyard_actors::Error<switchyard_retrieval::document::DocumentRefused>,
) -> ApiError {
    match error {
        switchyard_actors::Error::Rejected(
            switchyard_retrieval::document::DocumentRefused::NotFound,
        ) => refused(StatusCode::NOT_FOUND, "not_found", "no such document"),
        switchyard_actors::Error::Rejected(other) => {
            refused(StatusCode::CONFLICT, "conflict", other.to_string())
        }
        other => {
            tracing::error!(error = %other, "document actor failed");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                other.to_string(),
            )
        }
    }
}

/// The text of a PDF, read by `switchyard extract-pdf` in a child process whose address space
/// is capped (`ulimit -v`) and which is killed after the timeout: a PDF bomb costs a child,
/// never the server.
pub async fn pdf_text(bytes: Vec<u8>, config: &RetrievalConfig) -> Result<String, ApiError> {
    let exe = std::env::current_exe()
        .map_err(|e| refused(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {} && exec \"$0\" extract-pdf",
            config.pdf_memory_mb * 1024
        ))
        .arg(exe)
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| refused(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no pipes",
        ));
    };
    let feed = tokio::spawn(async move {
        let _ = stdin.write_all(&bytes).await;
    });
    let work = async {
        let mut text = Vec::new();
        stdout.take(MAX_PDF_TEXT).read_to_end(&mut text).await?;
        let mut problem = String::new();
        stderr.read_to_string(&mut problem).await?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, text, problem))
    };
    let outcome = tokio::time::timeout(Duration::from_millis(config.pdf_timeout_ms), work).await;
    feed.abort();
    match outcome {
        Err(_) => Err(refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unreadable_document",
            format!(
                "the PDF's text could not be read within {} ms",
                config.pdf_timeout_ms
            ),
        )),
        Ok(Err(e)) => Err(refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )),
        Ok(Ok((status, text, _))) if status.success() => String::from_utf8(text).map_err(|_| {
            refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unreadable_document",
                "the PDF's text is not UTF-8",
            )
        }),
        Ok(Ok((_, _, problem))) => {
            let reason = problem
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("it needed more memory than allowed")
                .trim()
                .trim_start_matches("Error: ")
                .to_owned();
            Err(refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unreadable_document",
                format!("the PDF could not be read: {reason}"),
            ))
        }
    }
}

/// A document fetched from a URL.
#[derive(Debug)]
pub struct Fetched {
    /// Where it came from, after redirects.
    pub url: String,
    /// The last segment of the URL's path (else its host).
    pub name: String,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// The client for document fetches: the tools' address guard, `SWITCHYARD_TOOLS_PUBLIC_ONLY`
/// included (see `crate::egress`).
static FETCHER: std::sync::LazyLock<Result<(reqwest::Client, bool), String>> =
    std::sync::LazyLock::new(|| {
        let public_only = std::env::var("SWITCHYARD_TOOLS_PUBLIC_ONLY").is_ok_and(|v| v == "1");
        crate::egress::fetch_client(public_only)
            .map(|client| (client, public_only))
            .map_err(|e| e.to_string())
    });

/// Fetches a document from `url` under the address guard, within `[retrieval]
/// fetch_timeout_ms` and `max_document_bytes`.
pub async fn fetch(url: &str, config: &RetrievalConfig) -> Result<Fetched, ApiError> {
    use crate::egress::Refusal;
    let (client, public_only) = FETCHER
        .as_ref()
        .map_err(|e| refused(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.clone()))?;
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        refused(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("url: {e}"),
        )
    })?;
    let limit = config.max_document_bytes;
    let work = async {
        // The names' lookup counts against the time limit too.
        crate::egress::check_url(&parsed, *public_only)
            .await
            .map_err(|refusal| match refusal {
                Refusal::Url(m) => refused(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("url: {m}"),
                ),
                Refusal::Address(m) => refused(
                    StatusCode::FORBIDDEN,
                    "url_refused",
                    format!("{m}, which document fetches may not reach"),
                ),
                Refusal::Lookup(m) => refused(StatusCode::BAD_GATEWAY, "fetch_failed", m),
            })?;
        let mut response = client.get(parsed.clone()).send().await.map_err(|e| {
            // The resolver's and the redirect policy's refusals arrive as send errors.
            refused(
                StatusCode::BAD_GATEWAY,
                "fetch_failed",
                format!("{url}: {}", error_chain(&e)),
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(refused(
                StatusCode::BAD_GATEWAY,
                "fetch_failed",
                format!("{url} answered {status}"),
            ));
        }
        let too_large = || {
            refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the document at {url} is over {limit} bytes ([retrieval] max_document_bytes)"
                ),
            )
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let url = response.url().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            refused(
                StatusCode::BAD_GATEWAY,
                "fetch_failed",
                format!("{url}: {}", error_chain(&e)),
            )
        })? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        let name = url
            .path_segments()
            .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
            .map(percent_decoded)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| url.host_str().unwrap_or("document").to_owned());
        Ok(Fetched {
            url: url.to_string(),
            name,
            content_type,
            bytes,
        })
    };
    match tokio::time::timeout(Duration::from_millis(config.fetch_timeout_ms), work).await {
        Ok(result) => result,
        Err(_) => Err(refused(
            StatusCode::GATEWAY_TIMEOUT,
            "fetch_timeout",
            format!(
                "{url} did not arrive within {} ms ([retrieval] fetch_timeout_ms)",
                config.fetch_timeout_ms
            ),
        )),
    }
}

/// A URL path segment as a document's name: percent-decoded (lossy where not UTF-8), without
/// control characters, at most 256 characters.
fn percent_decoded(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .chars()
        .filter(|c| !c.is_control())
        .take(256)
        .collect()
}

/// An error and its causes, one line (reqwest hides the cause, e.g. a refused address).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Takes one upload: its text, its chunks, the document's events; the vectors follow in the
/// background when an embedding model is configured.
pub async fn ingest(
    admin: &Admin,
    pipeline: &actix_web::web::Data<Pipeline>,
    principal: &Principal,
    name: String,
    source: String,
    media: Media,
    bytes: Vec<u8>,
) -> Result<Ingested, ApiError> {
    let config = pipeline.config.retrieval.clone();
    let (key, content_hash) = DocumentKey::of(principal.tenant, &bytes);
    let (current, _) = admin.documents.read(&key).await.map_err(actor_error)?;
    let vectors_expected = config.embedding_model.is_some();
    // Complete: these bytes are this document already. A live document whose chunks or
    // vectors were cut short (a node died, the embedding failed) is resumed from where it
    // stopped: the text and chunks come out the same, and the actor skips the parts and
    // vectors it holds.
    if current.live() && current.status(vectors_expected) == "ready" {
        return Ok(Ingested {
            id: key.id,
            created: false,
            state: current,
            position: 0,
        });
    }
    let size = bytes.len() as u64;
    let text = match media {
        Media::Pdf => pdf_text(bytes, &config).await?,
        _ => tokio::task::spawn_blocking(move || extract::text(media, &bytes))
            .await
            .map_err(|e| refused(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
            .map_err(unsupported)?,
    };
    let options = ChunkOptions {
        target_tokens: config.chunk_tokens as usize,
        overlap_tokens: config.overlap_tokens as usize,
        ..ChunkOptions::default()
    };
    let characters = text.chars().count() as u64;
    let chunks = tokio::task::spawn_blocking(move || chunk(&text, options))
        .await
        .map_err(|e| refused(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(unsupported)?;
    let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
    let metadata = Metadata::default();
    if !current.live() {
        admin
            .documents
            .send(
                &key,
                DocumentCommand::Add(DocumentAdded {
                    name,
                    media_type: media.as_str().into(),
                    bytes: size,
                    content_hash,
                    source,
                    characters,
                }),
                metadata.clone(),
            )
            .await
            .map_err(actor_error)?;
    }
    let mut applied = None;
    for part in parts(chunks, PART_BYTES) {
        applied = Some(
            admin
                .documents
                .send(&key, DocumentCommand::Chunk(part), metadata.clone())
                .await
                .map_err(actor_error)?,
        );
    }
    let Some(applied) = applied else {
        return Err(refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unreadable_document",
            "the document has no text",
        ));
    };
    tracing::info!(tenant = %principal.tenant, document = %key.id, chunks = applied.state.chunks, resumed = current.live(), "document chunked");
    if let Some(model) = config.embedding_model.clone() {
        let from = applied.state.vectors as usize;
        let (documents, pipeline, principal) =
            (admin.documents.clone(), pipeline.clone(), principal.clone());
        tokio::spawn(async move {
            embed_chunks(&documents, &pipeline, &principal, key, &model, &texts, from).await;
        });
    }
    Ok(Ingested {
        id: key.id,
        created: !current.live(),
        position: applied.last_position.map_or(0, |p| p.0),
        state: applied.state,
    })
}

/// Embeds `texts[from..]` (a document's chunks, in order) and records their vectors batch by
/// batch.
async fn embed_chunks(
    documents: &switchyard_actors::Runtime<switchyard_retrieval::document::Document>,
    pipeline: &Pipeline,
    principal: &Principal,
    key: DocumentKey,
    model: &str,
    texts: &[String],
    from: usize,
) {
    for (batch, inputs) in texts[from.min(texts.len())..]
        .chunks(EMBED_BATCH)
        .enumerate()
    {
        let vectors = match embed(pipeline, principal, model, inputs, "ingest").await {
            Ok(vectors) => vectors,
            Err(error) => {
                tracing::warn!(%error, document = %key.id, "chunks not embedded: the document is searched by keyword only");
                return;
            }
        };
        let command = DocumentCommand::Index(DocumentIndexed {
            model: model.to_owned(),
            dimensions: u32::try_from(vectors.first().map_or(0, Vec::len)).unwrap_or(0),
            first: u32::try_from(from + batch * EMBED_BATCH).unwrap_or(u32::MAX),
            vectors: vectors.iter().map(|v| quantize(v)).collect(),
        });
        if let Err(error) = documents.send(&key, command, Metadata::default()).await {
            tracing::warn!(%error, document = %key.id, "vectors not recorded");
            return;
        }
    }
    tracing::info!(document = %key.id, chunks = texts.len(), "document indexed");
}

/// Embeddings of `inputs` through the pipeline (limits, budget, billing, the inference logged
/// with the tag `tag`).
pub async fn embed(
    pipeline: &Pipeline,
    principal: &Principal,
    model: &str,
    inputs: &[String],
    tag: &str,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let request = EmbeddingsRequest {
        model: model.to_owned(),
        input: json!(inputs),
        encoding_format: None,
        dimensions: None,
        user: None,
        metadata: Some(json!({"tags": [tag]})),
    };
    let done = pipeline
        .embed(None, principal, &request)
        .await
        .map_err(ApiError::from)?;
    let data = done.body["data"].as_array().cloned().unwrap_or_default();
    let vectors: Vec<Vec<f32>> = data
        .iter()
        .map(|item| {
            item["embedding"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter_map(Value::as_f64)
                        .map(|x| x as f32)
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    if vectors.len() != inputs.len() || vectors.iter().any(Vec::is_empty) {
        return Err(refused(
            StatusCode::BAD_GATEWAY,
            "bad_embeddings",
            format!("the embedding model {model} answered no usable vectors"),
        ));
    }
    Ok(vectors)
}
