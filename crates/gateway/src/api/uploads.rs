//! The three bodies `POST /v1/documents` takes, each read within `[retrieval]
//! max_document_bytes` (413 as soon as it is over, before the rest is read):
//!
//! - **raw**: the body is the document (`Content-Type` declares its media type);
//! - **`multipart/form-data`**: one field `file` (its filename names the document, its
//!   `Content-Type` declares the media type) and an optional text field `name`; any other field
//!   is refused;
//! - **`application/json`**: `{"url": "...", "name": "..."}`: the document is fetched from the
//!   URL through the tools' address guard (`crate::egress`).

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpRequest, web};
use futures_util::StreamExt as _;
use serde::Deserialize;
use switchyard_inference::config::RetrievalConfig;

use crate::http::{ApiError, parse_json};
use crate::search::invalid;

/// The longest `name` field or JSON body (the URL form), in bytes.
const MAX_SMALL_PART: usize = 64 * 1024;
/// Most fields a multipart body may have.
const MAX_FIELDS: usize = 8;

/// A document as it arrived, before its media type is decided.
#[derive(Debug)]
pub struct Upload {
    /// The name the body gave (a multipart `name` field or filename, a JSON `name`, the URL's
    /// last path segment); the query's `name` comes before it.
    pub name: Option<String>,
    /// Where it came from: `upload`, or the URL it was fetched from.
    pub source: String,
    /// The media type declared for the document itself.
    pub declared: Option<String>,
    pub bytes: Vec<u8>,
}

fn too_large(limit: u64) -> ApiError {
    ApiError::owned(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large".into(),
        format!("a document is at most {limit} bytes ([retrieval] max_document_bytes)"),
    )
}

/// The request's media type without parameters, lower-cased.
fn essence(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// Reads whichever body the request carries (see the module docs).
pub async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    config: &RetrievalConfig,
) -> Result<Upload, ApiError> {
    let limit = config.max_document_bytes;
    match essence(req).as_deref() {
        Some("multipart/form-data") => multipart(req, payload, limit).await,
        Some("application/json") => {
            let body = read_limited(req, payload, MAX_SMALL_PART as u64)
                .await
                .map_err(|_| invalid(format!("a URL request is at most {MAX_SMALL_PART} bytes")))?;
            from_url(&body, config).await
        }
        declared => Ok(Upload {
            name: None,
            source: "upload".into(),
            declared: declared.map(str::to_owned),
            bytes: read_limited(req, payload, limit).await?,
        }),
    }
}

/// Reads the raw body, refusing it (413) as soon as it is over `limit`.
async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: u64,
) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|d| d > limit) {
        return Err(too_large(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| invalid(format!("the body could not be read: {e}")))?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A multipart body: the `file` field and an optional `name`.
async fn multipart(
    req: &HttpRequest,
    payload: web::Payload,
    limit: u64,
) -> Result<Upload, ApiError> {
    let malformed = |e: actix_multipart::MultipartError| {
        invalid(format!("the multipart body could not be read: {e}"))
    };
    // The whole body is bounded too: the file, the name and the parts' headers.
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|d| d > limit + MAX_SMALL_PART as u64) {
        return Err(too_large(limit));
    }
    // And so is a body without a length: a part's headers or preamble without a line end would
    // otherwise be buffered by the parser for as long as they come.
    let bound = limit + MAX_SMALL_PART as u64;
    let overflowed = std::rc::Rc::new(std::cell::Cell::new(false));
    let flag = overflowed.clone();
    let mut seen = 0u64;
    let counted = payload.map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        if seen > bound {
            flag.set(true);
            return Err(actix_web::error::PayloadError::Overflow);
        }
        Ok(chunk)
    });
    let mut form = Multipart::new(req.headers(), counted);
    let mut file: Option<(Option<String>, Option<String>, Vec<u8>)> = None;
    let mut name: Option<String> = None;
    let mut fields = 0;
    let malformed = |e: actix_multipart::MultipartError| {
        if overflowed.get() {
            too_large(limit)
        } else {
            malformed(e)
        }
    };
    while let Some(field) = form.next().await {
        let mut field = field.map_err(malformed)?;
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(invalid(format!(
                "a multipart upload has at most {MAX_FIELDS} fields"
            )));
        }
        let field_name = field.name().unwrap_or_default().to_owned();
        let cap = match field_name.as_str() {
            "file" if file.is_some() => {
                return Err(invalid("one document per upload: a second `file` field"));
            }
            "file" => limit,
            "name" if name.is_some() => return Err(invalid("a second `name` field")),
            "name" => MAX_SMALL_PART as u64,
            other => {
                return Err(invalid(format!(
                    "unknown field {other:?}: a multipart upload has `file` and, optionally, `name`"
                )));
            }
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(malformed)?;
            if (bytes.len() + chunk.len()) as u64 > cap {
                return Err(if field_name == "file" {
                    too_large(limit)
                } else {
                    invalid(format!(
                        "the `name` field is at most {MAX_SMALL_PART} bytes"
                    ))
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if field_name == "file" {
            let filename = field
                .content_disposition()
                .and_then(|d| d.get_filename())
                .map(str::to_owned);
            let media = field.content_type().map(|m| m.essence_str().to_owned());
            file = Some((filename, media, bytes));
        } else {
            name = Some(
                String::from_utf8(bytes).map_err(|_| invalid("the `name` field is not UTF-8"))?,
            );
        }
    }
    let Some((filename, media, bytes)) = file else {
        return Err(invalid(
            "a multipart upload needs a `file` field with the document",
        ));
    };
    // A part's default type (RFC 7578) declares nothing about the document.
    let declared = media.filter(|m| m != "application/octet-stream");
    Ok(Upload {
        name: name.or(filename.filter(|f| !f.is_empty())),
        source: "upload".into(),
        declared,
        bytes,
    })
}

/// `{"url": "...", "name": "..."}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FromUrl {
    url: String,
    #[serde(default)]
    name: Option<String>,
}

async fn from_url(body: &[u8], config: &RetrievalConfig) -> Result<Upload, ApiError> {
    let request: FromUrl = parse_json(body)?;
    if request.url.len() > 8_192 {
        return Err(invalid("url is at most 8192 bytes"));
    }
    let fetched = crate::ingest::fetch(&request.url, config).await?;
    tracing::info!(url = %fetched.url, bytes = fetched.bytes.len(), "document fetched");
    Ok(Upload {
        name: request.name.or(Some(fetched.name)),
        source: fetched.url,
        declared: fetched.content_type,
        bytes: fetched.bytes,
    })
}
