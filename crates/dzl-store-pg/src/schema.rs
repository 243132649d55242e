//! Versioned migrations. [`crate::PgStore::connect`] applies the missing
//! ones in one transaction under `pg_advisory_xact_lock`, recording each in
//! `dzl.schema_migrations`, so two replicas starting together migrate once:
//! the second waits for the first's commit, then finds nothing to do.
//!
//! The tables mirror the SQLite schema (`dzl_store::sqlite`), with BIGINT
//! millisecond timestamps, BYTEA for ciphertext and wrapped keys, and TEXT
//! with CHECKs for states; where they differ (the audit trail's several
//! chains, the usage counters' writer column, the subject index on
//! `deposits`), [`crate::rows`] says why. The identity group lives in its own
//! schema, `dzl_identity`. Migrations are append-only: a released one never
//! changes, a change is a new one.

use postgres::Client;

use dzl_store::{StoreError, StoreResult};

use crate::map_pg;

/// The advisory lock key of migrations (`"dzl-migr"` as an integer).
const MIGRATION_LOCK: i64 = 0x647a_6c2d_6d69_6772;

/// One migration: its version, a name for the record, and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// From 1, without gaps.
    pub version: i32,
    /// What it does.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "vault schema",
        sql: r#"
        CREATE SCHEMA IF NOT EXISTS dzl_identity;

        CREATE TABLE dzl.meta (
            key   TEXT PRIMARY KEY,
            value BIGINT NOT NULL
        );
        INSERT INTO dzl.meta (key, value) VALUES ('generation', 1);

        CREATE TABLE dzl.keks (
            version     INTEGER PRIMARY KEY CHECK (version > 0),
            state       TEXT NOT NULL CHECK (state IN ('active', 'decrypt_only', 'retired')),
            wrapped     BYTEA NOT NULL,
            created_at  BIGINT NOT NULL,
            retired_at  BIGINT
        );
        CREATE UNIQUE INDEX keks_one_active ON dzl.keks (state) WHERE state = 'active';

        CREATE TABLE dzl.sealed_secrets (
            name        TEXT PRIMARY KEY,
            kek_version INTEGER NOT NULL,
            sealed      BYTEA NOT NULL,
            public      TEXT,
            created_at  BIGINT NOT NULL
        );

        CREATE TABLE dzl.tenants (
            id                 TEXT PRIMARY KEY,
            kind               TEXT NOT NULL CHECK (kind IN ('platform', 'funder', 'operator')),
            name               TEXT NOT NULL,
            key_id             TEXT NOT NULL UNIQUE,
            secret_kek_version INTEGER NOT NULL,
            secret_sealed      BYTEA NOT NULL,
            scopes             TEXT,
            purposes           TEXT NOT NULL,
            rate_limit         BIGINT NOT NULL CHECK (rate_limit > 0),
            state              TEXT NOT NULL CHECK (state IN ('active', 'suspended')),
            created_at         BIGINT NOT NULL,
            updated_at         BIGINT NOT NULL,
            previous_secret_kek_version INTEGER,
            previous_secret_sealed      BYTEA,
            previous_secret_valid_until BIGINT,
            CONSTRAINT tenants_previous_secret_whole CHECK (
                (previous_secret_kek_version IS NULL) = (previous_secret_sealed IS NULL)
                AND (previous_secret_sealed IS NULL) = (previous_secret_valid_until IS NULL))
        );
        CREATE INDEX tenants_secret_version ON dzl.tenants (secret_kek_version);

        CREATE TABLE dzl.deposits (
            id              TEXT PRIMARY KEY,
            platform_id     TEXT NOT NULL,
            external_ref    TEXT NOT NULL,
            purpose         TEXT NOT NULL CHECK (purpose IN ('credit_application', 'drawdown')),
            consent         TEXT NOT NULL,
            consent_scopes  TEXT NOT NULL,
            consent_expires BIGINT NOT NULL,
            groups          TEXT NOT NULL,
            subject_index   TEXT NOT NULL,
            subject_ref     TEXT NOT NULL,
            state           TEXT NOT NULL CHECK (state IN ('active', 'erased')),
            created_at      BIGINT NOT NULL,
            erased_at       BIGINT,
            CONSTRAINT deposits_external_ref_unique UNIQUE (platform_id, external_ref)
        );
        CREATE INDEX deposits_subject ON dzl.deposits (subject_index);
        CREATE INDEX deposits_active_created ON dzl.deposits (created_at) WHERE state = 'active';

        -- The data key of the non-identity groups.
        CREATE TABLE dzl.data_keys (
            deposit_id  TEXT PRIMARY KEY,
            kek_version INTEGER NOT NULL,
            wrapped     BYTEA NOT NULL
        );
        CREATE INDEX data_keys_version ON dzl.data_keys (kek_version, deposit_id);

        -- The non-identity groups; the applicant group cannot land here.
        CREATE TABLE dzl.records (
            deposit_id  TEXT NOT NULL,
            grp         TEXT NOT NULL CHECK (grp IN ('device', 'risk')),
            envelope    BYTEA NOT NULL,
            PRIMARY KEY (deposit_id, grp)
        );

        -- A code embeds its row key.
        CREATE TABLE dzl.codes (
            row         BIGSERIAL PRIMARY KEY,
            code_id     TEXT NOT NULL UNIQUE,
            secret_hash BYTEA NOT NULL,
            deposit_id  TEXT NOT NULL,
            platform_id TEXT NOT NULL,
            funder_id   TEXT NOT NULL,
            scopes      TEXT NOT NULL,
            purpose     TEXT NOT NULL,
            state       TEXT NOT NULL CHECK (state IN ('issued', 'redeemed', 'revoked', 'expired')),
            created_at  BIGINT NOT NULL,
            expires_at  BIGINT NOT NULL,
            redeemed_at BIGINT,
            revoked_at  BIGINT
        );
        CREATE INDEX codes_deposit ON dzl.codes (deposit_id);
        CREATE INDEX codes_issued_expiry ON dzl.codes (expires_at) WHERE state = 'issued';

        CREATE TABLE dzl.redemptions (
            id          TEXT PRIMARY KEY,
            code_row    BIGINT NOT NULL UNIQUE,
            code_id     TEXT NOT NULL,
            deposit_id  TEXT NOT NULL,
            platform_id TEXT NOT NULL,
            funder_id   TEXT NOT NULL,
            purpose     TEXT NOT NULL,
            scopes      TEXT NOT NULL,
            redeemed_at BIGINT NOT NULL,
            decision    TEXT CHECK (decision IN ('approved', 'declined', 'withdrawn')),
            amount_fen  BIGINT,
            reported_at BIGINT
        );
        CREATE INDEX redemptions_deposit ON dzl.redemptions (deposit_id);

        CREATE TABLE dzl.audit (
            seq            BIGINT PRIMARY KEY,
            at             TEXT NOT NULL,
            actor          TEXT NOT NULL,
            operation      TEXT NOT NULL,
            result         TEXT NOT NULL,
            purpose        TEXT,
            deposit_id     TEXT,
            code_id        TEXT,
            redemption_id  TEXT,
            subject_tenant TEXT,
            groups         TEXT,
            detail         TEXT,
            prev_hash      TEXT NOT NULL,
            hash           TEXT NOT NULL
        );
        CREATE TABLE dzl.audit_head (
            id   INTEGER PRIMARY KEY CHECK (id = 1),
            seq  BIGINT NOT NULL,
            hash TEXT NOT NULL
        );
        INSERT INTO dzl.audit_head (id, seq, hash)
            VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
        CREATE FUNCTION dzl.audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the audit trail is append-only';
        END;
        $$;
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON dzl.audit
            FOR EACH ROW EXECUTE FUNCTION dzl.audit_append_only();
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON dzl.audit
            FOR EACH ROW EXECUTE FUNCTION dzl.audit_append_only();
        CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON dzl.audit
            FOR EACH STATEMENT EXECUTE FUNCTION dzl.audit_append_only();

        CREATE TABLE dzl.usage (
            day        TEXT NOT NULL,
            tenant_id  TEXT NOT NULL,
            operation  TEXT NOT NULL,
            outcome    TEXT NOT NULL,
            calls      BIGINT NOT NULL,
            PRIMARY KEY (day, tenant_id, operation, outcome)
        );

        -- The applicant group and its data key, apart (GB/T 35273 §6.2).
        CREATE TABLE dzl_identity.identities (
            deposit_id  TEXT PRIMARY KEY,
            kek_version INTEGER NOT NULL,
            wrapped_key BYTEA NOT NULL,
            envelope    BYTEA NOT NULL
        );
        CREATE INDEX identities_version ON dzl_identity.identities (kek_version, deposit_id);
        "#,
    },
    Migration {
        version: 2,
        name: "guards shared by replicas",
        sql: r#"
        -- Nonces seen within the skew window. Unlogged: fast, and emptied
        -- if the database crashes (see PgGuards).
        CREATE UNLOGGED TABLE dzl.nonces (
            key_id  TEXT NOT NULL,
            nonce   TEXT NOT NULL,
            seen_at BIGINT NOT NULL,
            PRIMARY KEY (key_id, nonce)
        );
        CREATE INDEX nonces_seen ON dzl.nonces (seen_at);

        -- One token bucket per tenant (request rate limits).
        CREATE UNLOGGED TABLE dzl.rate_buckets (
            tenant_id TEXT PRIMARY KEY,
            tokens    DOUBLE PRECISION NOT NULL,
            last_at   DOUBLE PRECISION NOT NULL,
            granted   BOOLEAN NOT NULL
        );

        -- Failed redemptions (unknown codes) per funder, per minute and hour.
        CREATE TABLE dzl.failure_windows (
            tenant_id    TEXT PRIMARY KEY,
            minute_start BIGINT NOT NULL,
            minute_count INTEGER NOT NULL,
            hour_start   BIGINT NOT NULL,
            hour_count   INTEGER NOT NULL
        );
        "#,
    },
    Migration {
        version: 3,
        name: "client certificate pins",
        sql: r#"
        -- `sha256:<hex>` or `subject:<DN>` (dzl_crypto::CertPin's stored form).
        ALTER TABLE dzl.tenants ADD COLUMN cert_pin TEXT;
        "#,
    },
    Migration {
        version: 4,
        name: "one audit chain per writer, one row per deposit's records",
        sql: r#"
        -- The audit trail becomes one hash chain per writer: entries are
        -- keyed (chain, seq), every chain has its head row, and the single
        -- head every writer locked is gone. The existing trail is chain 1.
        ALTER TABLE dzl.audit ADD COLUMN chain BIGINT NOT NULL DEFAULT 1;
        ALTER TABLE dzl.audit DROP CONSTRAINT audit_pkey;
        ALTER TABLE dzl.audit ADD PRIMARY KEY (chain, seq);
        ALTER TABLE dzl.audit ALTER COLUMN chain DROP DEFAULT;
        CREATE TABLE dzl.audit_chains (
            chain      BIGINT PRIMARY KEY CHECK (chain > 0),
            seq        BIGINT NOT NULL,
            hash       TEXT NOT NULL,
            created_at BIGINT NOT NULL
        );
        INSERT INTO dzl.audit_chains (chain, seq, hash, created_at)
            SELECT 1, seq, hash, 0 FROM dzl.audit_head;
        DROP TABLE dzl.audit_head;

        -- Each writer counts calls in rows of its own.
        ALTER TABLE dzl.usage ADD COLUMN chain BIGINT NOT NULL DEFAULT 1;
        ALTER TABLE dzl.usage DROP CONSTRAINT usage_pkey;
        ALTER TABLE dzl.usage ADD PRIMARY KEY (day, tenant_id, operation, outcome, chain);
        ALTER TABLE dzl.usage ALTER COLUMN chain DROP DEFAULT;

        -- A deposit's data key and its sealed non-identity groups share a row.
        CREATE TABLE dzl.deposit_records (
            deposit_id  TEXT PRIMARY KEY,
            kek_version INTEGER NOT NULL,
            wrapped_key BYTEA NOT NULL,
            device      BYTEA,
            risk        BYTEA
        );
        INSERT INTO dzl.deposit_records (deposit_id, kek_version, wrapped_key, device, risk)
            SELECT k.deposit_id, k.kek_version, k.wrapped,
                (SELECT envelope FROM dzl.records r WHERE r.deposit_id = k.deposit_id AND r.grp = 'device'),
                (SELECT envelope FROM dzl.records r WHERE r.deposit_id = k.deposit_id AND r.grp = 'risk')
            FROM dzl.data_keys k;
        CREATE INDEX deposit_records_version ON dzl.deposit_records (kek_version, deposit_id);
        DROP TABLE dzl.data_keys;
        DROP TABLE dzl.records;

        -- A code names its redemption; a deposit's redemptions are found
        -- through its codes, so no index is kept in redemption order.
        ALTER TABLE dzl.codes ADD COLUMN redemption_id TEXT;
        UPDATE dzl.codes c SET redemption_id = r.id
            FROM dzl.redemptions r WHERE r.code_row = c.row;
        DROP INDEX dzl.redemptions_deposit;
        ALTER TABLE dzl.redemptions DROP CONSTRAINT redemptions_code_row_key;

        -- Token buckets are taken from a batch of requests at a time.
        ALTER TABLE dzl.rate_buckets
            ADD COLUMN rate DOUBLE PRECISION NOT NULL DEFAULT 1,
            ADD COLUMN wanted INTEGER NOT NULL DEFAULT 0,
            ADD COLUMN taken INTEGER NOT NULL DEFAULT 0;

        -- Nonces of requests signed ahead of a server's clock.
        CREATE TABLE dzl.nonces_ahead (
            key_id TEXT NOT NULL,
            nonce  TEXT NOT NULL,
            until  BIGINT NOT NULL,
            PRIMARY KEY (key_id, nonce)
        );
        "#,
    },
    Migration {
        version: 5,
        name: "cipher suites",
        sql: r#"
        -- Each KEK version is of a suite; the vault's is its active
        -- version's. Each deposit is sealed in a suite (data keys, groups,
        -- subject index), so `keys reseal` finds the other suite's. An
        -- audit entry chained with SM3 says so; one that says nothing is
        -- SHA-256. Everything stored before is `intl` and SHA-256. A
        -- constant default rewrites no row (the CHECKs read each once).
        ALTER TABLE dzl.keks ADD COLUMN suite TEXT NOT NULL DEFAULT 'intl'
            CHECK (suite IN ('intl', 'gm'));
        ALTER TABLE dzl.deposits ADD COLUMN suite TEXT NOT NULL DEFAULT 'intl'
            CHECK (suite IN ('intl', 'gm'));
        ALTER TABLE dzl.audit ADD COLUMN alg TEXT CHECK (alg = 'sm3');
        "#,
    },
];

/// The schema version this build brings a database to.
pub fn current_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the schema up to date: one transaction, under an advisory lock,
/// applying each missing migration and recording it.
pub(crate) fn migrate(client: &mut Client) -> StoreResult<()> {
    migrate_in(client).map_err(|e| match e {
        Migrating::Db(e) => map_pg(e),
        Migrating::Newer(e) => e,
    })
}

enum Migrating {
    Db(postgres::Error),
    Newer(StoreError),
}

impl From<postgres::Error> for Migrating {
    fn from(e: postgres::Error) -> Self {
        Migrating::Db(e)
    }
}

fn migrate_in(client: &mut Client) -> Result<(), Migrating> {
    let mut tx = client.transaction()?;
    // Migrations take longer than requests may.
    tx.batch_execute("SET LOCAL statement_timeout = 0")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // No DDL unless needed, so a runtime role without CREATE on the
    // database can connect to a schema its owner has brought up to date.
    let tracked: bool = tx
        .query_one(
            "SELECT to_regclass('dzl.schema_migrations') IS NOT NULL",
            &[],
        )?
        .try_get(0)?;
    if !tracked {
        tx.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS dzl;
             CREATE TABLE dzl.schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );",
        )?;
    }
    let applied: Vec<i32> = tx
        .query(
            "SELECT version FROM dzl.schema_migrations ORDER BY version",
            &[],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if let Some(newest) = applied.last() {
        if *newest > current_version() {
            return Err(Migrating::Newer(StoreError::Invalid(format!(
                "the database schema is version {newest}, newer than this build's {}: upgrade dzl-vault",
                current_version()
            ))));
        }
    }
    for m in MIGRATIONS {
        if applied.contains(&m.version) {
            continue;
        }
        log::info!("applying schema migration {} ({})", m.version, m.name);
        tx.batch_execute(m.sql)?;
        tx.execute(
            "INSERT INTO dzl.schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )?;
    }
    tx.commit()?;
    Ok(())
}
