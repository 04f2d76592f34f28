//! One search of a tenant's documents, shared by `POST /v1/retrieve`, a chat request's
//! `retrieval` option and the workflow `retrieve` node: the query's mode and vector (embedded
//! through the pipeline: billed, tagged `retrieve`), a wait until this node's index has read the
//! log's head (so any node answers what one node would), and the ranked chunks.

use std::time::Duration;

use actix_web::http::StatusCode;
use switchyard_inference::{Pipeline, Principal};
use switchyard_retrieval::{Hit, Mode, Query};
use uuid::Uuid;

use crate::http::ApiError;
use crate::ingest::embed;
use crate::state::Admin;

/// The longest a query waits for this node's index to reach the log's head.
const CATCH_UP: Duration = Duration::from_secs(5);
/// Most chunks one query answers.
pub const MAX_K: usize = 50;
/// Most documents a query's filter names.
pub const MAX_FILTER_DOCUMENTS: usize = 100;
/// The longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 4_096;

/// What to look for.
#[derive(Debug, Clone, Copy)]
pub struct Search<'a> {
    pub text: &'a str,
    pub k: usize,
    /// None: hybrid with an embedding model, keyword without.
    pub mode: Option<Mode>,
    pub documents: Option<&'a [Uuid]>,
}

pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::owned(
        StatusCode::BAD_REQUEST,
        "invalid_request".into(),
        message.into(),
    )
}

/// Refuses a query the index must not run: empty or long text, `k` out of range, a filter of
/// too many documents.
pub fn check(search: &Search<'_>, max_k: usize) -> Result<(), ApiError> {
    let chars = search.text.chars().count();
    if chars > MAX_QUERY_CHARS || search.text.trim().is_empty() {
        return Err(invalid(format!(
            "the query must be 1-{MAX_QUERY_CHARS} characters, not blank"
        )));
    }
    if search.k == 0 || search.k > max_k {
        return Err(invalid(format!("k must be 1-{max_k}")));
    }
    if search
        .documents
        .is_some_and(|ids| ids.len() > MAX_FILTER_DOCUMENTS)
    {
        return Err(invalid(format!(
            "a filter names at most {MAX_FILTER_DOCUMENTS} documents"
        )));
    }
    Ok(())
}

/// The tenant's best chunks for a checked query, and the mode it ran in.
pub async fn search(
    admin: &Admin,
    pipeline: &Pipeline,
    principal: &Principal,
    search: Search<'_>,
) -> Result<(Mode, Vec<Hit>), ApiError> {
    let (mode, vector) = query_vector(pipeline, principal, search.mode, search.text).await?;
    caught_up(admin).await?;
    let hits = admin
        .library
        .search(
            principal.tenant,
            &Query {
                text: search.text,
                vector: vector.as_deref(),
                k: search.k,
                documents: search.documents,
                mode,
            },
        )
        .map_err(|e| invalid(e.to_string()))?;
    Ok((mode, hits))
}

/// The mode a query runs in (asked for, else hybrid with an embedding model and keyword
/// without) and, where it needs one, the query's vector.
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

/// Waits until this node's index has read the log up to its head.
pub async fn caught_up(admin: &Admin) -> Result<(), ApiError> {
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

/// Where a chunk came from, as a source line shows it: `document › heading › subheading`.
pub fn place(hit: &Hit) -> String {
    if hit.heading_path.is_empty() {
        hit.document.clone()
    } else {
        format!("{} › {}", hit.document, hit.heading_path.join(" › "))
    }
}

/// The chunks as numbered sources for a model: an instruction to cite them as `[n]`, then
/// `[n] place` and the chunk's text for each.
pub fn sources(hits: &[Hit]) -> String {
    let mut context = String::from(
        "Answer from the numbered sources below where they help, and cite each source you use as [n].\n",
    );
    for (n, hit) in hits.iter().enumerate() {
        context.push_str(&format!("\n[{}] {}\n{}\n", n + 1, place(hit), hit.text));
    }
    context
}
