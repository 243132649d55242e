//! Deposits that cannot be built wrong.
//!
//! [`DepositBuilder::build`] runs the very deserialiser the vault runs on a
//! deposit body (`dzl_types::wire::DepositRequest`, made of the shared
//! newtypes: GB 11643 id numbers, mainland phones, IP addresses, bounded
//! texts, strict groups), then the consent and grant rules the vault checks
//! before storing anything. A [`Deposit`] therefore only fails at the vault
//! for what only the vault knows: the funder's entitlements, a duplicate
//! `external_ref`, a vault configured with a shorter maximum code lifetime.

use chrono::{DateTime, Utc};
use dzl_types::records::{Education, Gender, MaritalStatus, Network, Os};
use dzl_types::wire::{DepositRequest, MAX_TTL_SECONDS};
use dzl_types::{Applicant, Device, IdType, Purpose, Risk, ScopeSet};
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};

use crate::error::BuildError;

/// A deposit that passed every check the SDK can make: ready for
/// [`crate::PlatformClient::deposit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Deposit {
    request: DepositRequest,
}

impl Deposit {
    /// Starts a deposit: the platform's own reference (1–64 printable ASCII
    /// characters, unique per platform) and the purpose.
    pub fn builder(external_ref: impl Into<String>, purpose: Purpose) -> DepositBuilder {
        DepositBuilder {
            external_ref: external_ref.into(),
            purpose,
            consent: None,
            applicant: None,
            device: None,
            risk: None,
            grants: Vec::new(),
            error: None,
        }
    }

    /// The request body.
    pub fn request(&self) -> &DepositRequest {
        &self.request
    }

    /// The request body, owned.
    pub fn into_request(self) -> DepositRequest {
        self.request
    }
}

impl TryFrom<DepositRequest> for Deposit {
    type Error = BuildError;

    /// Checks a request made some other way (e.g. deserialised from the
    /// platform's own JSON) against the vault's consent and grant rules.
    fn try_from(request: DepositRequest) -> Result<Self, BuildError> {
        check_deposit(&request, Utc::now())?;
        Ok(Deposit { request })
    }
}

/// Builds a [`Deposit`]; see [`Deposit::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .build()"]
pub struct DepositBuilder {
    external_ref: String,
    purpose: Purpose,
    consent: Option<Value>,
    applicant: Option<Value>,
    device: Option<Value>,
    risk: Option<Value>,
    grants: Vec<Value>,
    error: Option<BuildError>,
}

impl DepositBuilder {
    /// The applicant's consent (required).
    pub fn consent(mut self, consent: ConsentBuilder) -> Self {
        self.consent = Some(consent.into_json());
        self
    }

    /// The identity group (required): an [`ApplicantBuilder`] or an
    /// [`Applicant`].
    pub fn applicant(mut self, applicant: impl IntoGroup<Applicant>) -> Self {
        self.applicant = self.keep(applicant.into_json(), "/applicant");
        self
    }

    /// The device group: a [`DeviceBuilder`] or a [`Device`].
    pub fn device(mut self, device: impl IntoGroup<Device>) -> Self {
        self.device = self.keep(device.into_json(), "/device");
        self
    }

    /// The risk group: a [`RiskBuilder`] or a [`Risk`].
    pub fn risk(mut self, risk: impl IntoGroup<Risk>) -> Self {
        self.risk = self.keep(risk.into_json(), "/risk");
        self
    }

    /// Asks for a code for `funder_id` (a `ten_…` id) releasing `scopes`,
    /// living `ttl_seconds` (the vault's default, 24 h unless configured,
    /// when `None`).
    pub fn grant(mut self, funder_id: &str, scopes: ScopeSet, ttl_seconds: Option<u32>) -> Self {
        let mut g = Map::new();
        g.insert("funder_id".into(), Value::from(funder_id));
        g.insert("scopes".into(), to_value(scopes));
        if let Some(t) = ttl_seconds {
            g.insert("ttl_seconds".into(), Value::from(t));
        }
        self.grants.push(Value::Object(g));
        self
    }

    fn keep(&mut self, v: Result<Value, BuildError>, at: &str) -> Option<Value> {
        match v {
            Ok(v) => Some(v),
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e.under(at));
                }
                None
            }
        }
    }

    /// Checks everything the SDK can check and returns the deposit, or the
    /// first rule broken, with the problem code and JSON pointer the vault
    /// would have answered with.
    pub fn build(self) -> Result<Deposit, BuildError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut body = Map::new();
        body.insert("external_ref".into(), Value::from(self.external_ref));
        body.insert("purpose".into(), to_value(self.purpose));
        for (name, group) in [
            ("consent", self.consent),
            ("applicant", self.applicant),
            ("device", self.device),
            ("risk", self.risk),
        ] {
            if let Some(v) = group {
                body.insert(name.into(), v);
            }
        }
        if !self.grants.is_empty() {
            body.insert("grants".into(), Value::Array(self.grants));
        }
        let request: DepositRequest = parse(Value::Object(body))?;
        Deposit::try_from(request)
    }
}

/// Something that becomes record group `G` of a deposit: its builder, or the
/// typed record itself (e.g. deserialised from the platform's own JSON).
pub trait IntoGroup<G>: sealed::Sealed<G> {
    /// The group as JSON, or the first rule its builder already knows is
    /// broken.
    fn into_json(self) -> Result<Value, BuildError>;
}

mod sealed {
    pub trait Sealed<G> {}
    impl Sealed<dzl_types::Applicant> for super::ApplicantBuilder {}
    impl Sealed<dzl_types::Applicant> for dzl_types::Applicant {}
    impl Sealed<dzl_types::Device> for super::DeviceBuilder {}
    impl Sealed<dzl_types::Device> for dzl_types::Device {}
    impl Sealed<dzl_types::Risk> for super::RiskBuilder {}
    impl Sealed<dzl_types::Risk> for dzl_types::Risk {}
}

macro_rules! typed_group {
    ($t:ty) => {
        impl IntoGroup<$t> for $t {
            fn into_json(self) -> Result<Value, BuildError> {
                serde_json::to_value(&self)
                    .map_err(|_| BuildError::invalid("", "the record does not serialise"))
            }
        }
    };
}
typed_group!(Applicant);
typed_group!(Device);
typed_group!(Risk);

/// The applicant's consent, as the platform recorded it.
#[derive(Debug, Clone)]
#[must_use = "pass it to DepositBuilder::consent"]
pub struct ConsentBuilder {
    fields: Map<String, Value>,
}

impl ConsentBuilder {
    /// The platform's consent record id (1–64 printable ASCII characters),
    /// the groups consented to, and when the consent was given and until
    /// when it holds. The evidence hash is set with
    /// [`ConsentBuilder::evidence`] or [`ConsentBuilder::evidence_sha256`].
    pub fn new(
        consent_id: impl Into<String>,
        scopes: ScopeSet,
        granted_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Self {
        let mut fields = Map::new();
        fields.insert("consent_id".into(), Value::from(consent_id.into()));
        fields.insert("granted_at".into(), to_value(granted_at));
        fields.insert("expires_at".into(), to_value(expires_at));
        fields.insert("scopes".into(), to_value(scopes));
        ConsentBuilder { fields }
    }

    /// The signed consent text (or document) itself: the SDK stores its
    /// SHA-256 as `evidence_sha256`; the text never leaves the platform.
    pub fn evidence(self, signed_consent: impl AsRef<[u8]>) -> Self {
        let hex = dzl_crypto::sha256_hex(signed_consent.as_ref());
        self.evidence_sha256(hex)
    }

    /// The SHA-256 of the signed consent text, as 64 lowercase hex
    /// characters.
    pub fn evidence_sha256(mut self, hex: impl Into<String>) -> Self {
        self.fields
            .insert("evidence_sha256".into(), Value::from(hex.into()));
        self
    }

    fn into_json(self) -> Value {
        Value::Object(self.fields)
    }
}

macro_rules! setters {
    ($builder:ident { $($(#[$m:meta])* $name:ident: $ty:ty => $conv:expr;)* }) => {
        impl $builder {
            $(
                $(#[$m])*
                pub fn $name(mut self, value: $ty) -> Self {
                    #[allow(clippy::redundant_closure_call)]
                    let v: Value = ($conv)(value);
                    self.fields.insert(stringify!($name).into(), v);
                    self
                }
            )*
        }
    };
}

fn text(s: impl Into<String>) -> Value {
    Value::from(s.into())
}

/// Builds an [`Applicant`] (the identity group).
#[derive(Debug, Clone)]
#[must_use = "pass it to DepositBuilder::applicant"]
pub struct ApplicantBuilder {
    fields: Map<String, Value>,
}

impl ApplicantBuilder {
    /// The required fields: name (1–64 characters), id type and number (a
    /// `resident_id` is checked: 18 characters, real birth date, GB 11643
    /// check digit), mainland mobile phone (11 digits, `1[3-9]…`).
    pub fn new(
        name: impl Into<String>,
        id_type: IdType,
        id_number: impl Into<String>,
        phone: impl Into<String>,
    ) -> Self {
        let mut fields = Map::new();
        fields.insert("name".into(), text(name));
        fields.insert("id_type".into(), to_value(id_type));
        fields.insert("id_number".into(), text(id_number));
        fields.insert("phone".into(), text(phone));
        ApplicantBuilder { fields }
    }

    /// Checks the group on its own, as the vault would.
    pub fn build(self) -> Result<Applicant, BuildError> {
        parse(Value::Object(self.fields))
    }
}

setters!(ApplicantBuilder {
    /// Address on the identity document (1–200 characters).
    id_address: &str => text;
    /// Current residence (1–200 characters).
    residence_address: &str => text;
    /// Gender.
    gender: Gender => to_value;
    /// Highest education completed.
    education: Education => to_value;
    /// Marital status.
    marital_status: MaritalStatus => to_value;
    /// Employer's name (1–100 characters).
    employer: &str => text;
    /// Monthly income in fen (at most 10^12).
    monthly_income_fen: u64 => Value::from;
});

impl IntoGroup<Applicant> for ApplicantBuilder {
    fn into_json(self) -> Result<Value, BuildError> {
        Ok(Value::Object(self.fields))
    }
}

/// Builds a [`Device`] (the device group).
#[derive(Debug, Clone)]
#[must_use = "pass it to DepositBuilder::device"]
pub struct DeviceBuilder {
    fields: Map<String, Value>,
}

impl DeviceBuilder {
    /// The required fields: device id (1–128 printable ASCII, no spaces),
    /// OS family, IP address (IPv4 or IPv6).
    pub fn new(device_id: impl Into<String>, os: Os, ip: impl Into<String>) -> Self {
        let mut fields = Map::new();
        fields.insert("device_id".into(), text(device_id));
        fields.insert("os".into(), to_value(os));
        fields.insert("ip".into(), text(ip));
        DeviceBuilder { fields }
    }

    /// Checks the group on its own, as the vault would.
    pub fn build(self) -> Result<Device, BuildError> {
        parse(Value::Object(self.fields))
    }
}

setters!(DeviceBuilder {
    /// OS version (1–32 printable ASCII).
    os_version: &str => text;
    /// Device model (1–64 characters).
    model: &str => text;
    /// App version (1–32 printable ASCII, no spaces).
    app_version: &str => text;
    /// Network type.
    network: Network => to_value;
    /// User agent (1–512 printable ASCII).
    user_agent: &str => text;
});

impl IntoGroup<Device> for DeviceBuilder {
    fn into_json(self) -> Result<Value, BuildError> {
        Ok(Value::Object(self.fields))
    }
}

/// Builds a [`Risk`] (the risk group).
#[derive(Debug, Clone)]
#[must_use = "pass it to DepositBuilder::risk"]
pub struct RiskBuilder {
    fields: Map<String, Value>,
    error: Option<BuildError>,
}

impl RiskBuilder {
    /// The required score, 0–1000.
    pub fn new(score: u16) -> Self {
        let mut fields = Map::new();
        fields.insert("score".into(), Value::from(score));
        RiskBuilder {
            fields,
            error: None,
        }
    }

    /// Adds a tag (`[a-z0-9][a-z0-9_:.-]{0,63}`; at most 32, no repeats).
    pub fn tag(mut self, tag: &str) -> Self {
        let tags = self
            .fields
            .entry("tags")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = tags {
            a.push(Value::from(tag));
        }
        self
    }

    /// Adds a named feature (`[a-z][a-z0-9_]{0,63}`; at most 256) with a
    /// finite value.
    pub fn feature(mut self, name: &str, value: f64) -> Self {
        match Number::from_f64(value) {
            Some(n) => self.insert_feature(name, n),
            None => {
                let at = format!("/features/{name}");
                self.error
                    .get_or_insert_with(|| BuildError::invalid(&at, "must be a finite number"));
            }
        }
        self
    }

    /// Adds a named feature with an integer value.
    pub fn feature_int(mut self, name: &str, value: i64) -> Self {
        self.insert_feature(name, Number::from(value));
        self
    }

    fn insert_feature(&mut self, name: &str, n: Number) {
        let features = self
            .fields
            .entry("features")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = features {
            m.insert(name.to_owned(), Value::Number(n));
        }
    }

    /// Checks the group on its own, as the vault would.
    pub fn build(self) -> Result<Risk, BuildError> {
        let v = IntoGroup::<Risk>::into_json(self)?;
        parse(v)
    }
}

setters!(RiskBuilder {
    /// Grade: an upper-case letter and up to 7 of `A-Z0-9+-`.
    grade: &str => text;
    /// The risk model's version (1–64 printable ASCII, no spaces).
    model_version: &str => text;
});

impl IntoGroup<Risk> for RiskBuilder {
    fn into_json(self) -> Result<Value, BuildError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(Value::Object(self.fields)),
        }
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    // Enums, scope sets and timestamps always serialise.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Deserialises `v` as the vault deserialises a body: the same types, and
/// the same JSON pointer and message rules for the first error.
fn parse<T: DeserializeOwned>(v: Value) -> Result<T, BuildError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let d = dzl_types::input::describe(e.path(), e.inner());
        BuildError::invalid(&d.pointer, d.message)
    })
}

/// The vault's checks of a deposit before it stores anything, that need no
/// knowledge of other tenants: the very function the vault runs
/// (`dzl_types::rules::check_deposit`), with the longest lifetime any vault
/// accepts.
fn check_deposit(d: &DepositRequest, now: DateTime<Utc>) -> Result<(), BuildError> {
    let skew = chrono::Duration::seconds(dzl_types::signing::MAX_SKEW_SECS);
    let ttl = dzl_types::rules::TtlPolicy {
        default_seconds: 1,
        max_seconds: MAX_TTL_SECONDS,
    };
    dzl_types::rules::check_deposit(d, now, skew, ttl)
        .map(|_| ())
        .map_err(BuildError::from)
}

impl BuildError {
    /// The same error, its pointer placed under `prefix`.
    fn under(self, prefix: &str) -> BuildError {
        let field = format!("{prefix}{}", self.field());
        BuildError::new(self.code(), &field, self.detail().to_owned())
    }
}
