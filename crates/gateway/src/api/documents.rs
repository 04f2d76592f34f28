//! Ingestion and retrieval over HTTP (scope `retrieval`).
//!
//! - `POST /v1/documents?name=N` takes a document as the raw body (`Content-Type` text/plain,
//!   text/markdown, text/html or application/pdf; else the name's extension or the bytes
//!   decide), as a multipart upload, or as a URL to fetch (`crate::api::uploads`), up to
//!   `[retrieval] max_document_bytes` (413 past it, before the rest is read).
//!   The same bytes again are the same document: 200 and nothing changes. A new one is 201
//!   with its id and chunks; its vectors follow in the background (`GET` shows `indexing`
//!   until they are all recorded, then `ready`).
//! - `GET /v1/documents`, `GET /v1/documents/{id}`, `DELETE /v1/documents/{id}` (every chunk,
//!   index entry and vector of it goes, on every node as it reads the log).
//! - `POST /v1/retrieve {query, k, mode, filters}` answers the tenant's best chunks with their
//!   scores, document, byte range and heading path. It first waits until this node's index has
//!   read the log up to its head, so any node answers what one node would.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use switchyard_events::{Metadata, Scope, StreamId};
use switchyard_inference::{Pipeline, Principal};
use switchyard_retrieval::Mode;
use switchyard_retrieval::document::{DocumentCommand, DocumentKey};
use switchyard_retrieval::extract::Media;
use uuid::Uuid;

use crate::http::{ApiError, ErrorBody, parse_json, parse_query, scoped_request};
use crate::ingest::{actor_error, ingest};
use crate::search::{MAX_K, Search, caught_up, check, invalid, search, sources};
use crate::state::Admin;

/// The scope a key needs for documents and retrieval (a key with no scopes may do anything).
pub const SCOPE: &str = "retrieval";
/// Most chunks a chat request's retrieval adds.
const MAX_CHAT_K: usize = 8;

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// The document's name (default `document`).
    name: Option<String>,
}

/// Adds a document: the raw body, a multipart upload (field `file`, optional `name`), or
/// `{"url", "name"}` (`application/json`) to fetch. 201 with its id and chunks; 200 when these
/// bytes already are the tenant's document.
#[utoipa::path(post, path = "/v1/documents", tag = "retrieval",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"),
        ("name" = Option<String>, Query, description = "the document's name (1-256 characters; before the body's)")),
    request_body(content = String, description = "the document (text, Markdown, HTML or PDF) as the raw body; or multipart/form-data with a `file` field and an optional `name`; or application/json {\"url\": \"https://...\", \"name\": \"...\"} to fetch it (through the tools' address guard)", content_type = "application/octet-stream"),
    responses((status = 201, description = "id, name, status, chunks, position"),
        (status = 200, description = "the same bytes were added before: nothing changed"),
        (status = 400, description = "a bad name", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `retrieval` scope", body = ErrorBody),
        (status = 403, description = "the URL's host is an address document fetches may not reach (`url_refused`)", body = ErrorBody),
        (status = 413, description = "over [retrieval] max_document_bytes, or too many chunks", body = ErrorBody),
        (status = 415, description = "a media type that is not text, Markdown, HTML or PDF", body = ErrorBody),
        (status = 422, description = "empty, not UTF-8, no text, or a PDF that cannot be read within the limits", body = ErrorBody),
        (status = 502, description = "the URL could not be fetched (`fetch_failed`)", body = ErrorBody),
        (status = 504, description = "the URL's document did not arrive within [retrieval] fetch_timeout_ms", body = ErrorBody)))]
pub(crate) async fn upload(
    req: HttpRequest,
    payload: web::Payload,
    admin: web::Data<Admin>,
    pipeline: web::Data<Pipeline>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req, &admin).await?;
    let query: UploadQuery = parse_query(&req)?;
    let upload = super::uploads::read(&req, payload, &pipeline.config.retrieval).await?;
    let name = query
        .name
        .or(upload.name)
        .unwrap_or_else(|| "document".into());
    if name.is_empty() || name.chars().count() > 256 || name.chars().any(char::is_control) {
        return Err(invalid(
            "name must be 1-256 characters without control characters",
        ));
    }
    let media = Media::detect(upload.declared.as_deref(), &name, &upload.bytes).map_err(|e| {
        ApiError::owned(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type".into(),
            e.to_string(),
        )
    })?;
    let source = upload.source;
    let done = ingest(
        &admin,
        &pipeline,
        &principal,
        name,
        source,
        media,
        upload.bytes,
    )
    .await?;
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
    responses((status = 200, description = "id, name, media_type, bytes, source (`upload`, `file` or the URL), status (chunking, indexing, ready, deleted), chunks, vectors"),
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
        "source": added.map(|a| &a.source),
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
    let documents = request.filters.and_then(|f| f.document_ids);
    let query = Search {
        text: &request.query,
        k: request.k,
        mode: request.mode,
        documents: documents.as_deref(),
    };
    check(&query, MAX_K)?;
    let (mode, hits) = search(&admin, &pipeline, &principal, query).await?;
    Ok(HttpResponse::Ok().json(json!({"object": "list", "mode": mode, "data": hits})))
}

/// The header that lists the chunks a chat request's retrieval put before its messages.
pub(crate) const CONTEXT_HEADER: &str = "x-switchyard-context";
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
    // A bad option is refused whether or not the flag lets retrieval run.
    if option.k == 0 || option.k > MAX_CHAT_K {
        return Err(invalid(format!("retrieval.k must be 1-{MAX_CHAT_K}")));
    }
    if option
        .document_ids
        .as_ref()
        .is_some_and(|ids| ids.len() > crate::search::MAX_FILTER_DOCUMENTS)
    {
        return Err(invalid(format!(
            "retrieval.document_ids names at most {} documents",
            crate::search::MAX_FILTER_DOCUMENTS
        )));
    }
    if let Some(query) = &option.query
        && (query.trim().is_empty() || query.chars().count() > crate::search::MAX_QUERY_CHARS)
    {
        return Err(invalid(format!(
            "retrieval.query must be 1-{} characters, not blank",
            crate::search::MAX_QUERY_CHARS
        )));
    }
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
    let text = match option.query {
        Some(query) => query,
        None => request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.text())
            .unwrap_or_default(),
    };
    let query = Search {
        text: &text,
        k: option.k,
        mode: option.mode,
        documents: option.document_ids.as_deref(),
    };
    check(&query, MAX_CHAT_K).map_err(|e| invalid(format!("retrieval: {}", e.message())))?;
    let (_, hits) = search(admin, pipeline, principal, query).await?;
    if hits.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let mut used = Vec::with_capacity(hits.len());
    for hit in &hits {
        let id = format!("{}:{}", hit.document_id, hit.chunk);
        crate::http::add_tag(&mut request.metadata, format!("ctx:{id}"));
        used.push(id);
    }
    request.messages.insert(
        0,
        Message {
            role: Role::System,
            content: Some(serde_json::Value::String(sources(&hits))),
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
