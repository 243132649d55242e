//! The server's shared state: the store, the keys and tenants it has loaded
//! (reloaded when the store's generation changes, so `dzlctl keys rotate` and
//! `dzlctl tenant suspend` take effect without a restart), the clock, and
//! the in-memory guards (nonces, rate limits).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use dzl_crypto::{RootKeyHolder, Zeroizing};
use dzl_store::admin::{self, AdminError, VaultKeys};
use dzl_store::{Store, TenantKind, TenantRow, TenantState};
use dzl_types::{Purpose, ScopeSet, TenantId};

use crate::limits::Guards;
use crate::metrics::Metrics;
use crate::settings::Settings;

/// The time source; injectable so tests can move the clock.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// A tenant as the request path needs it.
pub struct Tenant {
    /// Id.
    pub id: TenantId,
    /// Kind.
    pub kind: TenantKind,
    /// The key id it signs with.
    pub key_id: String,
    /// Signing secret (opened from the store).
    pub secret: Zeroizing<Vec<u8>>,
    /// The secret it signed with before `dzlctl tenant rotate-secret`, and
    /// the instant it stops being accepted (`dzl_store::rules::previous_secret_valid`).
    pub previous_secret: Option<(Zeroizing<Vec<u8>>, DateTime<Utc>)>,
    /// Entitled groups (funders).
    pub scopes: Option<ScopeSet>,
    /// Entitled purposes (funders).
    pub purposes: Vec<Purpose>,
    /// Requests per second.
    pub rate_limit: u32,
    /// Active or suspended.
    pub state: TenantState,
    /// The client certificate it must connect with, if pinned.
    pub cert_pin: Option<dzl_crypto::CertPin>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Keys and tenants, loaded together at one store generation.
pub struct Loaded {
    /// The generation they were loaded at.
    pub generation: i64,
    /// Keyring and vault secrets.
    pub keys: VaultKeys,
    /// Tenants by key id.
    pub by_key: HashMap<String, Arc<Tenant>>,
    /// Tenants by id.
    pub by_id: HashMap<TenantId, Arc<Tenant>>,
}

/// Why the vault is not ready.
#[derive(Debug, Clone)]
pub enum NotReady {
    /// Not loaded yet.
    Starting,
    /// The root key does not open the keyring.
    WrongRootKey,
    /// The store holds no keyring.
    NotInitialised,
    /// The keys or tenants could not be opened for another reason (logged).
    Keys(String),
    /// The store failed.
    Store(String),
}

impl NotReady {
    /// The reason and its fix, as `/readyz` and every refused request say
    /// them: fixed texts that name no key, secret or stored value.
    pub fn detail(&self) -> &'static str {
        match self {
            NotReady::Starting => "The vault is starting: its keys and tenants are not loaded yet.",
            NotReady::WrongRootKey => {
                "The vault is not ready: the root key it was started with does not open this \
                 vault's keyring. Restart it with the root key the vault was initialised with \
                 (DZL_ROOT_KEY_FILE or DZL_ROOT_KEY)."
            }
            NotReady::NotInitialised => {
                "The vault is not ready: the store holds no keyring. Run `dzlctl init` on it, \
                 then restart the server."
            }
            NotReady::Keys(_) => {
                "The vault is not ready: its keys or tenants could not be opened; the server's \
                 log says why."
            }
            NotReady::Store(_) => "The store is unavailable.",
        }
    }
}

/// Everything a handler can reach.
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Settings.
    pub settings: Settings,
    /// The clock.
    pub clock: Clock,
    /// Loaded keys and tenants, or why not.
    pub loaded: RwLock<Result<Arc<Loaded>, NotReady>>,
    /// Nonces, rate limits and failed-redemption windows.
    pub guards: Guards,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Failed authentications per key id and source address.
    pub auth_throttle: crate::throttle::AuthThrottle,
    /// No request signed before this second is accepted (nonces from before
    /// a restart cannot be replayed after it).
    pub started_at: i64,
    /// System randomness.
    pub rng: dzl_crypto::SystemRandom,
    root: Box<dyn RootKeyHolder>,
}

impl AppState {
    /// State over `store`, not loaded yet (call [`AppState::reload`]).
    pub fn new(
        store: Arc<dyn Store>,
        guards: Guards,
        settings: Settings,
        root: Box<dyn RootKeyHolder>,
        clock: Clock,
    ) -> Self {
        let started_at = clock().timestamp();
        AppState {
            store,
            clock,
            loaded: RwLock::new(Err(NotReady::Starting)),
            guards,
            metrics: Metrics::default(),
            auth_throttle: crate::throttle::AuthThrottle::new(&settings.limits),
            settings,
            started_at,
            rng: dzl_crypto::SystemRandom::new(),
            root,
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// What is loaded, if ready.
    pub fn loaded(&self) -> Result<Arc<Loaded>, NotReady> {
        match self.loaded.read() {
            Ok(g) => g.clone(),
            Err(_) => Err(NotReady::Starting),
        }
    }

    fn set_loaded(&self, value: Result<Arc<Loaded>, NotReady>) {
        if let Ok(mut g) = self.loaded.write() {
            *g = value;
        }
    }

    /// Reloads keys and tenants if the store's generation moved (or `force`).
    /// Blocking: call from a blocking thread.
    pub fn reload(&self, force: bool) {
        let generation = match self.store.generation() {
            Ok(g) => g,
            Err(e) => {
                log::error!("store unavailable: {e}");
                self.set_loaded(Err(NotReady::Store(e.to_string())));
                return;
            }
        };
        if !force {
            if let Ok(l) = self.loaded() {
                if l.generation == generation {
                    return;
                }
            }
        }
        let result = load(&*self.store, &*self.root, generation, self.now());
        match &result {
            Ok(l) => {
                self.metrics
                    .set_key_version(l.keys.keyring.active_version());
                log::info!(
                    "loaded keyring (active version {}) and {} tenants at generation {generation}",
                    l.keys.keyring.active_version(),
                    l.by_id.len()
                );
            }
            Err(NotReady::Keys(why)) => log::error!("vault not ready: {why}"),
            Err(NotReady::Store(why)) => log::error!("vault not ready: store unavailable: {why}"),
            Err(e) => log::error!("{}", e.detail()),
        }
        self.set_loaded(result.map(Arc::new));
    }
}

fn load(
    store: &dyn Store,
    root: &dyn RootKeyHolder,
    generation: i64,
    now: DateTime<Utc>,
) -> Result<Loaded, NotReady> {
    let keys = admin::load_keys(store, root).map_err(|e| match e {
        AdminError::Store(s) => NotReady::Store(s.to_string()),
        AdminError::WrongRootKey => NotReady::WrongRootKey,
        AdminError::NotInitialised => NotReady::NotInitialised,
        other => NotReady::Keys(other.to_string()),
    })?;
    let rows = store
        .tenants()
        .map_err(|e| NotReady::Store(e.to_string()))?;
    let mut by_key = HashMap::new();
    let mut by_id = HashMap::new();
    for row in rows {
        let tenant =
            Arc::new(open_tenant(&keys, row, now).map_err(|e| NotReady::Keys(e.to_string()))?);
        by_id.insert(tenant.id.clone(), tenant.clone());
        by_key.insert(tenant.key_id.clone(), tenant);
    }
    Ok(Loaded {
        generation,
        keys,
        by_key,
        by_id,
    })
}

fn open_tenant(keys: &VaultKeys, row: TenantRow, now: DateTime<Utc>) -> Result<Tenant, AdminError> {
    let secret = admin::open_tenant_secret(&keys.keyring, &row)?;
    let previous_secret = admin::open_previous_tenant_secret(&keys.keyring, &row, now)?;
    Ok(Tenant {
        id: row.id,
        kind: row.kind,
        key_id: row.key_id,
        secret,
        previous_secret,
        scopes: row.scopes,
        purposes: row.purposes,
        rate_limit: row.rate_limit,
        state: row.state,
        cert_pin: row.cert_pin,
    })
}
