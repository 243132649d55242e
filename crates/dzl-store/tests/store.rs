//! The store's library functions that `dzlctl` calls: init, tenants, key
//! rotation, audit verification — against a real SQLite store in a
//! temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dzl_crypto::RootKey;
use dzl_store::admin::{self, NewTenant};
use dzl_store::{SqliteStore, Store, TenantKind, TenantState};

fn fresh() -> (tempfile::TempDir, SqliteStore, RootKey) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let root = RootKey::generate(&dzl_crypto::SystemRandom::new()).unwrap();
    admin::init(&store, &root, "cli:test").unwrap();
    (dir, store, root)
}

#[test]
fn init_then_tenants_and_a_verifiable_audit_chain() {
    let (_dir, store, root) = fresh();
    assert!(
        admin::init(&store, &root, "cli:test").is_err(),
        "a second init is refused"
    );
    let keys = admin::load_keys(&store, &root).unwrap();
    let creds = admin::add_tenant(
        &store,
        &keys.keyring,
        "cli:test",
        NewTenant {
            kind: TenantKind::Funder,
            name: "Bank".into(),
            scopes: None,
            purposes: vec![],
            rate_limit: None,
        },
    )
    .unwrap();
    let tenants = store.tenants().unwrap();
    assert_eq!(tenants.len(), 1);
    let secret = admin::open_tenant_secret(&keys.keyring, &tenants[0]).unwrap();
    assert_eq!(&secret[..], creds.secret.as_bytes());
    assert!(store
        .set_tenant_state("cli:test", &creds.tenant_id, TenantState::Suspended, "test")
        .unwrap());
    assert!(!store
        .set_tenant_state("cli:test", &creds.tenant_id, TenantState::Suspended, "test")
        .unwrap());
    // init, tenant.add, tenant.suspend
    assert_eq!(store.verify_audit(&mut |_| {}).unwrap(), Ok(3));
}

#[test]
fn wrong_root_key_does_not_open_the_keyring() {
    let (_dir, store, _root) = fresh();
    let other = RootKey::generate(&dzl_crypto::SystemRandom::new()).unwrap();
    assert!(matches!(
        admin::load_keys(&store, &other),
        Err(admin::AdminError::WrongRootKey)
    ));
}

#[test]
fn rotation_keeps_old_versions_for_decryption() {
    let (_dir, store, root) = fresh();
    let before = admin::load_keyring(&store, &root).unwrap();
    let sealed = before.seal_secret("t", "x", b"payload").unwrap();
    let g0 = store.generation().unwrap();
    assert_eq!(admin::rotate_keys(&store, &root, "cli:test").unwrap(), 2);
    assert!(
        store.generation().unwrap() > g0,
        "a running server must notice"
    );
    let after = admin::load_keyring(&store, &root).unwrap();
    assert_eq!(after.active_version(), 2);
    assert_eq!(
        &after.open_secret("t", "x", &sealed).unwrap()[..],
        b"payload"
    );
    let states: Vec<_> = store
        .keks()
        .unwrap()
        .iter()
        .map(|k| k.state.as_str())
        .collect();
    assert_eq!(states, ["decrypt_only", "active"]);
}

#[test]
fn audit_verification_finds_an_altered_entry() {
    let (dir, store, root) = fresh();
    admin::rotate_keys(&store, &root, "cli:test").unwrap();
    admin::rotate_keys(&store, &root, "cli:test").unwrap();
    assert_eq!(store.verify_audit(&mut |_| {}).unwrap(), Ok(3));
    drop(store);
    // An attacker with write access to the file: drop the guard trigger, edit entry 2.
    let conn = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_no_update; UPDATE audit SET detail = 'version 9 active' WHERE seq = 2;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(dir.path()).unwrap();
    let err = store.verify_audit(&mut |_| {}).unwrap().unwrap_err();
    assert_eq!(err.seq(), 2, "{err}");
}

#[test]
fn the_audit_trail_refuses_updates_and_deletes() {
    let (dir, store, _root) = fresh();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("vault.db")).unwrap();
    assert!(conn.execute("DELETE FROM audit", []).is_err());
    assert!(conn.execute("UPDATE audit SET actor = 'x'", []).is_err());
}
