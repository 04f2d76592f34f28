//! Signed registries over HTTP.
//!
//! - `POST /v1/registry/manifests` publishes a manifest file (what `switchyard registry sign`
//!   writes: the canonical JSON of `{manifest, signature}`): a tool, a workflow, a fragment or a
//!   prompt at the version it names. The signature is checked against this environment's
//!   trusted keys (`[registry]` in the config); an unsigned manifest is taken only where neither
//!   the environment nor the tenant (setting `require_signatures`) requires signatures. Each
//!   refusal has its own code: `unsigned_manifest`, `bad_signature`, `unknown_key`,
//!   `revoked_key`, `expired_key`, `expired_manifest`, `unsupported_algorithm` (403), and
//!   `invalid_manifest`, `not_canonical` (400). A published version never changes (409).
//! - `GET /v1/registry` lists the tenant's entries, each version with its digest and signer;
//!   `GET /v1/registry/{kind}/{name}` shows one entry (`?version=N`, default the newest).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_manifests::{Kind, SignedManifest};
use switchyard_workflows::registry::Provenance;
use switchyard_workflows::spec::LoadOptions;
use switchyard_workflows::{Engine, Error as WorkflowError};

use crate::api::workflows::{SCOPE, api_error};
use crate::http::{ApiError, ErrorBody, parse_query, scoped_request};
use crate::state::Admin;

crate::api::endpoints! {
    post "/v1/registry/manifests" => publish,
    get "/v1/registry" => list,
    get "/v1/registry/{kind}/{name}" => show,
}

/// A refused manifest as an HTTP answer: unreadable is 400, refused by the policy 403.
fn refused(kind: Option<Kind>, error: &switchyard_manifests::Error) -> ApiError {
    let status = if error.is_malformed() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::FORBIDDEN
    };
    let kind = kind.map_or("unknown", Kind::as_str);
    switchyard_workflows::metrics::manifest_outcome(kind, error.code());
    tracing::warn!(kind, code = error.code(), %error, "manifest refused");
    ApiError::owned(status, error.code().into(), error.to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishQuery {
    /// The environment whose overlay applies to a workflow.
    env: Option<String>,
}

/// Publishes a manifest file. Answers the entry's kind, name, version, digest and signer.
#[utoipa::path(post, path = "/v1/registry/manifests", tag = "registry",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"), ("env" = Option<String>, Query, description = "the environment whose overlay applies to a workflow")),
    request_body(content = String, description = "a manifest file as `switchyard registry sign` writes it: the RFC 8785 canonical JSON of {manifest: {kind, name, version, expires_at?, body}, signature?: {key_id, algorithm, value}}", content_type = "application/json"),
    responses((status = 201, description = "published: kind, name, version, digest, key_id"),
        (status = 200, description = "this version already holds this content: nothing changed"),
        (status = 400, description = "invalid_manifest, not_canonical, or an invalid body (invalid_spec)", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "unsigned_manifest, bad_signature, unknown_key, revoked_key, expired_key, expired_manifest, unsupported_algorithm; or the key lacks the `workflows` scope", body = ErrorBody),
        (status = 409, description = "the version is published with other content, or is not the next one", body = ErrorBody)))]
pub(crate) async fn publish(
    req: HttpRequest,
    body: web::Bytes,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (principal, _) = scoped_request(&req, &admin, &[SCOPE]).await?;
    let query: PublishQuery = parse_query(&req)?;
    let signed = SignedManifest::parse(&body).map_err(|e| refused(None, &e))?;
    let kind = signed.manifest.kind;
    let verified = admin
        .trust
        .verify(
            &signed,
            admin.keys.settings.requires_signatures(principal.tenant),
            time::OffsetDateTime::now_utc(),
        )
        .map_err(|e| refused(Some(kind), &e))?;
    let tenant = principal.tenant.to_string();
    let name = admin.directory.name(principal.tenant).unwrap_or_default();
    let keys = [tenant.as_str(), name.as_str()];
    let options = LoadOptions {
        env: query.env.as_deref(),
        tenant: &keys,
    };
    let provenance = Provenance {
        digest: verified.digest.clone(),
        key_id: verified.key_id.clone(),
    };
    let registered = engine
        .publish(principal.tenant, &signed.manifest, provenance, options)
        .await
        .map_err(|e| {
            let code = match &e {
                WorkflowError::Conflict(_) => "immutable",
                _ => "invalid_body",
            };
            switchyard_workflows::metrics::manifest_outcome(kind.as_str(), code);
            api_error(e)
        })?;
    let status = if registered.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(json!({
        "kind": kind.as_str(),
        "name": registered.name,
        "version": registered.version,
        // As the registry recorded the version (a no-op answers the first publication's).
        "digest": registered.provenance.as_ref().map(|p| &p.digest),
        "key_id": registered.provenance.as_ref().and_then(|p| p.key_id.as_ref()),
        "created": registered.created,
    })))
}

fn versions(catalog: &switchyard_workflows::registry::Catalog, kind: Kind, name: &str) -> Value {
    let count = catalog.of(kind).get(name).map_or(0, Vec::len);
    (1..=u32::try_from(count).unwrap_or(u32::MAX))
        .map(|version| match catalog.provenance(kind, name, version) {
            Some(p) => json!({"version": version, "digest": p.digest, "key_id": p.key_id, "signed": p.key_id.is_some()}),
            None => json!({"version": version, "digest": null, "key_id": null, "signed": false}),
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    kind: Option<String>,
}

/// The tenant's registry entries: kind, name, and each version's digest and signer.
#[utoipa::path(get, path = "/v1/registry", tag = "registry",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"), ("kind" = Option<String>, Query, description = "tool, workflow, fragment or prompt")),
    responses((status = 200, description = "{data: [{kind, name, versions: [{version, digest, key_id, signed}]}], require_signatures}"),
        (status = 400, description = "an unknown kind", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `workflows` scope", body = ErrorBody)))]
pub(crate) async fn list(
    req: HttpRequest,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (principal, _) = scoped_request(&req, &admin, &[SCOPE]).await?;
    let query: ListQuery = parse_query(&req)?;
    let only = query
        .kind
        .as_deref()
        .map(Kind::parse)
        .transpose()
        .map_err(|e| {
            ApiError::owned(
                StatusCode::BAD_REQUEST,
                "invalid_request".into(),
                e.to_string(),
            )
        })?;
    let catalog = engine.catalog(principal.tenant).await.map_err(api_error)?;
    let mut data = Vec::new();
    for kind in [Kind::Prompt, Kind::Tool, Kind::Workflow, Kind::Fragment] {
        if only.is_some_and(|o| o != kind) {
            continue;
        }
        for name in catalog.of(kind).keys() {
            data.push(json!({"kind": kind.as_str(), "name": name, "versions": versions(&catalog, kind, name)}));
        }
    }
    Ok(HttpResponse::Ok().json(json!({
        "data": data,
        "require_signatures": admin.signatures_required(principal.tenant),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    version: Option<u32>,
}

/// One entry at one version (default: the newest): its definition, digest and signer.
#[utoipa::path(get, path = "/v1/registry/{kind}/{name}", tag = "registry",
    params(("Authorization" = String, Header, description = "Bearer <tenant API key>"),
        ("kind" = String, Path, description = "tool, workflow, fragment or prompt"),
        ("name" = String, Path, description = "the entry's name"),
        ("version" = Option<u32>, Query, description = "the version (default: the newest)")),
    responses((status = 200, description = "kind, name, version, definition, digest, key_id"),
        (status = 400, description = "an unknown kind", body = ErrorBody),
        (status = 404, description = "no such entry or version", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 403, description = "the key lacks the `workflows` scope", body = ErrorBody)))]
pub(crate) async fn show(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    admin: web::Data<Admin>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, ApiError> {
    let (principal, _) = scoped_request(&req, &admin, &[SCOPE]).await?;
    let query: ShowQuery = parse_query(&req)?;
    let (kind, name) = path.into_inner();
    let kind = Kind::parse(&kind).map_err(|e| {
        ApiError::owned(
            StatusCode::BAD_REQUEST,
            "invalid_request".into(),
            e.to_string(),
        )
    })?;
    let catalog = engine.catalog(principal.tenant).await.map_err(api_error)?;
    let missing = || {
        api_error(WorkflowError::NotFound(format!(
            "no {} `{name}`{}",
            kind.as_str(),
            query
                .version
                .map(|v| format!(" version {v}"))
                .unwrap_or_default()
        )))
    };
    let held = catalog.of(kind).get(&name).ok_or_else(missing)?;
    let version = query
        .version
        .unwrap_or_else(|| u32::try_from(held.len()).unwrap_or(u32::MAX));
    let text = usize::try_from(version)
        .ok()
        .and_then(|v| v.checked_sub(1))
        .and_then(|i| held.get(i))
        .ok_or_else(missing)?;
    let definition: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let provenance = catalog.provenance(kind, &name, version);
    Ok(HttpResponse::Ok().json(json!({
        "kind": kind.as_str(),
        "name": name,
        "version": version,
        "definition": definition,
        "digest": provenance.map(|p| &p.digest),
        "key_id": provenance.and_then(|p| p.key_id.as_ref()),
    })))
}

/// The header that says which prompt version served a chat request.
pub(crate) const PROMPT_HEADER: &str = "x-switchyard-prompt";

/// A chat request's `prompt`: the registered prompt's messages, rendered from
/// `prompt_variables`, go before the request's own; the version served is logged with the
/// inference as the tag `prompt:<name>:<version>` (so spend and usage group by it) and answered
/// in `x-switchyard-prompt`. Answers `name@version`, or `None` when the request names no prompt.
pub(crate) async fn apply_prompt(
    request: &mut switchyard_inference::openai::ChatRequest,
    tenant: switchyard_events::TenantId,
    engine: Option<&Engine>,
) -> Result<Option<String>, ApiError> {
    use switchyard_inference::openai::{Message, Role};
    let Some(reference) = request.prompt.take() else {
        if request.prompt_variables.is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "prompt_variables needs a prompt",
            ));
        }
        return Ok(None);
    };
    let invalid = |message: String| {
        ApiError::owned(StatusCode::BAD_REQUEST, "invalid_request".into(), message)
    };
    let (name, version) = switchyard_manifests::parse_reference(&reference)
        .map_err(|e| invalid(format!("prompt: {e}")))?;
    let engine = engine.ok_or_else(|| {
        invalid(
            "prompts live in the registry, which this server does not run (--no-workflows)".into(),
        )
    })?;
    let catalog = engine.catalog(tenant).await.map_err(api_error)?;
    let (version, prompt) = catalog.prompt(&name, version).ok_or_else(|| {
        ApiError::owned(
            StatusCode::NOT_FOUND,
            "not_found".into(),
            format!("prompt `{reference}` is not registered for this tenant"),
        )
    })?;
    let variables = request.prompt_variables.take().unwrap_or(Value::Null);
    let rendered = prompt.render(&variables).map_err(api_error)?;
    let mut messages = Vec::with_capacity(rendered.len() + request.messages.len());
    for message in rendered {
        let role = match message.role.as_str() {
            "system" => Role::System,
            "developer" => Role::Developer,
            "assistant" => Role::Assistant,
            _ => Role::User,
        };
        messages.push(Message {
            role,
            content: Some(Value::String(message.content)),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            function_call: None,
            refusal: None,
        });
    }
    messages.append(&mut request.messages);
    request.messages = messages;
    crate::http::add_tag(&mut request.metadata, format!("prompt:{name}:{version}"));
    let served = format!("{name}@{version}");
    tracing::debug!(%tenant, prompt = %served, "prompt served");
    Ok(Some(served))
}
