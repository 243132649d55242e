//! The checks behind dzl-vault's fuzz targets. Each function takes the raw
//! fuzzer input, decodes it into the shape its target needs, calls the
//! production code and panics when a property fails. libFuzzer drives them
//! through `fuzz_targets/*.rs`; `tests/corpus.rs` replays every seed (and a
//! bounded pseudo-random stream) through the same functions on stable Rust.
//!
//! | target | production code | properties |
//! |---|---|---|
//! | `signing` | `dzl_types::signing` | canonical string and HMAC equal an independent implementation (RustCrypto `sha2`/`hmac`); a signature verifies; no other text verifies (no malleable encodings); one flipped canonical bit fails; `valid_nonce` is exactly `[A-Za-z0-9_-]{16,64}` |
//! | `deposit_json` | `serde_json::from_slice::<DepositRequest>` | never panics; an accepted body re-serialises to JSON that parses to the same value; the groups always include `applicant`; the other request bodies parse or refuse without panicking |
//! | `envelope` | `dzl_crypto::open`, `open_record`, `Keyring::unwrap_data_key` / `open_secret`, `RootKey::unwrap_kek` (fixed keys) | never panics; whatever opens is byte-for-byte the vault's own sealing of what it opened to (no forgery, no malleability); a mutated envelope, other deposit id, group, owner, label or version never opens |
//! | `code` | `AuthCode::parse`, `expose`, `matches`; id parsers | never panics; `parse(s)` ⇒ `expose(parse(s)) == s`; for any row and secret, `parse(expose(x)) == x` (row, secret hash, text); ids round-trip |

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use dzl_crypto::{CryptoError, Keyring, RootKey, SecretKey, Suite, WrappedKey};
use dzl_types::wire::{
    DepositRequest, IssueCodeRequest, OutcomeRequest, RedemptionRequest, SubjectAccessRequest,
};
use dzl_types::{signing, AuthCode, CodeId, DepositId, Group, RedemptionId, TenantId};

/// A cursor over the fuzzer's bytes; running out yields zeros / empties.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader(data)
    }
    /// One byte (0 when exhausted).
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    /// A big-endian u32 (zero-padded).
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let t = self.take(4);
        b[..t.len()].copy_from_slice(t);
        u32::from_be_bytes(b)
    }
    /// A string of a length given by one byte (lossy UTF-8).
    pub fn text(&mut self) -> String {
        let n = self.byte() as usize;
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(usize::MAX)
    }
}

// ---------------------------------------------------------------- signing

/// Input: `METHOD \n PATH \n TIMESTAMP \n NONCE \n SECRET \n SIGNATURE \n BODY`
/// (a missing field is empty; an unparsable timestamp is taken from its bytes).
pub fn signing(data: &[u8]) {
    let mut parts = data.splitn(7, |b| *b == b'\n');
    let mut field = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let method = field();
    let path = field();
    let ts_text = field();
    let nonce = field();
    let secret = field();
    let sig = field();
    let body = parts.next().unwrap_or_default();
    let ts = ts_text.trim().parse::<i64>().unwrap_or_else(|_| {
        let mut b = [0u8; 8];
        let t = ts_text.as_bytes();
        let n = t.len().min(8);
        b[..n].copy_from_slice(&t[..n]);
        i64::from_be_bytes(b)
    });

    let canonical = signing::canonical(&method, &path, ts, &nonce, body);
    // An independent canonical string (RustCrypto SHA-256).
    use sha2::Digest as _;
    let expected = format!(
        "{method}\n{path}\n{ts}\n{nonce}\n{}",
        hex::encode(sha2::Sha256::digest(body))
    );
    assert_eq!(
        canonical, expected,
        "canonical string differs from docs/api.md"
    );
    // Fields come back out when none contains a newline (HTTP guarantees it
    // for method and path; the server checks the nonce first).
    if !method.contains('\n') && !path.contains('\n') && signing::valid_nonce(&nonce) {
        let back: Vec<&str> = canonical.rsplitn(4, '\n').collect();
        assert_eq!(back[1], nonce);
        assert_eq!(back[2], ts.to_string());
        assert_eq!(back[3], format!("{method}\n{path}"));
    }

    // An independent HMAC-SHA256 (RustCrypto) in standard padded base64.
    let signature = signing::sign(secret.as_bytes(), &canonical);
    use hmac::Mac as _;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes any key");
    mac.update(canonical.as_bytes());
    assert_eq!(
        signature,
        STANDARD.encode(mac.finalize().into_bytes()),
        "signature differs from HMAC-SHA256"
    );
    assert!(signing::verify(secret.as_bytes(), &canonical, &signature));
    // Only the one encoding of the one tag verifies.
    if signing::verify(secret.as_bytes(), &canonical, &sig) {
        assert_eq!(sig, signature, "a second text verified as the signature");
    }
    // One flipped bit of the signed text fails.
    let mut flipped = canonical.clone().into_bytes();
    if !flipped.is_empty() {
        let i = body.len() % flipped.len();
        flipped[i] ^= 0x01;
        if let Ok(other) = String::from_utf8(flipped) {
            assert!(
                !signing::verify(secret.as_bytes(), &other, &signature),
                "a changed canonical string verified"
            );
        }
    }
    // The nonce rule exactly.
    let rule = (16..=64).contains(&nonce.len())
        && nonce
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    assert_eq!(signing::valid_nonce(&nonce), rule, "nonce rule");
}

// ----------------------------------------------------------- deposit_json

/// Input: a request body.
pub fn deposit_json(data: &[u8]) {
    match serde_json::from_slice::<DepositRequest>(data) {
        Ok(d) => {
            assert!(d.groups().contains(Group::Applicant));
            let again = serde_json::to_vec(&d).expect("an accepted deposit serialises");
            let back: DepositRequest = serde_json::from_slice(&again)
                .unwrap_or_else(|e| panic!("an accepted deposit does not parse again: {e}"));
            assert_eq!(back, d, "deposit round trip");
            assert!(d.grants.iter().all(|g| g.scopes.iter().next().is_some()));
        }
        Err(e) => {
            // The error message is built without panicking.
            let _ = e.to_string();
        }
    }
    // The other request bodies of the API, on the same bytes.
    if let Ok(r) = serde_json::from_slice::<IssueCodeRequest>(data) {
        let again = serde_json::to_vec(&r).expect("serialises");
        assert_eq!(
            serde_json::from_slice::<IssueCodeRequest>(&again).ok(),
            Some(r)
        );
    }
    if let Ok(r) = serde_json::from_slice::<OutcomeRequest>(data) {
        let again = serde_json::to_vec(&r).expect("serialises");
        assert_eq!(
            serde_json::from_slice::<OutcomeRequest>(&again).ok(),
            Some(r)
        );
    }
    let _ = serde_json::from_slice::<RedemptionRequest>(data);
    let _ = serde_json::from_slice::<SubjectAccessRequest>(data);
}

// --------------------------------------------------------------- envelope

/// The fixed keys of the envelope target: all derived from constants, so a
/// crashing input reproduces anywhere.
pub struct Fixture {
    /// The raw key of mode 0.
    pub key: SecretKey,
    /// Root key (mode 3).
    pub root: RootKey,
    /// The root key's wrapping of KEK version 1.
    pub wrapped_kek: Vec<u8>,
    /// A keyring holding KEK version 1.
    pub keyring: Keyring,
    /// A data key wrapped for (`DEPOSIT`, `"records"`) under version 1.
    pub wrapped_dk: WrappedKey,
    /// A secret sealed for (`LABEL`, `TENANT`) under version 1.
    pub sealed_secret: WrappedKey,
    /// The data key.
    pub dk: dzl_crypto::DataKey,
    /// `PLAINTEXT` sealed as the `risk` group of `DEPOSIT` under `dk`.
    pub record: Vec<u8>,
}

/// Deposit id of the fixture's record.
pub const DEPOSIT: &str = "dep_00112233445566778899aabbccddeeff";
/// Tenant id of the fixture's sealed secret.
pub const TENANT: &str = "ten_00112233445566778899aabbccddeeff";
/// Label of the fixture's sealed secret.
pub const LABEL: &str = "tenant-secret";
/// Group of the fixture's record.
pub const GROUP: &str = "risk";
/// Plaintext of the fixture's record.
pub const PLAINTEXT: &[u8] = br#"{"score":712,"grade":"B+"}"#;
const KEY: [u8; 32] = [0x42; 32];
const ROOT: [u8; 32] = [0x17; 32];
const KEK: [u8; 32] = [0x5a; 32];
const DK: [u8; 32] = [0xd4; 32];
const NONCE: [u8; 12] = [0x24; 12];

fn lp(out: &mut Vec<u8>, f: &[u8]) {
    out.extend_from_slice(&(f.len() as u64).to_be_bytes());
    out.extend_from_slice(f);
}

/// `dzl/record/v1\0 || lp(deposit) || lp(group)` (crates/dzl-crypto/src/aad.rs).
pub fn record_aad(deposit: &str, group: &str) -> Vec<u8> {
    let mut a = b"dzl/record/v1\0".to_vec();
    lp(&mut a, deposit.as_bytes());
    lp(&mut a, group.as_bytes());
    a
}

fn data_key_aad(owner: &str, kind: &str, v: u32) -> Vec<u8> {
    let mut a = b"dzl/data-key/v1\0".to_vec();
    lp(&mut a, owner.as_bytes());
    lp(&mut a, kind.as_bytes());
    a.extend_from_slice(&v.to_be_bytes());
    a
}

fn secret_aad(label: &str, id: &str, v: u32) -> Vec<u8> {
    let mut a = b"dzl/secret/v1\0".to_vec();
    lp(&mut a, label.as_bytes());
    lp(&mut a, id.as_bytes());
    a.extend_from_slice(&v.to_be_bytes());
    a
}

fn kek_aad(v: u32) -> Vec<u8> {
    let mut a = b"dzl/kek/v1\0".to_vec();
    a.extend_from_slice(&v.to_be_bytes());
    a
}

fn key(bytes: &[u8; 32]) -> SecretKey {
    SecretKey::from_bytes(bytes).expect("32 bytes")
}

impl Fixture {
    /// Builds the fixture (deterministic).
    pub fn new() -> Self {
        let seal = |k: &[u8; 32], aad: &[u8], pt: &[u8]| {
            dzl_crypto::seal_with_nonce(&key(k), aad, NONCE, pt).expect("seal")
        };
        let root = RootKey::from_base64(&STANDARD.encode(ROOT)).expect("root");
        let wrapped_kek = seal(&ROOT, &kek_aad(1), &KEK);
        let kek = root
            .unwrap_kek(1, Suite::Intl, &wrapped_kek)
            .expect("the fixture KEK opens");
        let keyring = Keyring::new(vec![kek], 1).expect("keyring");
        let wrapped_dk = WrappedKey {
            kek_version: 1,
            bytes: seal(&KEK, &data_key_aad(DEPOSIT, "records", 1), &DK),
        };
        let dk = keyring
            .unwrap_data_key(&wrapped_dk, DEPOSIT, "records")
            .expect("the fixture data key opens");
        let sealed_secret = WrappedKey {
            kek_version: 1,
            bytes: seal(&KEK, &secret_aad(LABEL, TENANT, 1), b"s3cr3t"),
        };
        let record = seal(&DK, &record_aad(DEPOSIT, GROUP), PLAINTEXT);
        assert_eq!(
            dzl_crypto::open_record(&dk, DEPOSIT, GROUP, &record)
                .expect("the fixture record opens")
                .as_slice(),
            PLAINTEXT
        );
        Fixture {
            key: key(&KEY),
            root,
            wrapped_kek,
            keyring,
            wrapped_dk,
            sealed_secret,
            dk,
            record,
        }
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(Fixture::new)
}

/// An error any refusal may be.
fn refusal(e: &CryptoError) {
    assert!(
        matches!(
            e,
            CryptoError::Integrity
                | CryptoError::UnknownAlgorithm(_)
                | CryptoError::UnsupportedFormat(_)
                | CryptoError::UnknownKeyVersion(_)
                | CryptoError::BadKeyMaterial
        ),
        "unexpected error {e:?}"
    );
    // Error text never carries bytes of the input beyond a tag number.
    assert!(e.to_string().len() < 200);
}

/// `base` with `mask` XORed over it; `mask[0]` also shortens or lengthens it.
fn mutate(base: &[u8], mask: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    let (&op, mask) = mask.split_first().unwrap_or((&0, &[]));
    for (i, m) in mask.iter().enumerate() {
        if i < out.len() {
            out[i] ^= m;
        } else if op & 0x80 != 0 {
            out.push(*m);
        }
    }
    if op & 0x40 != 0 {
        out.truncate(out.len().saturating_sub((op & 0x3f) as usize + 1));
    }
    out
}

/// Input: a mode byte, then per mode:
/// 0 raw `open` (aad length byte, aad, envelope); 1 the fixture record
/// mutated by a mask; 2 `open_record` with a chosen deposit id and group;
/// 3 a wrapped data key (version, owner, kind, bytes); 4 a wrapped KEK
/// (version, bytes); 5 a sealed secret (version, label, id, bytes).
pub fn envelope(data: &[u8]) {
    let f = fixture();
    let mut r = Reader::new(data);
    match r.byte() % 6 {
        0 => {
            let n = r.byte() as usize;
            let aad = r.take(n).to_vec();
            let env = r.rest();
            match dzl_crypto::open(&f.key, &aad, env) {
                // Only the vault's own sealing of that plaintext under that
                // nonce opens: re-sealing gives the same bytes.
                Ok(plain) => {
                    let nonce: [u8; 12] = env[2..14].try_into().expect("opened ⇒ long enough");
                    let again =
                        dzl_crypto::seal_with_nonce(&f.key, &aad, nonce, &plain).expect("seal");
                    assert_eq!(again, env, "an envelope opened that the vault never sealed");
                }
                Err(e) => refusal(&e),
            }
        }
        1 => {
            let env = mutate(&f.record, r.rest());
            match dzl_crypto::open_record(&f.dk, DEPOSIT, GROUP, &env) {
                Ok(plain) => {
                    assert_eq!(env, f.record, "a changed record envelope opened");
                    assert_eq!(plain.as_slice(), PLAINTEXT);
                }
                Err(e) => refusal(&e),
            }
        }
        2 => {
            let deposit = r.text();
            let group = r.text();
            match dzl_crypto::open_record(&f.dk, &deposit, &group, &f.record) {
                Ok(_) => assert!(
                    deposit == DEPOSIT && group == GROUP,
                    "a record opened under another deposit or group"
                ),
                Err(e) => refusal(&e),
            }
        }
        3 => {
            let version = r.u32();
            let owner = r.text();
            let kind = r.text();
            let bytes = mutate(&f.wrapped_dk.bytes, r.rest());
            let w = WrappedKey {
                kek_version: version,
                bytes,
            };
            match f.keyring.unwrap_data_key(&w, &owner, &kind) {
                Ok(dk) => {
                    assert!(
                        w == f.wrapped_dk && owner == DEPOSIT && kind == "records",
                        "a changed wrapped data key opened"
                    );
                    // It is the data key: the fixture record opens under it.
                    assert!(dzl_crypto::open_record(&dk, DEPOSIT, GROUP, &f.record).is_ok());
                }
                Err(e) => refusal(&e),
            }
        }
        4 => {
            let version = r.u32();
            let bytes = mutate(&f.wrapped_kek, r.rest());
            match f.root.unwrap_kek(version, Suite::Intl, &bytes) {
                Ok(_) => assert!(
                    version == 1 && bytes == f.wrapped_kek,
                    "a changed wrapped KEK opened"
                ),
                Err(e) => refusal(&e),
            }
        }
        _ => {
            let version = r.u32();
            let label = r.text();
            let id = r.text();
            let bytes = mutate(&f.sealed_secret.bytes, r.rest());
            let w = WrappedKey {
                kek_version: version,
                bytes,
            };
            match f.keyring.open_secret(&label, &id, &w) {
                Ok(plain) => {
                    assert!(
                        w == f.sealed_secret && label == LABEL && id == TENANT,
                        "a changed sealed secret opened"
                    );
                    assert_eq!(plain.as_slice(), b"s3cr3t");
                }
                Err(e) => refusal(&e),
            }
        }
    }
}

// ------------------------------------------------------------------- code

fn code_hash(secret: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"dzl/code/v1\0");
    h.update(secret);
    h.finalize().to_vec()
}

/// Input: mode byte 0 (or any even byte): the rest is a candidate code text
/// (and id text); odd: 8 bytes of row key and 16 of secret build a code.
pub fn code(data: &[u8]) {
    let mut r = Reader::new(data);
    if r.byte().is_multiple_of(2) {
        let Ok(text) = std::str::from_utf8(r.rest()) else {
            return;
        };
        if let Ok(c) = AuthCode::parse(text) {
            assert_eq!(c.expose(), text, "expose(parse(s)) != s");
            let again = AuthCode::parse(&c.expose()).expect("an exposed code parses");
            assert_eq!(again.row(), c.row());
            // The text is `ac_` + base64url(row || secret): the secret is
            // the last 16 bytes, and only its hash matches.
            let raw = URL_SAFE_NO_PAD.decode(&text[3..]).expect("parsed ⇒ base64");
            assert!(c.matches(&code_hash(&raw[8..])));
            assert!(again.matches(&code_hash(&raw[8..])));
            assert_eq!(i64::from_be_bytes(raw[..8].try_into().expect("8")), c.row());
        } else {
            let _ = AuthCode::parse(text).map_err(|e| e.to_string());
        }
        // The public ids: a parsed id is its text.
        if let Ok(id) = CodeId::parse(text) {
            assert_eq!(id.as_str(), text);
        }
        if let Ok(id) = DepositId::parse(text) {
            assert_eq!(id.as_str(), text);
        }
        if let Ok(id) = TenantId::parse(text) {
            assert_eq!(id.as_str(), text);
        }
        if let Ok(id) = RedemptionId::parse(text) {
            assert_eq!(id.as_str(), text);
        }
    } else {
        let mut raw = [0u8; 24];
        let t = r.take(24);
        raw[..t.len()].copy_from_slice(t);
        let text = format!("ac_{}", URL_SAFE_NO_PAD.encode(raw));
        let c = AuthCode::parse(&text).expect("every row and secret make a code");
        assert_eq!(c.row(), i64::from_be_bytes(raw[..8].try_into().expect("8")));
        assert!(c.matches(&code_hash(&raw[8..])), "secret lost in parsing");
        let mut other = raw;
        other[23] ^= 1;
        assert!(!c.matches(&code_hash(&other[8..])));
        assert_eq!(c.expose(), text, "parse(expose(x)) != x");
        assert_eq!(text.len(), 35);
        assert!(text[3..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // No other text names this code: one changed character is another
        // code or no code.
        let mut changed = text.clone().into_bytes();
        let i = 3 + (raw[0] as usize % 32);
        changed[i] = if changed[i] == b'A' { b'B' } else { b'A' };
        if let Ok(other) = AuthCode::parse(std::str::from_utf8(&changed).expect("ascii")) {
            assert!(
                other.row() != c.row() || !other.matches(&code_hash(&raw[8..])),
                "two texts name one code"
            );
        }
    }
}
