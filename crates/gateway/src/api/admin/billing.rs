//! Billing for finance: price books per plan, invoices (JSON or CSV), closing, payment, credit
//! notes, billing days, and what-if re-pricing. Everything is read from and decided by the
//! actors over the shared log, so any node answers alike.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_actors::billing::books::BooksCommand;
use switchyard_actors::billing::pricing::{self, BookFile};
use switchyard_actors::billing::{BillingCommand, usd};
use switchyard_events::TenantId;
use switchyard_inference::invoicing::{self, InvoiceDocument};
use uuid::Uuid;

use super::access::{Access, Need, admit, admit_platform};
use super::{metadata, not_decided};
use crate::http::idempotency::idempotent;
use crate::http::{ApiError, ErrorBody, parse_json, parse_query};
use crate::state::Admin;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormatParams {
    /// `json` (default) or `csv`.
    format: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportParams {
    /// The period, `YYYY-MM`.
    period: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

fn invalid(message: String) -> ApiError {
    ApiError::owned(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request".into(),
        message,
    )
}

fn csv_wanted(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(ApiError::owned(
            StatusCode::BAD_REQUEST,
            "invalid_request".into(),
            format!("format {other:?} is not json or csv"),
        )),
    }
}

fn answer(documents: Vec<InvoiceDocument>, csv: bool, one: bool) -> HttpResponse {
    if csv {
        return HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(invoicing::to_csv(&documents));
    }
    if one && let Some(document) = documents.first() {
        return HttpResponse::Ok().json(document);
    }
    HttpResponse::Ok().json(json!({ "data": documents }))
}

/// The tenant and period of an invoice a platform admin changes (closes, marks paid).
async fn invoice_to_write(
    req: &HttpRequest,
    admin: &Admin,
    (tenant, period): (String, String),
) -> Result<(TenantId, String), ApiError> {
    let tenant = super::tenant_id(&tenant)?;
    admit_platform(req, admin, Need::Billing(Access::Write)).await?;
    check_period(&period)?;
    Ok((tenant, period))
}

fn check_period(period: &str) -> Result<(), ApiError> {
    match pricing::parse_period(period) {
        Some(_) => Ok(()),
        None => Err(invalid(format!(
            "{period:?} is not a period such as 2026-11"
        ))),
    }
}

/// Publishes a new version of each plan's price book in the body (dollars and percent, as in
/// the TOML the CLI reads), effective from `effective_from` (default: the current month).
#[utoipa::path(post, path = "/v1/admin/price-books", tag = "billing",
    request_body(content = Object, description = "{effective_from?, plans: {PLAN: {discount_percent?, included_usd?, models: {MODEL: {input_usd_per_million, output_usd_per_million, usd_per_request?, included_requests?, included_input_tokens?, included_output_tokens?}}}}}"),
    responses((status = 201, description = "{published: [{plan, version, effective_from}]}"),
        (status = 400, description = "bad JSON or query parameters", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody),
        (status = 409, description = "the Idempotency-Key was used for another request", body = ErrorBody),
        (status = 422, description = "invalid input", body = ErrorBody),
        (status = 503, description = "the event log is unavailable or busy; retry", body = ErrorBody)))]
pub(crate) async fn publish_price_book(
    req: HttpRequest,
    admin: web::Data<Admin>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    admit_platform(&req, &admin, Need::Billing(Access::Write)).await?;
    idempotent(
        admin.store.as_ref(),
        &req,
        TenantId::SYSTEM,
        &body,
        |_| {},
        || async {
            let file: BookFile = parse_json(&body)?;
            let plans = file.prices().map_err(invalid)?;
            let effective_from = file.effective_from.clone().unwrap_or_else(|| {
                switchyard_actors::billing::Calendar::default().period_at(admin.invoicer.now())
            });
            let applied = admin
                .invoicer
                .books()
                .send(
                    &TenantId::SYSTEM,
                    BooksCommand::Publish {
                        effective_from,
                        plans,
                    },
                    metadata(&req),
                )
                .await
                .map_err(|e| not_decided(e, "the price books are busy; retry shortly"))?;
            let published: Vec<Value> = applied
                .events
                .iter()
                .filter_map(|e| match e {
                    switchyard_events::Event::PriceBookPublished(p) => Some(json!({
                        "plan": p.plan, "version": p.version, "effective_from": p.effective_from
                    })),
                    _ => None,
                })
                .collect();
            tracing::info!(?published, "price book published");
            Ok((StatusCode::CREATED, json!({"published": published})))
        },
    )
    .await
}

/// Every plan's price-book versions, oldest first, in micro-dollars.
#[utoipa::path(get, path = "/v1/admin/price-books", tag = "billing",
    responses((status = 200, description = "{plans: {PLAN: [{version, effective_from, prices}]}}"),
        (status = 400, description = "bad JSON or query parameters", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody),
        (status = 503, description = "the event log is unavailable or busy; retry", body = ErrorBody)))]
pub(crate) async fn list_price_books(
    req: HttpRequest,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, ApiError> {
    admit_platform(&req, &admin, Need::Billing(Access::Read)).await?;
    let (books, _) = admin
        .invoicer
        .books()
        .read(&TenantId::SYSTEM)
        .await
        .map_err(|e| not_decided(e, "the price books are busy; retry shortly"))?;
    Ok(HttpResponse::Ok().json(json!({"plans": books.plans})))
}

/// A tenant's invoice for a period: closed, or an open period's draft priced on the plan's
/// current book.
#[utoipa::path(get, path = "/v1/admin/tenants/{id}/invoices/{period}", tag = "billing",
    params(("id" = String, Path, description = "tenant id"), ("period" = String, Path, description = "YYYY-MM"), FormatParams),
    responses((status = 200, description = "the invoice document, or CSV"),
        (status = 400, description = "bad JSON or query parameters", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody),
        (status = 404, description = "no such tenant or invoice", body = ErrorBody),
        (status = 422, description = "invalid input", body = ErrorBody),
        (status = 503, description = "the event log is unavailable or busy; retry", body = ErrorBody)))]
pub(crate) async fn get_invoice(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, period) = path.into_inner();
    let tenant = admit(&req, &admin, &tenant, Access::Read).await?;
    let params: FormatParams = parse_query(&req)?;
    let csv = csv_wanted(params.format.as_deref())?;
    check_period(&period)?;
    let document = admin.invoicer.document(tenant, &period).await?;
    Ok(answer(vec![document], csv, true))
}

/// Every tenant's invoice for a period (tenants with usage in it), for finance.
#[utoipa::path(get, path = "/v1/admin/invoices", tag = "billing", params(ExportParams),
    responses((status = 200, description = "{data: [invoice document]}, or CSV"),
        (status = 400, description = "bad JSON or query parameters", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody),
        (status = 422, description = "invalid input", body = ErrorBody),
        (status = 503, description = "the event log is unavailable or busy; retry", body = ErrorBody)))]
pub(crate) async fn export_invoices(
    req: HttpRequest,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, ApiError> {
    admit_platform(&req, &admin, Need::Billing(Access::Read)).await?;
    let params: ExportParams = parse_query(&req)?;
    let csv = csv_wanted(params.format.as_deref())?;
    let period = params
        .period
        .ok_or_else(|| invalid("period (YYYY-MM) is required".into()))?;
    check_period(&period)?;
    let mut documents = Vec::new();
    for tenant in admin.invoicer.tenants() {
        let state = admin.invoicer.state(tenant).await?;
        if state.invoices.contains_key(&period) {
            documents.push(admin.invoicer.document(tenant, &period).await?);
        }
    }
    Ok(answer(documents, csv, false))
}

/// Closes a tenant's invoice for a period that has ended (the invoicer does it by itself an
/// hour after the end; this is at once). Answers the closed invoice, also if it was closed.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/invoices/{period}/close", tag = "billing",
    params(("id" = String, Path, description = "tenant id"), ("period" = String, Path, description = "YYYY-MM")),
    responses((status = 200, description = "the closed invoice"),
        (status = 400, description = "bad JSON or query parameters", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody),
        (status = 404, description = "no such tenant or invoice", body = ErrorBody),
        (status = 409, description = "the invoice's state does not allow it (open, closed, not ended)", body = ErrorBody),
        (status = 422, description = "invalid input", body = ErrorBody),
        (status = 503, description = "the event log is unavailable or busy; retry", body = ErrorBody)))]
pub(crate) async fn close_invoice(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, period) = invoice_to_write(&req, &admin, path.into_inner()).await?;
    admin
        .invoicer
        .close(tenant, &period, metadata(&req))
        .await?;
    Ok(HttpResponse::Ok().json(admin.invoicer.document(tenant, &period).await?))
}

/// Records that a closed invoice was paid.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/invoices/{period}/paid", tag = "billing",
    params(("id" = String, Path, description = "tenant id"), ("period" = String, Path, description = "YYYY-MM")),
    responses((status = 200, description = "the invoice"),
        (status = 400, description = "bad JSON or query parameters", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody),
        (status = 404, description = "no such tenant or invoice", body = ErrorBody),
        (status = 409, description = "the invoice's state does not allow it (open, closed, not ended)", body = ErrorBody),
        (status = 422, description = "invalid input", body = ErrorBody),
        (status = 503, description = "the event log is unavailable or busy; retry", body = ErrorBody)))]
pub(crate) async fn mark_paid(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, period) = invoice_to_write(&req, &admin, path.into_inner()).await?;
    admin
        .invoicer
        .send(
            tenant,
            BillingCommand::MarkPaid {
                period: period.clone(),
            },
            metadata(&req),
        )
        .await?;
    Ok(HttpResponse::Ok().json(admin.invoicer.document(tenant, &period).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditNoteInput {
    period: String,
    /// Dollars, at most 6 decimals.
    amount_usd: f64,
    reason: String,
    /// Issued once per id (default: a new one; the Idempotency-Key covers retries).
    id: Option<Uuid>,
}

/// Issues a credit note (a refund or an adjustment) against a closed invoice, never beyond
/// what it bills less earlier notes.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/credit-notes", tag = "billing",
    params(("id" = String, Path, description = "tenant id")),
    request_body(content = Object, description = "{period, amount_usd, reason, id?}"),
    responses((status = 201, description = "{credit_note_id, period, amount_micros, balance_micros}"),
        (status = 400, description = "bad JSON or query parameters", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody),
        (status = 404, description = "no such tenant or invoice", body = ErrorBody),
        (status = 409, description = "the invoice's state does not allow it (open, closed, not ended)", body = ErrorBody),
        (status = 422, description = "invalid input", body = ErrorBody),
        (status = 503, description = "the event log is unavailable or busy; retry", body = ErrorBody)))]
pub(crate) async fn issue_credit_note(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let tenant = super::tenant_id(&path.into_inner())?;
    admit_platform(&req, &admin, Need::Billing(Access::Write)).await?;
    idempotent(admin.store.as_ref(), &req, tenant, &body, |_| {}, || async {
        let input: CreditNoteInput = parse_json(&body)?;
        check_period(&input.period)?;
        let amount_micros = pricing::micros("amount_usd", input.amount_usd).map_err(invalid)?;
        let id = input.id.unwrap_or_else(Uuid::now_v7);
        admin
            .invoicer
            .send(
                tenant,
                BillingCommand::IssueCreditNote {
                    id,
                    period: input.period.clone(),
                    amount_micros,
                    reason: input.reason,
                },
                metadata(&req),
            )
            .await?;
        let document = admin.invoicer.document(tenant, &input.period).await?;
        tracing::info!(%tenant, period = input.period, amount_micros, credit_note = %id, "credit note issued");
        Ok((
            StatusCode::CREATED,
            json!({
                "credit_note_id": id,
                "period": input.period,
                "amount_micros": amount_micros,
                "amount_usd": usd(amount_micros),
                "balance_micros": document.balance_micros,
                "balance_usd": document.balance_usd,
            }),
        ))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BillingDayInput {
    billing_day: u8,
}

/// Sets the day of the month the tenant's periods start on (1-28), from the first period that
/// has not begun under the old day or the new one.
#[utoipa::path(put, path = "/v1/admin/tenants/{id}/billing-day", tag = "billing",
    params(("id" = String, Path, description = "tenant id")),
    request_body(content = Object, description = "{billing_day: 1-28}"),
    responses((status = 200, description = "{billing_day, from_period}"),
        (status = 400, description = "bad JSON or query parameters", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody),
        (status = 404, description = "no such tenant or invoice", body = ErrorBody),
        (status = 422, description = "invalid input", body = ErrorBody),
        (status = 503, description = "the event log is unavailable or busy; retry", body = ErrorBody)))]
pub(crate) async fn set_billing_day(
    req: HttpRequest,
    admin: web::Data<Admin>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let tenant = super::tenant_id(&path.into_inner())?;
    admit_platform(&req, &admin, Need::Billing(Access::Write)).await?;
    let input: BillingDayInput = parse_json(&body)?;
    admin.invoicer.plan(tenant).await?; // the tenant exists
    admin
        .invoicer
        .send(
            tenant,
            BillingCommand::SetBillingDay {
                day: input.billing_day,
            },
            metadata(&req),
        )
        .await?;
    let state = admin.invoicer.state(tenant).await?;
    let current = state.calendar.period_at(admin.invoicer.now());
    let next = pricing::next_period(&current).unwrap_or_default();
    let from = [
        current,
        next.clone(),
        pricing::next_period(&next).unwrap_or_default(),
    ]
    .into_iter()
    .find(|p| state.calendar.day(p) == input.billing_day)
    .unwrap_or_default();
    Ok(HttpResponse::Ok().json(json!({"billing_day": input.billing_day, "from_period": from})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepriceInput {
    period: String,
    book: BookFile,
}

/// Every tenant's invoice for a period priced under another price book, beside the real one
/// (closed, or the open period's draft). Writes nothing.
#[utoipa::path(post, path = "/v1/admin/billing/reprice", tag = "billing",
    request_body(content = Object, description = "{period, book: {plans: {...}}} (the price-book form)"),
    responses((status = 200, description = "{period, tenants: [{tenant, plan, actual, repriced, difference_micros}], actual_micros, repriced_micros}"),
        (status = 400, description = "bad JSON or query parameters", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "the caller's role does not allow it", body = ErrorBody),
        (status = 422, description = "invalid input", body = ErrorBody),
        (status = 503, description = "the event log is unavailable or busy; retry", body = ErrorBody)))]
pub(crate) async fn reprice(
    req: HttpRequest,
    admin: web::Data<Admin>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    admit_platform(&req, &admin, Need::Billing(Access::Read)).await?;
    let input: RepriceInput = parse_json(&body)?;
    check_period(&input.period)?;
    let rows = admin.invoicer.reprice(&input.book, &input.period).await?;
    let actual = rows
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.actual.total_micros));
    let repriced = rows
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.repriced.total_micros));
    Ok(HttpResponse::Ok().json(json!({
        "period": input.period,
        "tenants": rows,
        "actual_micros": actual,
        "repriced_micros": repriced,
    })))
}
