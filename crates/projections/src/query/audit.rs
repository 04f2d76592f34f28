//! The audit log of admin commands, from the `audit` projector: who did what to which tenant,
//! newest first, with keyset paging on the log position.

use serde::Serialize;

use super::{int, text};
use crate::db::ReadDb;
use crate::error::{Error, Result};
use crate::model::{Col, Val};

/// Most rows one page may ask for.
pub const MAX_AUDIT_PAGE: u32 = 1000;

/// Which audit rows to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only these tenants (`None`: every tenant).
    pub tenants: Option<Vec<uuid::Uuid>>,
    /// Only commands of this subject (the token's `sub`, or `break-glass`).
    pub subject: Option<String>,
    /// Recorded at or after / before these unix microseconds.
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
    /// Rows older than this log position (the previous page's `next`).
    pub before: Option<u64>,
    /// Page size, 1 to [`MAX_AUDIT_PAGE`].
    pub limit: u32,
}

/// Who issued an audited command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditActor {
    pub subject: String,
    pub issuer: String,
    pub role: String,
    pub via: String,
}

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    /// The event's position in the log.
    pub position: i64,
    pub tenant_id: String,
    pub recorded_us: i64,
    pub stream: String,
    pub event_type: String,
    /// Absent for events recorded without an identity (before the audit log, or offline).
    pub actor: Option<AuditActor>,
    pub request_id: String,
}

impl ReadDb {
    /// One page of the audit log, newest first.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRow>> {
        if query.limit == 0 || query.limit > MAX_AUDIT_PAGE {
            return Err(Error::Invalid(format!(
                "limit must be 1 to {MAX_AUDIT_PAGE}"
            )));
        }
        let mut params: Vec<Val> = Vec::new();
        let mut sql = String::from(
            "SELECT position, tenant_id, recorded_us, stream, event_type, subject, issuer, role, \
             via, request_id FROM admin_audit WHERE 1 = 1",
        );
        if let Some(tenants) = &query.tenants {
            if tenants.is_empty() {
                return Ok(Vec::new());
            }
            let mut slots = Vec::with_capacity(tenants.len());
            for tenant in tenants {
                params.push(Val::Uuid(*tenant));
                slots.push(format!("${}", params.len()));
            }
            sql.push_str(&format!(" AND tenant_id IN ({})", slots.join(", ")));
        }
        if let Some(subject) = &query.subject {
            params.push(Val::from(subject.as_str()));
            sql.push_str(&format!(" AND subject = ${}", params.len()));
        }
        for (bound, op) in [(query.from_us, ">="), (query.to_us, "<")] {
            if let Some(at) = bound {
                params.push(Val::Int(at));
                sql.push_str(&format!(" AND recorded_us {op} ${}", params.len()));
            }
        }
        if let Some(before) = query.before {
            params.push(Val::Int(i64::try_from(before).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" AND position < ${}", params.len()));
        }
        sql.push_str(&format!(" ORDER BY position DESC LIMIT {}", query.limit));
        let mut tx = self.begin_platform().await?;
        let columns = [
            Col::Int,
            Col::Uuid,
            Col::Int,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Text,
        ];
        let rows = tx.rows(&sql, &params, &columns).await?;
        tx.rollback().await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let [
                    position,
                    tenant,
                    recorded,
                    stream,
                    event_type,
                    subject,
                    issuer,
                    role,
                    via,
                    request,
                ] = row.as_slice()
                else {
                    return None;
                };
                let subject = text(subject);
                Some(AuditRow {
                    position: int(position),
                    tenant_id: text(tenant),
                    recorded_us: int(recorded),
                    stream: text(stream),
                    event_type: text(event_type),
                    actor: (!subject.is_empty()).then(|| AuditActor {
                        subject,
                        issuer: text(issuer),
                        role: text(role),
                        via: text(via),
                    }),
                    request_id: text(request),
                })
            })
            .collect())
    }
}
