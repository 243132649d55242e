//! Additional-authenticated-data builders: what binds each ciphertext to
//! its place (deposit and group, owner and kind, key version).
//!
//! Encoding, chosen so that no two different tuples give the same bytes:
//! each builder starts with its own domain label ending in one NUL
//! (`dzl/record/v1\0`, ...; no label contains another NUL, so no label is a
//! prefix of another), then every string field as an 8-byte big-endian
//! length followed by its bytes, and every version as 4 big-endian bytes.
//! Length prefixes instead of separators mean no id or label needs to be
//! rejected: NUL or any other byte inside a field is harmless.

/// Append `field` as `u64 big-endian length || bytes`.
pub(crate) fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

/// `dzl/record/v1\0 || lp(deposit_id) || lp(group)`
pub(crate) fn record_aad(deposit_id: &str, group: &str) -> Vec<u8> {
    let mut aad = b"dzl/record/v1\0".to_vec();
    push_field(&mut aad, deposit_id.as_bytes());
    push_field(&mut aad, group.as_bytes());
    aad
}

/// `dzl/data-key/v1\0 || lp(owner_id) || lp(kind) || be32(kek_version)`
pub(crate) fn data_key_aad(owner_id: &str, kind: &str, kek_version: u32) -> Vec<u8> {
    let mut aad = b"dzl/data-key/v1\0".to_vec();
    push_field(&mut aad, owner_id.as_bytes());
    push_field(&mut aad, kind.as_bytes());
    aad.extend_from_slice(&kek_version.to_be_bytes());
    aad
}

/// `dzl/kek/v1\0 || be32(version)`
pub(crate) fn kek_aad(version: u32) -> Vec<u8> {
    let mut aad = b"dzl/kek/v1\0".to_vec();
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// `dzl/secret/v1\0 || lp(label) || lp(id) || be32(kek_version)`
pub(crate) fn secret_aad(label: &str, id: &str, kek_version: u32) -> Vec<u8> {
    let mut aad = b"dzl/secret/v1\0".to_vec();
    push_field(&mut aad, label.as_bytes());
    push_field(&mut aad, id.as_bytes());
    aad.extend_from_slice(&kek_version.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pinned bytes: a change here changes every stored ciphertext's AAD and
    // makes existing data unreadable, so it must be deliberate.
    #[test]
    fn record_aad_is_pinned() {
        assert_eq!(
            hex::encode(record_aad("dep_1", "device")),
            concat!(
                "647a6c2f7265636f72642f763100",
                "0000000000000005",
                "6465705f31",
                "0000000000000006",
                "646576696365",
            )
        );
    }

    #[test]
    fn data_key_aad_is_pinned() {
        assert_eq!(
            hex::encode(data_key_aad("dep_1", "record", 2)),
            concat!(
                "647a6c2f646174612d6b65792f763100",
                "0000000000000005",
                "6465705f31",
                "0000000000000006",
                "7265636f7264",
                "00000002",
            )
        );
    }

    #[test]
    fn kek_aad_is_pinned() {
        assert_eq!(
            hex::encode(kek_aad(0x0102_0304)),
            "647a6c2f6b656b2f76310001020304"
        );
    }

    #[test]
    fn secret_aad_is_pinned() {
        assert_eq!(
            hex::encode(secret_aad("tenant-secret", "t1", 7)),
            concat!(
                "647a6c2f7365637265742f763100",
                "000000000000000d",
                "74656e616e742d736563726574",
                "0000000000000002",
                "7431",
                "00000007",
            )
        );
    }

    #[test]
    fn shifting_bytes_between_fields_changes_the_aad() {
        // With plain concatenation these pairs would collide.
        assert_ne!(record_aad("ab", "c"), record_aad("a", "bc"));
        assert_ne!(record_aad("a\0b", "c"), record_aad("a", "b\0c"));
        assert_ne!(data_key_aad("ab", "c", 1), data_key_aad("a", "bc", 1));
        assert_ne!(secret_aad("ab", "c", 1), secret_aad("a", "bc", 1));
        assert_ne!(data_key_aad("a", "b", 1), data_key_aad("a", "b", 2));
        assert_ne!(secret_aad("a", "b", 1), secret_aad("a", "b", 2));
        assert_ne!(kek_aad(1), kek_aad(2));
    }

    #[test]
    fn domains_are_separated() {
        let all = [
            record_aad("", ""),
            data_key_aad("", "", 0),
            kek_aad(0),
            secret_aad("", "", 0),
        ];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                if i != j {
                    assert!(!a.starts_with(&b[..b.iter().position(|&x| x == 0).unwrap_or(0) + 1]));
                }
            }
        }
    }
}
