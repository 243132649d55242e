//! Record groups: sealed under a data key, bound to deposit id and group.

use dzl_crypto::{open_record, seal_record, CryptoError, DataKey};

use crate::helpers::{assert_every_flip_fails, assert_every_truncation_fails, rng};

const DEVICE: &[u8] = br#"{"imei":"860000000000001","model":"X1"}"#;

#[test]
fn record_round_trips() {
    let dk = DataKey::generate(&rng()).unwrap();
    let env = seal_record(&dk, "dep_a", "device", DEVICE, &rng()).unwrap();
    let plain = open_record(&dk, "dep_a", "device", &env).unwrap();
    assert_eq!(plain.as_slice(), DEVICE);
}

#[test]
fn record_of_deposit_a_does_not_open_as_deposit_b() {
    let dk = DataKey::generate(&rng()).unwrap();
    let env = seal_record(&dk, "dep_a", "device", DEVICE, &rng()).unwrap();
    assert_eq!(
        open_record(&dk, "dep_b", "device", &env).unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn device_group_does_not_open_as_risk() {
    let dk = DataKey::generate(&rng()).unwrap();
    let env = seal_record(&dk, "dep_a", "device", DEVICE, &rng()).unwrap();
    assert_eq!(
        open_record(&dk, "dep_a", "risk", &env).unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn field_boundaries_are_bound() {
    // "dep_a" + "device" vs "dep_ad" + "evice": same concatenation, different tuple.
    let dk = DataKey::generate(&rng()).unwrap();
    let env = seal_record(&dk, "dep_a", "device", DEVICE, &rng()).unwrap();
    assert_eq!(
        open_record(&dk, "dep_ad", "evice", &env).unwrap_err(),
        CryptoError::Integrity
    );
    let env = seal_record(&dk, "a\0b", "c", DEVICE, &rng()).unwrap();
    assert_eq!(
        open_record(&dk, "a", "b\0c", &env).unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn another_data_key_is_integrity() {
    let dk = DataKey::generate(&rng()).unwrap();
    let other = DataKey::generate(&rng()).unwrap();
    let env = seal_record(&dk, "dep_a", "device", DEVICE, &rng()).unwrap();
    assert_eq!(
        open_record(&other, "dep_a", "device", &env).unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn tampered_or_truncated_record_is_refused() {
    let dk = DataKey::generate(&rng()).unwrap();
    let env = seal_record(&dk, "dep_a", "risk", b"{}", &rng()).unwrap();
    assert_every_flip_fails(&env, |e| open_record(&dk, "dep_a", "risk", e));
    assert_every_truncation_fails(&env, |e| open_record(&dk, "dep_a", "risk", e));
}
