//! Root key, KEKs, the keyring, rotation and sealed secrets.

use dzl_crypto::{
    open_record, seal_record, CryptoError, DataKey, Kek, Keyring, RootKey, Suite, WrappedKey,
};

use crate::helpers::{assert_every_flip_fails, rng};

/// What the database would hold: KEKs wrapped by the root key, by version.
struct StoredKeks {
    root: RootKey,
    rows: Vec<(u32, Vec<u8>)>,
}

impl StoredKeks {
    fn new() -> Self {
        StoredKeks {
            root: RootKey::generate(&rng()).unwrap(),
            rows: Vec::new(),
        }
    }

    fn add(&mut self, version: u32) {
        let kek = Kek::generate(version, &rng()).unwrap();
        self.rows.push((version, self.root.wrap_kek(&kek).unwrap()));
    }

    /// Load a keyring holding `versions`, `active` active, as a server would.
    fn keyring(&self, versions: &[u32], active: u32) -> Result<Keyring, CryptoError> {
        let keks = self
            .rows
            .iter()
            .filter(|(v, _)| versions.contains(v))
            .map(|(v, bytes)| self.root.unwrap_kek(*v, Suite::Intl, bytes).unwrap())
            .collect();
        Keyring::new(keks, active)
    }
}

/// A data key plus a record sealed under it, to check an unwrapped key is the same key.
fn data_key_with_record() -> (DataKey, Vec<u8>) {
    let dk = DataKey::generate(&rng()).unwrap();
    let rec = seal_record(&dk, "dep_a", "device", b"{\"k\":1}", &rng()).unwrap();
    (dk, rec)
}

fn opens_record(dk: &DataKey, rec: &[u8]) -> bool {
    open_record(dk, "dep_a", "device", rec).is_ok()
}

#[test]
fn data_key_wrap_round_trips() {
    let mut db = StoredKeks::new();
    db.add(1);
    let ring = db.keyring(&[1], 1).unwrap();
    let (dk, rec) = data_key_with_record();

    let wrapped = ring.wrap_data_key(&dk, "dep_a", "record").unwrap();
    assert_eq!(wrapped.kek_version, 1);
    assert_eq!(wrapped.bytes.len(), 32 + dzl_crypto::ENVELOPE_OVERHEAD);

    let back = ring.unwrap_data_key(&wrapped, "dep_a", "record").unwrap();
    assert!(opens_record(&back, &rec));
}

#[test]
fn data_key_wrapped_for_owner_a_does_not_unwrap_for_owner_b() {
    let mut db = StoredKeks::new();
    db.add(1);
    let ring = db.keyring(&[1], 1).unwrap();
    let (dk, _) = data_key_with_record();
    let wrapped = ring.wrap_data_key(&dk, "dep_a", "record").unwrap();
    assert_eq!(
        ring.unwrap_data_key(&wrapped, "dep_b", "record")
            .unwrap_err(),
        CryptoError::Integrity
    );
    assert_eq!(
        ring.unwrap_data_key(&wrapped, "dep_a", "other-kind")
            .unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn relabelled_kek_version_is_integrity() {
    let mut db = StoredKeks::new();
    db.add(1);
    db.add(2);
    let ring = db.keyring(&[1, 2], 1).unwrap();
    let (dk, _) = data_key_with_record();
    let mut wrapped = ring.wrap_data_key(&dk, "dep_a", "record").unwrap();
    wrapped.kek_version = 2;
    assert_eq!(
        ring.unwrap_data_key(&wrapped, "dep_a", "record")
            .unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn tampered_wrapped_data_key_is_refused() {
    let mut db = StoredKeks::new();
    db.add(1);
    let ring = db.keyring(&[1], 1).unwrap();
    let (dk, _) = data_key_with_record();
    let wrapped = ring.wrap_data_key(&dk, "dep_a", "record").unwrap();
    assert_every_flip_fails(&wrapped.bytes, |bytes| {
        let w = WrappedKey {
            kek_version: 1,
            bytes: bytes.to_vec(),
        };
        ring.unwrap_data_key(&w, "dep_a", "record")
    });
}

#[test]
fn rotation_keeps_old_wraps_readable_and_rewrap_moves_them() {
    // Arrange: a data key wrapped under v1.
    let mut db = StoredKeks::new();
    db.add(1);
    let (dk, rec) = data_key_with_record();
    let old = db
        .keyring(&[1], 1)
        .unwrap()
        .wrap_data_key(&dk, "dep_a", "record")
        .unwrap();

    // Act: rotate to v2.
    db.add(2);
    let rotated = db.keyring(&[1, 2], 2).unwrap();

    // Assert: v1 wraps still open; new wraps and rewraps go to v2.
    assert_eq!(rotated.active_version(), 2);
    assert_eq!(rotated.versions(), vec![1, 2]);
    let back = rotated.unwrap_data_key(&old, "dep_a", "record").unwrap();
    assert!(opens_record(&back, &rec));
    assert_eq!(
        rotated
            .wrap_data_key(&back, "dep_a", "record")
            .unwrap()
            .kek_version,
        2
    );

    let moved = rotated.rewrap_data_key(&old, "dep_a", "record").unwrap();
    assert_eq!(moved.kek_version, 2);
    assert_ne!(moved.bytes, old.bytes);

    // After retiring v1 only the rewrapped key opens.
    let retired = db.keyring(&[2], 2).unwrap();
    assert_eq!(
        retired
            .unwrap_data_key(&old, "dep_a", "record")
            .unwrap_err(),
        CryptoError::UnknownKeyVersion(1)
    );
    let back = retired.unwrap_data_key(&moved, "dep_a", "record").unwrap();
    assert!(opens_record(&back, &rec));
}

#[test]
fn rewrap_checks_owner() {
    let mut db = StoredKeks::new();
    db.add(1);
    db.add(2);
    let (dk, _) = data_key_with_record();
    let old = db
        .keyring(&[1], 1)
        .unwrap()
        .wrap_data_key(&dk, "dep_a", "record")
        .unwrap();
    let rotated = db.keyring(&[1, 2], 2).unwrap();
    assert_eq!(
        rotated
            .rewrap_data_key(&old, "dep_b", "record")
            .unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn keyring_requires_the_active_version() {
    let mut db = StoredKeks::new();
    db.add(1);
    assert_eq!(
        db.keyring(&[1], 2).unwrap_err(),
        CryptoError::UnknownKeyVersion(2)
    );
    assert_eq!(
        Keyring::new(Vec::new(), 1).unwrap_err(),
        CryptoError::UnknownKeyVersion(1)
    );
}

#[test]
fn keyring_rejects_duplicate_versions() {
    let keks = vec![
        Kek::generate(1, &rng()).unwrap(),
        Kek::generate(1, &rng()).unwrap(),
    ];
    assert_eq!(
        Keyring::new(keks, 1).unwrap_err(),
        CryptoError::BadKeyMaterial
    );
}

#[test]
fn keyring_lists_versions_ascending_and_debug_is_short() {
    let keks = vec![
        Kek::generate(3, &rng()).unwrap(),
        Kek::generate(1, &rng()).unwrap(),
        Kek::generate(2, &rng()).unwrap(),
    ];
    let ring = Keyring::new(keks, 3).unwrap();
    assert_eq!(ring.versions(), vec![1, 2, 3]);
    assert_eq!(
        format!("{ring:?}"),
        "Keyring { active_version: 3, versions: [1, 2, 3] }"
    );
}

#[test]
fn wrong_root_key_cannot_unwrap_kek() {
    let root = RootKey::generate(&rng()).unwrap();
    let other = RootKey::generate(&rng()).unwrap();
    let wrapped = root.wrap_kek(&Kek::generate(1, &rng()).unwrap()).unwrap();
    assert_eq!(
        other.unwrap_kek(1, Suite::Intl, &wrapped).unwrap_err(),
        CryptoError::Integrity
    );
    assert_eq!(
        root.unwrap_kek(1, Suite::Intl, &wrapped).unwrap().version(),
        1
    );
}

#[test]
fn kek_wrapped_as_v1_does_not_unwrap_claiming_v2() {
    let root = RootKey::generate(&rng()).unwrap();
    let wrapped = root.wrap_kek(&Kek::generate(1, &rng()).unwrap()).unwrap();
    assert_eq!(
        root.unwrap_kek(2, Suite::Intl, &wrapped).unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn tampered_wrapped_kek_is_refused() {
    let root = RootKey::generate(&rng()).unwrap();
    let wrapped = root.wrap_kek(&Kek::generate(1, &rng()).unwrap()).unwrap();
    assert_every_flip_fails(&wrapped, |w| root.unwrap_kek(1, Suite::Intl, w));
}

#[test]
fn root_rekey_keeps_the_keyring_readable() {
    // Arrange: a KEK stored under the old root, a data key wrapped by it.
    let old_root = RootKey::generate(&rng()).unwrap();
    let new_root = RootKey::generate(&rng()).unwrap();
    let stored_old = old_root
        .wrap_kek(&Kek::generate(5, &rng()).unwrap())
        .unwrap();
    let (dk, rec) = data_key_with_record();
    let wrapped = Keyring::new(
        vec![old_root.unwrap_kek(5, Suite::Intl, &stored_old).unwrap()],
        5,
    )
    .unwrap()
    .wrap_data_key(&dk, "dep_a", "record")
    .unwrap();

    // Act: `root rekey` unwraps each KEK under the old root, wraps it under the new.
    let stored_new = new_root
        .wrap_kek(&old_root.unwrap_kek(5, Suite::Intl, &stored_old).unwrap())
        .unwrap();

    // Assert: a keyring loaded through the new root opens the old data key.
    let reloaded = Keyring::new(
        vec![new_root.unwrap_kek(5, Suite::Intl, &stored_new).unwrap()],
        5,
    )
    .unwrap();
    let back = reloaded
        .unwrap_data_key(&wrapped, "dep_a", "record")
        .unwrap();
    assert!(opens_record(&back, &rec));
    assert_eq!(
        old_root
            .unwrap_kek(5, Suite::Intl, &stored_new)
            .unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn root_key_base64_round_trips_with_whitespace() {
    let root = RootKey::generate(&rng()).unwrap();
    let b64 = root.to_base64();
    assert_eq!(b64.len(), 44);
    assert!(b64.ends_with('='));
    for text in [
        b64.clone(),
        format!("{b64}\n"),
        format!("  {b64}\r\n"),
        format!("\t{b64} "),
    ] {
        let back = RootKey::from_base64(&text).unwrap();
        assert_eq!(back.fingerprint(), root.fingerprint());
        assert_eq!(back.to_base64(), b64);
    }
}

#[test]
fn reloaded_root_key_unwraps_keks() {
    let root = RootKey::generate(&rng()).unwrap();
    let wrapped = root.wrap_kek(&Kek::generate(4, &rng()).unwrap()).unwrap();
    let reloaded = RootKey::from_base64(&format!("{}\n", root.to_base64())).unwrap();
    assert_eq!(
        reloaded
            .unwrap_kek(4, Suite::Intl, &wrapped)
            .unwrap()
            .version(),
        4
    );
}

#[test]
fn root_key_rejects_bad_base64() {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    use base64::Engine as _;
    let cases = [
        String::new(),
        "not base64!".to_owned(),
        STANDARD.encode([1u8; 31]),
        STANDARD.encode([1u8; 33]),
        STANDARD_NO_PAD.encode([1u8; 32]),
        URL_SAFE.encode([0xfbu8; 32]),
        format!(
            "{} {}",
            &STANDARD.encode([1u8; 32])[..20],
            &STANDARD.encode([1u8; 32])[20..]
        ),
    ];
    for text in cases {
        assert_eq!(
            RootKey::from_base64(&text).unwrap_err(),
            CryptoError::BadKeyMaterial,
            "{text:?}"
        );
    }
    assert!(RootKey::from_base64(&STANDARD.encode([1u8; 32])).is_ok());
}

#[test]
fn root_key_fingerprint_is_short_stable_and_pinned() {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let root = RootKey::from_base64(&STANDARD.encode([0x11u8; 32])).unwrap();
    // SHA-256("dzl/root-key-fingerprint/v1\0" || 0x11 * 32)[..8], computed independently.
    assert_eq!(root.fingerprint(), "1f85dc17073a2083");
    let other = RootKey::generate(&rng()).unwrap();
    assert_eq!(other.fingerprint().len(), 16);
    assert_ne!(other.fingerprint(), root.fingerprint());
    assert!(!root.fingerprint().contains("1111"));
}

#[test]
fn root_key_debug_hides_key() {
    let root = RootKey::generate(&rng()).unwrap();
    let b64 = root.to_base64();
    let dbg = format!("{root:?} {root:#?}");
    assert!(!dbg.contains(&b64[..40]));
    assert_eq!(format!("{root:?}"), "RootKey(..)");
}

#[test]
fn sealed_secret_round_trips_and_is_bound() {
    let mut db = StoredKeks::new();
    db.add(1);
    let ring = db.keyring(&[1], 1).unwrap();
    let sealed = ring
        .seal_secret("tenant-secret", "ten_1", b"s3cr3t")
        .unwrap();
    assert_eq!(sealed.kek_version, 1);
    assert_eq!(
        ring.open_secret("tenant-secret", "ten_1", &sealed)
            .unwrap()
            .as_slice(),
        b"s3cr3t"
    );
    assert_eq!(
        ring.open_secret("tenant-secret", "ten_2", &sealed)
            .unwrap_err(),
        CryptoError::Integrity
    );
    assert_eq!(
        ring.open_secret("receipt-key", "ten_1", &sealed)
            .unwrap_err(),
        CryptoError::Integrity
    );
    assert_every_flip_fails(&sealed.bytes, |bytes| {
        let s = WrappedKey {
            kek_version: 1,
            bytes: bytes.to_vec(),
        };
        ring.open_secret("tenant-secret", "ten_1", &s)
    });
}

#[test]
fn sealed_secret_is_not_a_data_key() {
    // Same KEK, same owner and "kind" strings: domain separation still refuses.
    let mut db = StoredKeks::new();
    db.add(1);
    let ring = db.keyring(&[1], 1).unwrap();
    let sealed = ring.seal_secret("record", "dep_a", &[7u8; 32]).unwrap();
    assert_eq!(
        ring.unwrap_data_key(&sealed, "dep_a", "record")
            .unwrap_err(),
        CryptoError::Integrity
    );
    assert_eq!(
        ring.unwrap_data_key(&sealed, "record", "dep_a")
            .unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn sealed_secret_survives_rotation_and_rewrap() {
    let mut db = StoredKeks::new();
    db.add(1);
    let sealed = db
        .keyring(&[1], 1)
        .unwrap()
        .seal_secret("subject-index-key", "singleton", b"k")
        .unwrap();
    db.add(2);
    let rotated = db.keyring(&[1, 2], 2).unwrap();
    assert_eq!(
        rotated
            .open_secret("subject-index-key", "singleton", &sealed)
            .unwrap()
            .as_slice(),
        b"k"
    );
    let moved = rotated
        .rewrap_secret("subject-index-key", "singleton", &sealed)
        .unwrap();
    assert_eq!(moved.kek_version, 2);
    let retired = db.keyring(&[2], 2).unwrap();
    assert_eq!(
        retired
            .open_secret("subject-index-key", "singleton", &sealed)
            .unwrap_err(),
        CryptoError::UnknownKeyVersion(1)
    );
    assert_eq!(
        retired
            .open_secret("subject-index-key", "singleton", &moved)
            .unwrap()
            .as_slice(),
        b"k"
    );
}

#[test]
fn wrapped_key_debug_shows_no_bytes() {
    let mut db = StoredKeks::new();
    db.add(1);
    let ring = db.keyring(&[1], 1).unwrap();
    let sealed = ring.seal_secret("l", "i", b"x").unwrap();
    let dbg = format!("{sealed:?}");
    assert_eq!(
        dbg,
        format!(
            "WrappedKey {{ kek_version: 1, len: {} }}",
            sealed.bytes.len()
        )
    );
}
