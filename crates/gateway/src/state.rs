//! What the handlers of the admin side share (tenants, keys, limits), beside the inference
//! [`switchyard_inference::Pipeline`].

use std::sync::Arc;

use switchyard_actors::Runtime;
use switchyard_actors::tenant::Tenant;
use switchyard_events::EventStore;
use switchyard_inference::admission::meter::Meter;
use switchyard_inference::admission::ratelimit::Limiter;

use crate::auth::{AuthFailures, KeyIndex, KeySecret, TenantDirectory};

/// The admin side: the tenant actors, the key index and tenant directory folded from the log,
/// the budget meter (for the spend views), the limiter and the secrets.
pub struct Admin {
    pub store: Arc<dyn EventStore>,
    pub tenants: Runtime<Tenant>,
    pub keys: Arc<KeyIndex>,
    pub directory: Arc<TenantDirectory>,
    /// Each tenant's spend (shared with the pipeline's budget gate).
    pub meter: Arc<Meter>,
    /// Rate-limit state: this process, or Redis when several nodes share limits.
    pub limiter: Arc<Limiter>,
    pub secret: KeySecret,
    /// The static admin token: the break-glass credential.
    pub token: String,
    /// Checks OIDC bearer tokens of admins (when an issuer is configured).
    pub oidc: Option<crate::oidc::Verifier>,
    /// Where the in-memory folds stand (`/readyz` fails while their subscription is down).
    pub follower: Arc<switchyard_inference::follow::Follower>,
    /// Closes, drafts and re-prices invoices; holds the price books.
    pub invoicer: Arc<switchyard_inference::invoicing::Invoicer>,
    /// Addresses refused for failing key checks too often.
    pub auth_failures: AuthFailures,
    /// The platform's feature flags (one actor over the shared log).
    pub flags: switchyard_actors::Runtime<switchyard_actors::flags::FeatureFlags>,
    /// This environment's trusted manifest keys and signature policy (`[registry]`).
    pub trust: Arc<switchyard_manifests::Trust>,
    /// Every tenant's retrieval index on this node, folded from the log.
    pub library: Arc<switchyard_retrieval::Library>,
    /// The document actors (ingestion's write side).
    pub documents: Runtime<switchyard_retrieval::document::Document>,
}

/// Feeds the retrieval library from the node's log follower.
#[derive(Debug)]
pub struct LibraryFeed(pub Arc<switchyard_retrieval::Library>);

impl switchyard_inference::follow::Folder for LibraryFeed {
    fn fold(&self, recorded: &switchyard_events::RecordedEvent) {
        self.0.offer(recorded);
    }
}

impl Admin {
    /// Whether the tenant's registry takes signed manifests only: the environment's
    /// `[registry] require_signatures`, or the tenant's setting `require_signatures`.
    pub fn signatures_required(&self, tenant: switchyard_events::TenantId) -> bool {
        self.trust.requires_signatures() || self.keys.settings.requires_signatures(tenant)
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}
