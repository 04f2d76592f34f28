//! Ingestion and retrieval over HTTP (scope `retrieval`).
//!
//! - `POST /v1/documents?name=N` takes a document as the raw body (`Content-Type` text/plain,
//!   text/markdown, text/html or application/pdf; else the name's extension or the bytes
//!   decide), up to `[retrieval] max_document_bytes` (413 past it, before the rest is read).
//!   The same bytes again are the same document: 200 and nothing changes. A new one is 201
//!   with its id and chunks; its vectors follow in the background (`GET` shows `indexing`
//!   until they are all recorded, then `ready`).
//! - `GET /v1/documents`, `GET /v1/documents/{id}`, `DELETE /v1/documents/{id}` (every chunk,
//!   index entry and vector of it goes, on every node as it reads the log).
//! - `POST /v1/retrieve {query, k, mode, filters}` answers the tenant's best chunks with their
//!   scores, document, byte range and heading path. It first waits until this node's index has
//!   read the log up to its head, so any node answers what one node would.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::json;
use switchyard_events::{Metadata, Scope, StreamId};
use switchyard_inference::{Pipeline, Principal};
use switchyard_retrieval::document::{DocumentCommand, DocumentKey};
use switchyard_retrieval::extract::Media;
use switchyard_retrieval::{Mode, Query};
use uuid::Uuid;

use crate::http::{ApiError, ErrorBody, parse_json, parse_query, scoped_request};
use crate::ingest::{actor_error, embed, ingest};
use crate::state::Admin;

/// The scope a key needs for documents and retrieval (a key with no scopes may do anything).
pub const SCOPE: &str = "retrieval";
/// The longest a query waits for this node's index to reach the log's head.
const CATCH_UP: Duration = Duration::from_secs(5);
/// Most chunks one query answers.
const MAX_K: usize = 50;
/// Most documents a query's filter names.
const MAX_FILTER_DOCUMENTS: usize = 100;

fn check_filter(ids: Option<&Vec<Uuid>>) -> Result<(), ApiError> {
    if ids.is_some_and(|ids| ids.len() > MAX_FILTER_DOCUMENTS) {
        return Err(invalid(format!(
            "a filter names at most {MAX_FILTER_DOCUMENTS} documents"
        )));
    }
    Ok(())
}

crate::api::endpoints! {
    post "/v1/documents" => upload,
    get "/v1/documents" => list,
    get "/v1/documents/{id}" => show,
    delete "/v1/documents/{id}" => remove,
    post "/v1/retrieve" => retrieve,
}

async fn principal(req: &HttpRequest, admin: &Admin) -> Result<Principal, ApiError> {
    scoped_request(req, admin, &[SCOPE]).await.map(|(p, _)| p)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::owned(
        StatusCode::BAD_REQUEST,
        "invalid_request".into(),
        message.into(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// The document's name (default `document`).
    name: Option<String>,
}

/// Reads the body, refusing it (413) as soon as it is over `limit`.
async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: u64,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::owned(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large".into(),
            format!("a document is at most {limit} bytes ([retrieval] max_document_bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|d| d > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| invalid(format!("the body could not be read: {e}")))?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Adds a document (raw body). 201 with its id and chunks; 200 when these bytes already are
/// the tenant's document.
#[utoipa::path(post, path = "/v1/documents", tag = "retrieval",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"),
        ("name" = Option<String>, Query, description = "the document's name (1-256 characters)")),
    request_body(content = String, description = "the document: text, Markdown, HTML or PDF", content_type = "application/octet-stream"),
    responses((status = 201, description = "id, name, status, chunks, position"),
        (status = 200, description = "the same bytes were added before: nothing changed"),
        (status = 400, description = "a bad name", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `retrieval` scope", body = ErrorBody),
        (status = 413, description = "over [retrieval] max_document_bytes, or too many chunks", body = ErrorBody),
        (status = 415, description = "a media type that is not text, Markdown, HTML or PDF", body = ErrorBody),
        (status = 422, description = "empty, not UTF-8, no text, or a PDF that cannot be read within the limits", body = ErrorBody)))]
pub(crate) async fn upload(
    req: HttpRequest,
    payload: web::Payload,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    let query: UploadQuery = parse_query(&req)?;
    let name = query.name.unwrap_or_else(|| "document".into());
    if name.is_empty() || name.chars().count() > 256 || name.chars().any(char::is_control) {
        return Err(invalid(
            "name must be 1-256 characters without control characters",
        ));
    }
    let limit = pipeline.config.retrieval.max_document_bytes;
    let bytes = read_limited(&req, payload, limit).await?;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let media = Media::detect(declared, &name, &bytes).map_err(|e| {
        ApiError::owned(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type".into(),
            e.to_string(),
        )
    })?;
    let done = ingest(&admin, &pipeline, &principal, name, media, bytes).await?;
    let vectors_expected = pipeline.config.retrieval.embedding_model.is_some();
    let added = done.state.added.as_ref();
    let body = json!({
        "id": done.id,
        "name": added.map(|a| &a.name),
        "media_type": added.map(|a| &a.media_type),
        "status": done.state.status(vectors_expected),
        "chunks": done.state.chunks,
        "created": done.created,
        "position": done.position,
    });
    Ok(if done.created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// The tenant's document `id`, or 404 (another tenant's id is not found either).
async fn owned(admin: &Admin, principal: &Principal, id: &str) -> Result<DocumentKey, ApiError> {
    let missing = || {
        ApiError::owned(
            StatusCode::NOT_FOUND,
            "not_found".into(),
            "no such document".into(),
        )
    };
    let id: Uuid = id.parse().map_err(|_| missing())?;
    let stream = StreamId::parse(format!("document-{id}")).map_err(|_| missing())?;
    let metadata = admin
        .store
        .stream_metadata(Scope::Tenant(principal.tenant), &stream)
        .await
        .map_err(|e| {
            ApiError::owned(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable".into(),
                e.to_string(),
            )
        })?;
    if metadata.is_none() {
        return Err(missing());
    }
    Ok(DocumentKey {
        tenant: principal.tenant,
        id,
    })
}

/// Where one document's ingestion stands.
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "retrieval",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"), ("id" = String, Path, description = "the document's id")),
    responses((status = 200, description = "id, name, media_type, bytes, status (chunking, indexing, ready, deleted), chunks, vectors"),
        (status = 404, description = "no such document", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `retrieval` scope", body = ErrorBody)))]
pub(crate) async fn show(
    req: HttpRequest,
    path: web::Path<String>,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    let key = owned(&admin, &principal, &path).await?;
    let (state, _) = admin.documents.read(&key).await.map_err(actor_error)?;
    let added = state.added.as_ref();
    Ok(HttpResponse::Ok().json(json!({
        "id": key.id,
        "name": added.map(|a| &a.name),
        "media_type": added.map(|a| &a.media_type),
        "bytes": added.map(|a| a.bytes),
        "content_hash": added.map(|a| &a.content_hash),
        "status": state.status(pipeline.config.retrieval.embedding_model.is_some()),
        "chunks": state.chunks,
        "vectors": state.vectors,
        "model": state.model,
    })))
}

/// The tenant's documents (as this node's index holds them, once it read the log's head).
#[utoipa::path(get, path = "/v1/documents", tag = "retrieval",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    responses((status = 200, description = "{data: [{id, name, media_type, bytes, chunks, vectors}]}"),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `retrieval` scope", body = ErrorBody),
        (status = 503, description = "this node's index did not catch up with the log in time", body = ErrorBody)))]
pub(crate) async fn list(
    req: HttpRequest,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    caught_up(&admin).await?;
    Ok(HttpResponse::Ok()
        .json(json!({"object": "list", "data": admin.library.documents(principal.tenant)})))
}

/// Deletes a document: every chunk, index entry and vector of it.
#[utoipa::path(delete, path = "/v1/documents/{id}", tag = "retrieval",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"), ("id" = String, Path, description = "the document's id")),
    responses((status = 200, description = "id, deleted, position"),
        (status = 404, description = "no such document (or already deleted)", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `retrieval` scope", body = ErrorBody)))]
pub(crate) async fn remove(
    req: HttpRequest,
    path: web::Path<String>,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    let key = owned(&admin, &principal, &path).await?;
    let applied = admin
        .documents
        .send(
            &key,
            DocumentCommand::Delete {
                reason: "deleted by the tenant".into(),
            },
            Metadata::default(),
        )
        .await
        .map_err(actor_error)?;
    tracing::info!(tenant = %principal.tenant, document = %key.id, "document deleted");
    Ok(HttpResponse::Ok().json(json!({
        "id": key.id,
        "deleted": true,
        "position": applied.last_position.map_or(0, |p| p.0),
    })))
}

/// Waits until this node's index has read the log up to its head.
async fn caught_up(admin: &Admin) -> Result<(), ApiError> {
    let head = admin.store.head().await.map_err(|e| {
        ApiError::owned(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable".into(),
            e.to_string(),
        )
    })?;
    if admin.library.wait_for(head, CATCH_UP).await {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node's retrieval index is behind the log; retry",
        ))
    }
}

/// `POST /v1/retrieve`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retrieve {
    /// What to look for (1-4,096 characters).
    query: String,
    /// How many chunks (1-50, default 5).
    #[serde(default = "default_k")]
    k: usize,
    /// `hybrid` (the default with an embedding model), `keyword` (BM25; the default without
    /// one) or `vector`.
    #[schema(value_type = Option<String>)]
    mode: Option<Mode>,
    #[serde(default)]
    filters: Option<Filters>,
}

/// Which chunks a query may answer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Filters {
    /// Only these documents (at most 100).
    #[serde(default)]
    document_ids: Option<Vec<Uuid>>,
}

fn default_k() -> usize {
    5
}

/// The tenant's best chunks for a query, with scores and where each came from.
#[utoipa::path(post, path = "/v1/retrieve", tag = "retrieval",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>")),
    request_body = Retrieve,
    responses((status = 200, description = "{mode, data: [{document_id, document, chunk, text, start, end, heading_path, score, keyword_rank, vector_rank}]}"),
        (status = 400, description = "an empty or long query, k out of 1-50, or a mode that needs an embedding model", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `retrieval` scope", body = ErrorBody),
        (status = 503, description = "this node's index did not catch up with the log in time", body = ErrorBody)))]
pub(crate) async fn retrieve(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    let request: Retrieve = parse_json(&body)?;
    let chars = request.query.chars().count();
    if chars == 0 || chars > 4_096 || request.query.trim().is_empty() {
        return Err(invalid("query must be 1-4096 characters"));
    }
    if request.k == 0 || request.k > MAX_K {
        return Err(invalid(format!("k must be 1-{MAX_K}")));
    }
    let (mode, vector) = query_vector(&pipeline, &principal, request.mode, &request.query).await?;
    caught_up(&admin).await?;
    let documents = request.filters.and_then(|f| f.document_ids);
    check_filter(documents.as_ref())?;
    let hits = admin
        .library
        .search(
            principal.tenant,
            &Query {
                text: &request.query,
                vector: vector.as_deref(),
                k: request.k,
                documents: documents.as_deref(),
                mode,
            },
        )
        .map_err(|e| invalid(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({"object": "list", "mode": mode, "data": hits})))
}

/// The mode a query runs in (asked for, else hybrid with an embedding model and keyword
/// without) and, where it needs one, the query's vector (embedded through the pipeline: billed,
/// tagged `retrieve`).
async fn query_vector(
    pipeline: &Pipeline,
    principal: &Principal,
    asked: Option<Mode>,
    query: &str,
) -> Result<(Mode, Option<Vec<f32>>), ApiError> {
    let model = pipeline.config.retrieval.embedding_model.as_deref();
    let mode = asked.unwrap_or(if model.is_some() {
        Mode::Hybrid
    } else {
        Mode::Keyword
    });
    let vector = match (mode, model) {
        (Mode::Keyword, _) => None,
        (_, None) => {
            return Err(invalid(
                "modes hybrid and vector need [retrieval] embedding_model; use mode keyword",
            ));
        }
        (_, Some(model)) => Some(
            embed(pipeline, principal, model, &[query.to_owned()], "retrieve")
                .await?
                .remove(0),
        ),
    };
    Ok((mode, vector))
}

/// The header that lists the chunks a chat request's retrieval put before its messages.
pub(crate) const CONTEXT_HEADER: &str = "x-switchyard-context";
/// Most chunks a chat request's retrieval adds.
const MAX_CHAT_K: usize = 8;
/// The platform flag that gates retrieval in chat (undefined: on).
const CHAT_FLAG: &str = "retrieval-in-chat";

/// A chat request's `retrieval` option.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatRetrieval {
    #[serde(default = "default_chat_k")]
    k: usize,
    mode: Option<Mode>,
    document_ids: Option<Vec<Uuid>>,
    query: Option<String>,
}

fn default_chat_k() -> usize {
    4
}

/// A chat request's `retrieval`: the tenant's best chunks for the query (the last user message
/// unless given) go before the messages as one system message of numbered sources, and each
/// chunk used is logged with the inference as the tag `ctx:<document id>:<chunk>`. The flag
/// `retrieval-in-chat`, where defined and off for this request, leaves the request as it is
/// and logs `flag:retrieval-in-chat:off`. Answers the chunks used (`<document id>:<chunk>`).
pub(crate) async fn apply_retrieval(
    request: &mut switchyard_inference::openai::ChatRequest,
    principal: &Principal,
    admin: &Admin,
    pipeline: &Pipeline,
) -> Result<Option<Vec<String>>, ApiError> {
    use switchyard_inference::openai::{Message, Role};
    let Some(option) = request.retrieval.take() else {
        return Ok(None);
    };
    let option: ChatRetrieval =
        serde_json::from_value(option).map_err(|e| invalid(format!("retrieval: {e}")))?;
    if option.k == 0 || option.k > MAX_CHAT_K {
        return Err(invalid(format!("retrieval.k must be 1-{MAX_CHAT_K}")));
    }
    check_filter(option.document_ids.as_ref())?;
    if let Some(decision) = switchyard_inference::admission::flag(
        pipeline.accounts.as_ref(),
        CHAT_FLAG,
        principal,
        request.user.as_deref(),
    ) && !decision.on
    {
        crate::http::add_tag(&mut request.metadata, format!("flag:{CHAT_FLAG}:off"));
        return Ok(Some(Vec::new()));
    }
    let query = match option.query {
        Some(query) => query,
        None => request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.text())
            .unwrap_or_default(),
    };
    if query.trim().is_empty() || query.chars().count() > 4_096 {
        return Err(invalid(
            "retrieval needs a query of 1-4096 characters (retrieval.query, or a user message)",
        ));
    }
    let (mode, vector) = query_vector(pipeline, principal, option.mode, &query).await?;
    caught_up(admin).await?;
    let hits = admin
        .library
        .search(
            principal.tenant,
            &Query {
                text: &query,
                vector: vector.as_deref(),
                k: option.k,
                documents: option.document_ids.as_deref(),
                mode,
            },
        )
        .map_err(|e| invalid(e.to_string()))?;
    if hits.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let mut context = String::from(
        "Answer from the numbered sources below where they help, and cite each source you use as [n].\n",
    );
    let mut used = Vec::with_capacity(hits.len());
    for (n, hit) in hits.iter().enumerate() {
        let place = if hit.heading_path.is_empty() {
            hit.document.clone()
        } else {
            format!("{} › {}", hit.document, hit.heading_path.join(" › "))
        };
        context.push_str(&format!("\n[{}] {place}\n{}\n", n + 1, hit.text));
        let id = format!("{}:{}", hit.document_id, hit.chunk);
        crate::http::add_tag(&mut request.metadata, format!("ctx:{id}"));
        used.push(id);
    }
    request.messages.insert(
        0,
        Message {
            role: Role::System,
            content: Some(serde_json::Value::String(context)),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            function_call: None,
            refusal: None,
        },
    );
    tracing::debug!(tenant = %principal.tenant, chunks = used.len(), "retrieved context added");
    Ok(Some(used))
}
