//! Test support: a fresh, uniquely named database per test, dropped when
//! its guard goes, so tests against one PostgreSQL server run side by side
//! without seeing each other.
//!
//! ```no_run
//! # fn main() -> dzl_store::StoreResult<()> {
//! let db = dzl_store_pg::testing::fresh_database("postgres://dzl:dzl@127.0.0.1:5432/dzl_test")?;
//! let store = dzl_store_pg::connect(db.url(), Default::default())?;
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dzl_store::{StoreError, StoreResult};
use postgres::NoTls;

use crate::{describe_target, map_pg, parse_config};

/// The variable naming the server the PostgreSQL tests run against (an
/// admin URL: its role must be allowed to create databases).
pub const TEST_URL_VAR: &str = "DZL_TEST_PG_URL";

/// A database made for one test; dropped (with its connections) on `Drop`.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// The URL of the new database (the admin URL's credentials and host).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let dropped = admin_client(&self.admin_url).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .map_err(map_pg)
        });
        if let Err(e) = dropped {
            log::warn!("dropping test database {}: {e}", self.name);
        }
    }
}

fn admin_client(admin_url: &str) -> StoreResult<postgres::Client> {
    let mut config = parse_config(admin_url)?;
    config.connect_timeout(Duration::from_secs(5));
    let target = describe_target(&config);
    config
        .connect(NoTls)
        .map_err(|e| StoreError::Unavailable(format!("PostgreSQL at {target} is unreachable: {e}")))
}

/// Creates an empty database with a unique name on the server of
/// `admin_url`; the guard drops it.
pub fn fresh_database(admin_url: &str) -> StoreResult<TestDatabase> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "dzl_t_{}_{}_{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let url = with_database(admin_url, &name)?;
    let mut client = admin_client(admin_url)?;
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .map_err(map_pg)?;
    Ok(TestDatabase {
        admin_url: admin_url.to_owned(),
        name,
        url,
    })
}

/// `url` naming database `name` instead: a `postgres://` URL's path is
/// replaced; a `key=value` string gets `dbname=` appended (later keys win).
pub fn with_database(url: &str, name: &str) -> StoreResult<String> {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (main, query) = match rest.split_once('?') {
                Some((m, q)) => (m, Some(q)),
                None => (rest, None),
            };
            // The authority ends at the first '/' after any userinfo.
            let host_start = main.rfind('@').map_or(0, |i| i + 1);
            let authority_end = main[host_start..]
                .find('/')
                .map_or(main.len(), |i| host_start + i);
            let mut out = format!("{scheme}{}/{name}", &main[..authority_end]);
            if let Some(q) = query {
                out.push('?');
                out.push_str(q);
            }
            return Ok(out);
        }
    }
    if url.contains('=') {
        return Ok(format!("{url} dbname={name}"));
    }
    Err(StoreError::Invalid(
        "the PostgreSQL URL does not parse (expected postgres://user:password@host:port/database)"
            .into(),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_new_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/old", "new").unwrap(),
            "postgres://u:p@h:5432/new"
        );
        assert_eq!(
            with_database("postgresql://u:p%2F@h/old?sslmode=disable", "new").unwrap(),
            "postgresql://u:p%2F@h/new?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:1", "new").unwrap(),
            "postgres://h:1/new"
        );
        assert_eq!(
            with_database("host=h user=u", "new").unwrap(),
            "host=h user=u dbname=new"
        );
        assert!(with_database("nonsense", "new").is_err());
    }
}
