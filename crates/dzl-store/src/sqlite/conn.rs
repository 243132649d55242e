//! Opening the two database files: where they are, the connection settings
//! every connection shares, and how SQLite's errors become the store's.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode as SqlCode};

use crate::{StoreError, StoreResult};

/// The writer's page cache per database while the vault database is
/// smaller than 1 GiB (in KiB, as `PRAGMA cache_size` takes negative
/// values). Below 1 GiB the whole file is in the memory map, so the cache
/// holds little but the transaction's own pages, and must stay small:
/// SQLite renumbers B-tree pages through page 262,145 (the lock page at 1
/// GiB), and every commit after such a renumbering walks the writer's
/// whole cache (docs/performance.md).
pub(super) const SMALL_CACHE_KIB: i64 = 2048;
/// The writer's page cache once the vault database passes 1 GiB: the walk
/// never happens past it, and a large cache keeps the random-keyed index
/// pages that lie beyond the map.
pub(super) const LARGE_CACHE_KIB: i64 = 262_144;
/// Pages of `vault.db` from which the writer takes the large cache.
pub(super) const LARGE_CACHE_FROM_PAGES: i64 = 262_144;

/// The main database file in `dir`.
pub fn vault_db(dir: &Path) -> PathBuf {
    dir.join("vault.db")
}

/// The identity database file in `dir`.
pub fn identity_db(dir: &Path) -> PathBuf {
    dir.join("identity.db")
}

/// The WAL file of the database file `db`.
pub(super) fn wal_of(db: PathBuf) -> PathBuf {
    let mut name = db.into_os_string();
    name.push("-wal");
    PathBuf::from(name)
}

/// SQLite's error as the store's.
pub(crate) fn map_sql(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            SqlCode::DatabaseCorrupt | SqlCode::NotADatabase => StoreError::Corrupt(e.to_string()),
            SqlCode::ConstraintViolation => StoreError::Invalid(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        },
        rusqlite::Error::QueryReturnedNoRows
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        map_sql(e)
    }
}

/// A connection to `vault.db` with `identity.db` attached as `ident`, in
/// WAL mode with `secure_delete` (erased keys are overwritten, not left in
/// free pages) and `synchronous=FULL`.
pub(super) fn open_connection(dir: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(vault_db(dir))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let ident = identity_db(dir);
    let ident = ident
        .to_str()
        .ok_or_else(|| StoreError::Invalid("data directory path is not UTF-8".into()))?;
    conn.execute("ATTACH DATABASE ?1 AS ident", [ident])?;
    // The memory map serves reads of the random-keyed indexes (subject
    // blind index, external_ref) instead of `pread`; writes never go
    // through it. Every connection starts with a small page cache: a
    // reader's is emptied by each commit of the writer anyway, and the
    // writer's grows with its database (`writer::size_caches`).
    // Sub-journals stay in memory. A WAL that starts over is cut back to
    // 256 MiB, above the size it starts over at, so that under load its
    // file is reused, not cut and grown again each time.
    conn.execute_batch(&format!(
        "PRAGMA main.journal_mode = WAL;
         PRAGMA ident.journal_mode = WAL;
         PRAGMA main.synchronous = FULL;
         PRAGMA ident.synchronous = FULL;
         PRAGMA main.secure_delete = ON;
         PRAGMA ident.secure_delete = ON;
         PRAGMA main.cache_size = -{SMALL_CACHE_KIB};
         PRAGMA ident.cache_size = -{SMALL_CACHE_KIB};
         PRAGMA main.mmap_size = 4294967296;
         PRAGMA ident.mmap_size = 1073741824;
         PRAGMA main.journal_size_limit = 268435456;
         PRAGMA ident.journal_size_limit = 268435456;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;"
    ))?;
    Ok(conn)
}

/// Runs `f` inside one read transaction on `conn`.
pub(super) fn snapshot<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<R>,
) -> StoreResult<R> {
    conn.execute_batch("BEGIN")?;
    let result = f(conn);
    let _ = conn.execute_batch("COMMIT");
    result
}

/// Makes the data directory readable by its owner only.
#[cfg(unix)]
pub(super) fn restrict_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        log::warn!("could not restrict {} to mode 0700: {e}", dir.display());
    }
}

#[cfg(not(unix))]
pub(super) fn restrict_dir(_dir: &Path) {}

/// Makes every file of the data directory readable by its owner only.
#[cfg(unix)]
pub(super) fn restrict_files(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()).filter(|p| p.is_file()) {
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            log::warn!("could not restrict {} to mode 0600: {e}", path.display());
        }
    }
}

#[cfg(not(unix))]
pub(super) fn restrict_files(_dir: &Path) {}

/// A migrated connection in `dir`, for the tests of the generic write path.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn open_connection_for_tests(dir: &Path) -> Connection {
    let conn = open_connection(dir).unwrap();
    super::schema::migrate(&conn).unwrap();
    conn
}
