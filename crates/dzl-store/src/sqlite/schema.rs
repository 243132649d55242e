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
    // 2: operator lifecycle. Codes may be stored as 'expired' (by `purge`),
    // so the table is rebuilt with the wider CHECK (SQLite cannot alter
    // one), keeping every row number, which codes embed. Tenants keep their
    // previous signing secret during a rotation's overlap. Indexes for the
    // purge's two sweeps.
    "
    CREATE TABLE codes_v2 (
        row         INTEGER PRIMARY KEY,
        code_id     TEXT NOT NULL UNIQUE,
        secret_hash BLOB NOT NULL,
        deposit_id  TEXT NOT NULL,
        platform_id TEXT NOT NULL,
        funder_id   TEXT NOT NULL,
        scopes      TEXT NOT NULL,
        purpose     TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('issued', 'redeemed', 'revoked', 'expired')),
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        redeemed_at INTEGER,
        revoked_at  INTEGER
    );
    INSERT INTO codes_v2 (row, code_id, secret_hash, deposit_id, platform_id, funder_id, scopes,
            purpose, state, created_at, expires_at, redeemed_at, revoked_at)
        SELECT row, code_id, secret_hash, deposit_id, platform_id, funder_id, scopes,
            purpose, state, created_at, expires_at, redeemed_at, revoked_at FROM codes;
    DROP TABLE codes;
    ALTER TABLE codes_v2 RENAME TO codes;
    CREATE INDEX codes_deposit ON codes (deposit_id);
    CREATE INDEX codes_issued_expiry ON codes (expires_at) WHERE state = 'issued';
    CREATE INDEX deposits_active_created ON deposits (created_at) WHERE state = 'active';

    ALTER TABLE tenants ADD COLUMN previous_secret_kek_version INTEGER;
    ALTER TABLE tenants ADD COLUMN previous_secret_sealed BLOB;
    ALTER TABLE tenants ADD COLUMN previous_secret_valid_until INTEGER;
    ",
    // 3: a tenant may be pinned to its client certificate (`sha256:<hex>`
    // or `subject:<DN>`, dzl_crypto::CertPin's stored form).
    "ALTER TABLE tenants ADD COLUMN cert_pin TEXT;",
    // 4: subjects are found through runs, not one index over all deposits
    // (ops::SUBJECT_RUN_SHIFT). Each deposit files (run, subject_index,
    // deposit_id); the deposits already stored form run 0, copied in the
    // old index's order so the copy appends.
    "
    CREATE TABLE deposit_subjects (
        run           INTEGER NOT NULL,
        subject_index TEXT NOT NULL,
        deposit_id    TEXT NOT NULL,
        PRIMARY KEY (run, subject_index, deposit_id)
    ) WITHOUT ROWID;
    INSERT INTO deposit_subjects (run, subject_index, deposit_id)
        SELECT 0, subject_index, id FROM deposits ORDER BY subject_index, id;
    DROP INDEX deposits_subject;
    ",
    // 5: a redemption is found through its code, not through indexes kept
    // in redemption order. Funders redeem codes in no particular order, so
    // `redemptions_deposit` and the UNIQUE index on `code_row` took each
    // insert to a random leaf: a page apiece per redemption, and at ten
    // million redemptions indexes beyond the cache (docs/performance.md).
    // The code's row, which the redemption updates anyway, now names its
    // redemption; a deposit's redemptions are its codes' (`codes_deposit`).
    // One redemption per code: the conditional update that redeems, and
    // the trigger, which refuses to rename a code's redemption. Codes are
    // linked in row order, through the old `code_row` index, which reads
    // both in order; the copy reads `redemptions` in key order, so it
    // appends.
    "
    ALTER TABLE codes ADD COLUMN redemption_id TEXT;
    UPDATE codes SET redemption_id = (SELECT id FROM redemptions WHERE code_row = codes.row)
        WHERE EXISTS (SELECT 1 FROM redemptions WHERE code_row = codes.row);
    CREATE TRIGGER codes_one_redemption BEFORE UPDATE OF redemption_id ON codes
        WHEN OLD.redemption_id IS NOT NULL
        BEGIN SELECT RAISE(ABORT, 'a code is redeemed once'); END;

    CREATE TABLE redemptions_v5 (
        id          TEXT PRIMARY KEY,
        code_row    INTEGER NOT NULL,
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
    INSERT INTO redemptions_v5 (id, code_row, code_id, deposit_id, platform_id, funder_id,
            purpose, scopes, redeemed_at, decision, amount_fen, reported_at)
        SELECT id, code_row, code_id, deposit_id, platform_id, funder_id,
            purpose, scopes, redeemed_at, decision, amount_fen, reported_at
        FROM redemptions ORDER BY id;
    DROP TABLE redemptions;
    ALTER TABLE redemptions_v5 RENAME TO redemptions;
    ",
    // 6: a deposit's data key and its sealed non-identity groups share one
    // row, so a deposit writes one row where it wrote three. Guards that
    // must survive a restart: a funder's failed redemptions (throttle and
    // suspension windows), and the nonces of requests signed ahead of the
    // server's clock.
    "
    CREATE TABLE deposit_records (
        deposit_id  TEXT PRIMARY KEY,
        kek_version INTEGER NOT NULL,
        wrapped_key BLOB NOT NULL,
        device      BLOB,
        risk        BLOB
    ) WITHOUT ROWID;
    INSERT INTO deposit_records (deposit_id, kek_version, wrapped_key, device, risk)
        SELECT k.deposit_id, k.kek_version, k.wrapped,
            (SELECT envelope FROM records r WHERE r.deposit_id = k.deposit_id AND r.grp = 'device'),
            (SELECT envelope FROM records r WHERE r.deposit_id = k.deposit_id AND r.grp = 'risk')
        FROM data_keys k ORDER BY k.deposit_id;
    CREATE INDEX deposit_records_version ON deposit_records (kek_version);
    DROP TABLE data_keys;
    DROP TABLE records;

    CREATE TABLE failure_windows (
        tenant_id    TEXT PRIMARY KEY,
        minute_start INTEGER NOT NULL,
        minute_count INTEGER NOT NULL,
        hour_start   INTEGER NOT NULL,
        hour_count   INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE nonces (
        key_id TEXT NOT NULL,
        nonce  TEXT NOT NULL,
        until  INTEGER NOT NULL,
        PRIMARY KEY (key_id, nonce)
    ) WITHOUT ROWID;
    ",
    // 7: cipher suites. Each KEK version is of a suite, `intl` or `gm`;
    // the vault's suite is its active version's. Each deposit is sealed in
    // a suite (its data keys, groups and subject index), so `keys reseal`
    // finds the deposits of the other one. An audit entry chained with SM3
    // says so; one that says nothing is SHA-256. Everything stored before
    // is `intl` and SHA-256. Adding a column with a default rewrites no
    // row.
    "
    ALTER TABLE keks ADD COLUMN suite TEXT NOT NULL DEFAULT 'intl'
        CHECK (suite IN ('intl', 'gm'));
    ALTER TABLE deposits ADD COLUMN suite TEXT NOT NULL DEFAULT 'intl'
        CHECK (suite IN ('intl', 'gm'));
    ALTER TABLE audit ADD COLUMN alg TEXT CHECK (alg = 'sm3');
    ",
];

/// Tables of `identity.db` made sure of at every open, after the
/// migrations: `IF NOT EXISTS` makes each idempotent. A versioned migration
/// of both files would commit `vault.db`'s version and `identity.db`'s
/// table one after the other, and a crash between the two would leave a
/// store at the new version without the table.
///
/// `shredded`: the deposits whose identity row a crypto-shredding deleted
/// (an erasure, a purge), newest last, in the same transaction as the
/// deletion. A power cut can keep that `identity.db` half of the
/// transaction and lose the `vault.db` half, leaving an active deposit of
/// any age without its identity row; `recover` finds it here.
const IDENTITY_TABLES: &str = "
    CREATE TABLE IF NOT EXISTS ident.shredded (
        seq        INTEGER PRIMARY KEY,
        deposit_id TEXT NOT NULL
    );
";

/// Brings the schema up to date: the versioned migrations, then
/// [`IDENTITY_TABLES`].
pub(crate) fn migrate(conn: &Connection) -> StoreResult<()> {
    migrate_versions(conn)?;
    Ok(conn.execute_batch(IDENTITY_TABLES)?)
}

/// Runs the versioned migrations in one transaction, reading the version
/// inside it so two processes opening a new store at once cannot both migrate.
///
/// A migration of a stored vault may rewrite gigabytes in that one
/// transaction. In WAL mode, every page it reads is first looked up in a
/// WAL that grows with everything it has written: with 10,000,000
/// redemptions, migration 5 spent 43% of its time in `walFindFrame`. So
/// `main` migrates in rollback-journal mode (as crash-safe, with
/// `synchronous=FULL`) when no other connection holds it open, and goes
/// back to WAL before anything else runs; if it cannot go back, the store
/// does not open. Migrations after the first touch only `main`.
fn migrate_versions(conn: &Connection) -> StoreResult<()> {
    let stored: i64 = conn.query_row("PRAGMA main.user_version", [], |r| r.get(0))?;
    if stored == 0 || stored >= MIGRATIONS.len() as i64 {
        return migrate_in_one_transaction(conn);
    }
    let journal = |mode: &str| -> StoreResult<String> {
        Ok(conn.query_row(&format!("PRAGMA main.journal_mode{mode}"), [], |r| r.get(0))?)
    };
    let was = journal("")?;
    // Busy (another process has the store open): migrate as it is.
    let switched = was.eq_ignore_ascii_case("wal")
        && journal(" = DELETE").is_ok_and(|m| m.eq_ignore_ascii_case("delete"));
    let migrated = migrate_in_one_transaction(conn);
    if switched && !journal(" = WAL")?.eq_ignore_ascii_case("wal") {
        return Err(crate::StoreError::Unavailable(
            "the store could not return to WAL mode after migrating".into(),
        ));
    }
    migrated
}

fn migrate_in_one_transaction(conn: &Connection) -> StoreResult<()> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v1() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("ATTACH DATABASE ':memory:' AS ident")
            .unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch("PRAGMA main.user_version = 1").unwrap();
        conn
    }

    #[test]
    fn migration_2_keeps_every_code_and_its_row_and_admits_expired() {
        let conn = v1();
        conn.execute_batch(
            "INSERT INTO codes (row, code_id, secret_hash, deposit_id, platform_id, funder_id,
                 scopes, purpose, state, created_at, expires_at, redeemed_at)
             VALUES (41, 'cod_a', X'01', 'dep_1', 'ten_p', 'ten_f', 'risk', 'drawdown',
                 'redeemed', 1, 2, 3);
             INSERT INTO deposits (id, platform_id, external_ref, purpose, consent,
                 consent_scopes, consent_expires, groups, subject_index, subject_ref, state,
                 created_at)
             VALUES ('dep_1', 'ten_p', 'R-1', 'drawdown', '{}', 'risk', 9, 'risk', 'subj',
                 'sub_1', 'active', 1);
             INSERT INTO tenants (id, kind, name, key_id, secret_kek_version, secret_sealed,
                 purposes, rate_limit, state, created_at, updated_at)
             VALUES ('ten_p', 'platform', 'P', 'k_1', 1, X'02', '', 10, 'active', 1, 1);",
        )
        .unwrap();
        let before: (i64, String, Vec<u8>, String, Option<i64>) = conn
            .query_row(
                "SELECT row, code_id, secret_hash, state, redeemed_at FROM codes",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();

        migrate(&conn).unwrap();

        let after = conn
            .query_row(
                "SELECT row, code_id, secret_hash, state, redeemed_at FROM codes",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(before, after);
        let version: i64 = conn
            .query_row("PRAGMA main.user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        conn.execute("UPDATE codes SET state = 'expired'", [])
            .unwrap();
        assert!(conn
            .execute("UPDATE codes SET state = 'bogus'", [])
            .is_err());
        let previous: Option<Vec<u8>> = conn
            .query_row("SELECT previous_secret_sealed FROM tenants", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(previous, None);
        let pin: Option<String> = conn
            .query_row("SELECT cert_pin FROM tenants", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pin, None, "migration 3: existing tenants are not pinned");
        let filed: (i64, String, String) = conn
            .query_row(
                "SELECT run, subject_index, deposit_id FROM deposit_subjects",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            filed,
            (0, "subj".into(), "dep_1".into()),
            "migration 4 files stored deposits in run 0"
        );
        // Idempotent.
        migrate(&conn).unwrap();
    }

    #[test]
    fn migration_7_makes_every_stored_key_deposit_and_entry_intl() {
        let conn = v1();
        for sql in &MIGRATIONS[1..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA main.user_version = 6;
             INSERT INTO keks (version, state, wrapped, created_at) VALUES (1, 'active', X'01', 1);
             INSERT INTO deposits (id, platform_id, external_ref, purpose, consent,
                 consent_scopes, consent_expires, groups, subject_index, subject_ref, state,
                 created_at)
             VALUES ('dep_1', 'ten_p', 'R-1', 'drawdown', '{}', 'risk', 9, 'risk', 'subj',
                 'sub_1', 'active', 1);
             INSERT INTO audit (seq, at, actor, operation, result, prev_hash, hash)
             VALUES (1, 'a', 'cli:x', 'vault.init', 'ok', 'p', 'h');",
        )
        .unwrap();

        migrate(&conn).unwrap();

        let row: (String, String, Option<String>) = conn
            .query_row(
                "SELECT (SELECT suite FROM keks), (SELECT suite FROM deposits),
                        (SELECT alg FROM audit)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(row, ("intl".into(), "intl".into(), None));
        for bad in [
            "UPDATE keks SET suite = 'aes'",
            "UPDATE deposits SET suite = 'sm'",
            "INSERT INTO audit (seq, at, actor, operation, result, prev_hash, hash, alg)
             VALUES (2, 'a', 'cli:x', 'x', 'ok', 'h', 'i', 'md5')",
        ] {
            assert!(conn.execute(bad, []).is_err(), "{bad}");
        }
        conn.execute("UPDATE keks SET suite = 'gm'", []).unwrap();
    }

    /// A store on disk in WAL mode at schema 4, with one redeemed code.
    fn v4_on_disk(dir: &std::path::Path) -> Connection {
        let conn = Connection::open(dir.join("vault.db")).unwrap();
        let ident = dir.join("identity.db");
        conn.execute("ATTACH DATABASE ?1 AS ident", [ident.to_str().unwrap()])
            .unwrap();
        conn.execute_batch("PRAGMA main.journal_mode = WAL; PRAGMA ident.journal_mode = WAL;")
            .unwrap();
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch("PRAGMA main.user_version = 4").unwrap();
        conn.execute_batch(REDEEMED_CODE).unwrap();
        conn
    }

    /// Code row 7, redeemed by `red_1` (columns as of schema 1 to 4).
    const REDEEMED_CODE: &str = "
        INSERT INTO codes (row, code_id, secret_hash, deposit_id, platform_id, funder_id,
            scopes, purpose, state, created_at, expires_at, redeemed_at)
        VALUES (7, 'cod_r', X'01', 'dep_1', 'ten_p', 'ten_f', 'risk', 'drawdown',
            'redeemed', 1, 2, 3);
        INSERT INTO redemptions (id, code_row, code_id, deposit_id, platform_id, funder_id,
            purpose, scopes, redeemed_at)
        VALUES ('red_1', 7, 'cod_r', 'dep_1', 'ten_p', 'ten_f', 'drawdown', 'risk', 3);";

    fn migrated_in_wal_mode(conn: &Connection) {
        let (version, mode, link): (i64, String, Option<String>) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        (SELECT journal_mode FROM pragma_journal_mode),
                        (SELECT redemption_id FROM codes WHERE row = 7)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert_eq!(mode, "wal", "the store is back in WAL mode");
        assert_eq!(link.as_deref(), Some("red_1"));
    }

    /// Records `main`'s journal mode as migration 5 links a code (a temp
    /// trigger, so it is seen from inside the migration's transaction).
    fn watch_journal_mode(conn: &Connection) {
        conn.execute_batch(
            "CREATE TEMP TABLE seen (mode TEXT);
             CREATE TEMP TRIGGER watch AFTER UPDATE OF redemption_id ON main.codes
                 BEGIN INSERT INTO seen SELECT journal_mode FROM pragma_journal_mode; END;",
        )
        .unwrap();
    }

    fn journal_mode_seen(conn: &Connection) -> String {
        conn.query_row("SELECT mode FROM temp.seen", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_stored_vault_migrates_outside_the_wal_and_returns_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let conn = v4_on_disk(dir.path());
        // Seen from the migration: main leaves WAL mode while it runs.
        watch_journal_mode(&conn);
        migrate(&conn).unwrap();
        migrated_in_wal_mode(&conn);
        let seen = journal_mode_seen(&conn);
        assert_eq!(seen, "delete");
        assert!(
            !dir.path().join("vault.db-journal").exists(),
            "the rollback journal is gone"
        );
    }

    #[test]
    fn a_vault_open_elsewhere_migrates_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let conn = v4_on_disk(dir.path());
        let other = Connection::open(dir.path().join("vault.db")).unwrap();
        let _: i64 = other
            .query_row("SELECT count(*) FROM codes", [], |r| r.get(0))
            .unwrap();
        watch_journal_mode(&conn);
        migrate(&conn).unwrap();
        migrated_in_wal_mode(&conn);
        migrated_in_wal_mode(&other);
        let seen = journal_mode_seen(&conn);
        assert_eq!(
            seen, "wal",
            "migrated in WAL mode while held open elsewhere"
        );
    }

    #[test]
    fn migration_5_links_each_redemption_from_its_code_and_keeps_it() {
        let conn = v1();
        conn.execute_batch(REDEEMED_CODE).unwrap();
        conn.execute_batch(
            "UPDATE redemptions SET decision = 'approved', amount_fen = 500, reported_at = 4;
             INSERT INTO codes (row, code_id, secret_hash, deposit_id, platform_id, funder_id,
                 scopes, purpose, state, created_at, expires_at)
             VALUES (8, 'cod_i', X'02', 'dep_1', 'ten_p', 'ten_f', 'risk', 'drawdown',
                 'issued', 1, 2);",
        )
        .unwrap();

        migrate(&conn).unwrap();

        let linked: Vec<(i64, Option<String>)> = conn
            .prepare("SELECT row, redemption_id FROM codes ORDER BY row")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(linked, vec![(7, Some("red_1".into())), (8, None)]);
        let kept: (
            i64,
            String,
            String,
            Option<String>,
            Option<i64>,
            Option<i64>,
        ) = conn
            .query_row(
                "SELECT code_row, code_id, deposit_id, decision, amount_fen, reported_at
                 FROM redemptions WHERE id = 'red_1'",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            kept,
            (
                7,
                "cod_r".into(),
                "dep_1".into(),
                Some("approved".into()),
                Some(500),
                Some(4)
            )
        );
        // Only the primary key: no index kept in redemption order.
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'redemptions'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0);
        // A code names one redemption, once.
        let renamed = conn.execute("UPDATE codes SET redemption_id = 'red_2' WHERE row = 7", []);
        assert!(
            renamed.is_err(),
            "a redeemed code's redemption was replaced"
        );
        conn.execute("UPDATE codes SET redemption_id = 'red_3' WHERE row = 8", [])
            .unwrap();
    }

    /// A vault of schema 5 on disk with real data, made by a store of today
    /// and copied into the tables schema 5 had: a deposit's data key in
    /// `data_keys`, its groups in `records`.
    #[cfg(feature = "conformance")]
    fn v5_vault_with_a_deposit(dir: &std::path::Path) -> V5 {
        use crate::conformance::fixture::{attempt, deposit, now_call};
        use crate::conformance::Fixture;
        use crate::Store;

        struct Made(tempfile::TempDir);
        impl crate::conformance::Factory for Made {
            type Backend = crate::sqlite::SqliteBackend;
            fn open(&self) -> crate::SqliteStore {
                crate::SqliteStore::open(self.0.path()).unwrap()
            }
            fn backdoor(&self) -> Box<dyn crate::conformance::Backdoor> {
                unreachable!("making the vault below never reads past the store")
            }
            fn chain_per_store(&self) -> bool {
                false
            }
        }
        let f = Fixture::new(Made(tempfile::tempdir().unwrap()));
        let p = f.parties();
        let d = deposit(&f.store, &p, "APP-5", &["applicant,risk", "device,risk"]).unwrap();
        let r = f
            .store
            .redeem(
                &now_call(&p.funder.tenant_id, "redemption.create"),
                attempt(&d.codes[1], dzl_types::Purpose::CreditApplication),
            )
            .unwrap();
        let entries = f.store.audit_head_seq().unwrap();
        f.store.close();

        let conn = crate::sqlite::conn::open_connection(dir).unwrap();
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        let made = f.factory.0.path();
        conn.execute(
            "ATTACH DATABASE ?1 AS m",
            [made.join("vault.db").to_str().unwrap()],
        )
        .unwrap();
        conn.execute(
            "ATTACH DATABASE ?1 AS mi",
            [made.join("identity.db").to_str().unwrap()],
        )
        .unwrap();
        conn.execute_batch(
            "PRAGMA main.user_version = 5;
             BEGIN;
             UPDATE meta SET value = (SELECT value FROM m.meta WHERE key = 'generation');
             UPDATE audit_head SET (seq, hash) = (SELECT seq, hash FROM m.audit_head);
             INSERT INTO keks SELECT version, state, wrapped, created_at, retired_at FROM m.keks;
             INSERT INTO sealed_secrets SELECT * FROM m.sealed_secrets;
             INSERT INTO tenants SELECT * FROM m.tenants;
             INSERT INTO deposits SELECT id, platform_id, external_ref, purpose, consent,
                 consent_scopes, consent_expires, groups, subject_index, subject_ref, state,
                 created_at, erased_at FROM m.deposits;
             INSERT INTO deposit_subjects SELECT * FROM m.deposit_subjects;
             INSERT INTO data_keys SELECT deposit_id, kek_version, wrapped_key FROM m.deposit_records;
             INSERT INTO records SELECT deposit_id, 'device', device FROM m.deposit_records
                 WHERE device IS NOT NULL;
             INSERT INTO records SELECT deposit_id, 'risk', risk FROM m.deposit_records
                 WHERE risk IS NOT NULL;
             INSERT INTO codes SELECT * FROM m.codes;
             INSERT INTO redemptions SELECT * FROM m.redemptions;
             INSERT INTO audit SELECT seq, at, actor, operation, result, purpose, deposit_id,
                 code_id, redemption_id, subject_tenant, groups, detail, prev_hash, hash
                 FROM m.audit;
             INSERT INTO usage SELECT * FROM m.usage;
             INSERT INTO ident.identities SELECT * FROM mi.identities;
             COMMIT;",
        )
        .unwrap();
        V5 {
            keys: p,
            root: f.root,
            codes: d.codes,
            redeemed: r.code_id,
            entries,
        }
    }

    /// What [`v5_vault_with_a_deposit`] made.
    #[cfg(feature = "conformance")]
    struct V5 {
        keys: crate::conformance::fixture::Parties,
        root: dzl_crypto::RootKey,
        codes: Vec<dzl_types::AuthCode>,
        redeemed: dzl_types::CodeId,
        entries: i64,
    }

    #[test]
    #[cfg(feature = "conformance")]
    fn migration_6_merges_each_deposits_key_and_groups_and_the_vault_goes_on() {
        use crate::conformance::fixture::{attempt, now_call, open, APPLICANT, RISK};
        use crate::Store;
        use dzl_types::Group;

        let dir = tempfile::tempdir().unwrap();
        let v5 = v5_vault_with_a_deposit(dir.path());
        let p = &v5.keys;

        let store = crate::SqliteStore::open(dir.path()).unwrap();

        assert_eq!(
            store.verify_audit(&mut |_| {}).unwrap(),
            Ok(v5.entries as u64)
        );
        crate::admin::load_keys(&store, &v5.root).unwrap();
        assert_eq!(store.keks().unwrap()[0].data_keys, 2, "both keys counted");
        // The redeemed code keeps its redemption; the issued one redeems,
        // its key and groups read from the merged row.
        let status = store
            .code_status(
                &now_call(&p.platform.tenant_id, "code.status"),
                &v5.redeemed,
            )
            .unwrap();
        assert_eq!(status.state, dzl_types::wire::CodeState::Redeemed);
        let r = store
            .redeem(
                &now_call(&p.funder.tenant_id, "redemption.create"),
                attempt(&v5.codes[0], dzl_types::Purpose::CreditApplication),
            )
            .unwrap();
        assert_eq!(
            open(p, &r),
            [
                (Group::Applicant, APPLICANT.to_owned()),
                (Group::Risk, RISK.to_owned())
            ]
        );
        // The guards that survive restarts have their tables.
        assert!(store.remember_nonce("k_1", "n0nce", i64::MAX, 0).unwrap());
        assert!(store.verify_audit(&mut |_| {}).unwrap().is_ok());
        store.close();
        let conn = Connection::open(dir.path().join("vault.db")).unwrap();
        let old: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name IN ('data_keys', 'records')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0, "the old tables are gone");
    }
}
