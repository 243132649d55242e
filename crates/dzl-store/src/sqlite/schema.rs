//! Versioned migrations (`PRAGMA user_version`), run once at open.

use rusqlite::Connection;

use crate::StoreResult;

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('generation', 1);

    CREATE TABLE keks (
        version     INTEGER PRIMARY KEY,
        state       TEXT NOT NULL CHECK (state IN ('active', 'decrypt_only', 'retired')),
        wrapped     BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        retired_at  INTEGER
    );
    CREATE UNIQUE INDEX keks_one_active ON keks (state) WHERE state = 'active';

    CREATE TABLE sealed_secrets (
        name        TEXT PRIMARY KEY,
        kek_version INTEGER NOT NULL,
        sealed      BLOB NOT NULL,
        public      TEXT,
        created_at  INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE tenants (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL CHECK (kind IN ('platform', 'funder', 'operator')),
        name        TEXT NOT NULL,
        key_id      TEXT NOT NULL UNIQUE,
        secret_kek_version INTEGER NOT NULL,
        secret_sealed BLOB NOT NULL,
        scopes      TEXT,
        purposes    TEXT NOT NULL,
        rate_limit  INTEGER NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('active', 'suspended')),
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE deposits (
        id              TEXT PRIMARY KEY,
        platform_id     TEXT NOT NULL,
        external_ref    TEXT NOT NULL,
        purpose         TEXT NOT NULL,
        consent         TEXT NOT NULL,
        consent_scopes  TEXT NOT NULL,
        consent_expires INTEGER NOT NULL,
        groups          TEXT NOT NULL,
        subject_index   TEXT NOT NULL,
        subject_ref     TEXT NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('active', 'erased')),
        created_at      INTEGER NOT NULL,
        erased_at       INTEGER,
        UNIQUE (platform_id, external_ref)
    ) WITHOUT ROWID;
    CREATE INDEX deposits_subject ON deposits (subject_index);

    CREATE TABLE data_keys (
        deposit_id  TEXT PRIMARY KEY,
        kek_version INTEGER NOT NULL,
        wrapped     BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX data_keys_version ON data_keys (kek_version);

    CREATE TABLE records (
        deposit_id  TEXT NOT NULL,
        grp         TEXT NOT NULL,
        envelope    BLOB NOT NULL,
        PRIMARY KEY (deposit_id, grp)
    ) WITHOUT ROWID;

    CREATE TABLE codes (
        row         INTEGER PRIMARY KEY,
        code_id     TEXT NOT NULL UNIQUE,
        secret_hash BLOB NOT NULL,
        deposit_id  TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        funder_id   TEXT NOT NULL,
        scopes      TEXT NOT NULL,
        purpose     TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('issued', 'redeemed', 'revoked')),
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        redeemed_at INTEGER,
        revoked_at  INTEGER
    );
    CREATE INDEX codes_deposit ON codes (deposit_id);

    CREATE TABLE redemptions (
        id          TEXT PRIMARY KEY,
        code_row    INTEGER NOT NULL UNIQUE,
        code_id     TEXT NOT NULL,
        deposit_id  TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        funder_id   TEXT NOT NULL,
        purpose     TEXT NOT NULL,
        scopes      TEXT NOT NULL,
        redeemed_at INTEGER NOT NULL,
        decision    TEXT,
        amount_fen  INTEGER,
        reported_at INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX redemptions_deposit ON redemptions (deposit_id);

    CREATE TABLE audit (
        seq            INTEGER PRIMARY KEY,
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
    CREATE TABLE audit_head (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        seq  INTEGER NOT NULL,
        hash TEXT NOT NULL
    );
    INSERT INTO audit_head (id, seq, hash)
        VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;

    CREATE TABLE usage (
        day        TEXT NOT NULL,
        tenant_id  TEXT NOT NULL,
        operation  TEXT NOT NULL,
        outcome    TEXT NOT NULL,
        calls      INTEGER NOT NULL,
        PRIMARY KEY (day, tenant_id, operation, outcome)
    ) WITHOUT ROWID;

    CREATE TABLE ident.identities (
        deposit_id  TEXT PRIMARY KEY,
        kek_version INTEGER NOT NULL,
        wrapped_key BLOB NOT NULL,
        envelope    BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX ident.identities_version ON identities (kek_version);
    ",
];

/// Brings the schema up to date in one transaction, reading the version
/// inside it so two processes opening a new store at once cannot both migrate.
pub(crate) fn migrate(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| -> StoreResult<()> {
        let current: i64 = conn.query_row("PRAGMA main.user_version", [], |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version > current {
                conn.execute_batch(sql)?;
                conn.execute_batch(&format!("PRAGMA main.user_version = {version}"))?;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
