//! `dzl-hsm`: the vault's root key in a hardware security module, through
//! PKCS#11 (the `cryptoki` crate).
//!
//! [`Pkcs11Root`] is a [`RootKeyHolder`]: the root key is an AES-256 secret
//! key object in a token, generated there, `CKA_SENSITIVE` and not
//! `CKA_EXTRACTABLE`, so its value never leaves the module. Wrapping a KEK
//! is `C_Encrypt` and unwrapping `C_Decrypt` with `CKM_AES_GCM` (96-bit IV
//! chosen by the vault, 128-bit tag, the envelope header and the KEK's
//! version as AAD): the stored envelope is byte for byte the one a root key
//! file would make (algorithm tag `0x01`), so `dzlctl root rekey` moves a
//! vault between a key file and a module either way. SoftHSM2, which the
//! tests use, offers AES-GCM and no SM4; a module that offers SM4-GCM
//! under a vendor mechanism would be a second arm here.
//!
//! The key is found by its label (`CKA_LABEL`, the URI's `object`) in the
//! token the URI names; a key that is extractable or not sensitive is
//! refused. The user PIN comes from a file or an environment variable
//! ([`uri`]), never the command line.
//!
//! Architecture invariant: this crate and the server's start-up are the
//! only places that load a PKCS#11 library; `dzl-crypto` stays free of IO.
//! One module is initialised once per process and shared
//! ([`module`]); each holder keeps its own logged-in session, under a mutex.

pub mod uri;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use dzl_crypto::envelope::{Algorithm, NONCE_LEN, TAG_LEN};
use dzl_crypto::{CryptoError, RootKeyHolder, Zeroizing};

pub use uri::{PinSource, Pkcs11Uri, TokenSelector};

/// Length of the root key in the module: AES-256.
const ROOT_KEY_LEN: u64 = 32;

/// What can go wrong reaching the root key in a module. Messages name the
/// module, token and object, never a PIN.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The `pkcs11:` URI is malformed or incomplete.
    #[error("pkcs11 URI: {0}")]
    Uri(String),
    /// The PIN could not be read from its source.
    #[error("PKCS#11 PIN: {0}")]
    Pin(String),
    /// The PKCS#11 library could not be loaded or initialised.
    #[error("PKCS#11 module {}: {detail}", path.display())]
    Module {
        /// The library.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// No token with the label or slot the URI names.
    #[error("no PKCS#11 token {0} in the module (is the token initialised?)")]
    TokenNotFound(String),
    /// The token refused the PIN.
    #[error("the PKCS#11 token {0} refused the PIN")]
    WrongPin(String),
    /// No secret key with the URI's label in the token.
    #[error("no secret key labelled {object:?} in the PKCS#11 token {token}")]
    KeyNotFound {
        /// The token.
        token: String,
        /// The label.
        object: String,
    },
    /// The key exists but may not hold a root key.
    #[error("the PKCS#11 key {object:?} in token {token} is unfit for a root key: {reason}")]
    UnfitKey {
        /// The token.
        token: String,
        /// The label.
        object: String,
        /// Why.
        reason: String,
    },
    /// Any other refusal of the module.
    #[error("PKCS#11 {action}: {detail}")]
    Call {
        /// What was being done.
        action: &'static str,
        /// The module's answer.
        detail: String,
    },
}

fn call(action: &'static str) -> impl Fn(CkError) -> HsmError {
    move |e| HsmError::Call {
        action,
        detail: e.to_string(),
    }
}

/// The initialised context of the PKCS#11 library at `path`, loaded and
/// `C_Initialize`d once per process and shared afterwards (a second
/// `C_Initialize` in one process is refused by most modules).
pub fn module(path: &Path) -> Result<Pkcs11, HsmError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let modules = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut modules = modules.lock().map_err(|_| HsmError::Module {
        path: path.to_owned(),
        detail: "the module registry is poisoned".into(),
    })?;
    if let Some(ctx) = modules.get(path) {
        return Ok(ctx.clone());
    }
    let failed = |detail: String| HsmError::Module {
        path: path.to_owned(),
        detail,
    };
    let ctx = Pkcs11::new(path).map_err(|e| failed(format!("loading: {e}")))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed(format!("initialising: {e}"))),
    }
    modules.insert(path.to_owned(), ctx.clone());
    Ok(ctx)
}

/// A root key held in a PKCS#11 token. `Debug` shows where, nothing else.
pub struct Pkcs11Root {
    session: Mutex<Session>,
    key: ObjectHandle,
    place: String,
    fingerprint: String,
}

impl std::fmt::Debug for Pkcs11Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Root")
            .field("key", &self.place)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl Pkcs11Root {
    /// Opens the existing root key the URI names: loads the module, finds
    /// the token, logs in with the PIN, finds the key and checks that it
    /// is an AES-256 key that is sensitive and not extractable.
    pub fn open(uri: &Pkcs11Uri) -> Result<Self, HsmError> {
        let (session, token) = login(uri)?;
        match find_key(&session, uri, &token)? {
            Some(key) => Self::from_parts(session, key, uri),
            None => Err(HsmError::KeyNotFound {
                token,
                object: uri.object.clone(),
            }),
        }
    }

    /// Opens the root key the URI names, generating it in the token first
    /// when the token has none of that label. Returns whether it was made.
    pub fn open_or_create(uri: &Pkcs11Uri) -> Result<(Self, bool), HsmError> {
        let (session, token) = login(uri)?;
        if let Some(key) = find_key(&session, uri, &token)? {
            return Ok((Self::from_parts(session, key, uri)?, false));
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(ROOT_KEY_LEN.into()),
            Attribute::Label(uri.object.as_bytes().to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ];
        let key = session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(call("generating the root key in the token"))?;
        Ok((Self::from_parts(session, key, uri)?, true))
    }

    fn from_parts(session: Session, key: ObjectHandle, uri: &Pkcs11Uri) -> Result<Self, HsmError> {
        check_fit(&session, key, uri)?;
        let mut root = Pkcs11Root {
            session: Mutex::new(session),
            key,
            place: uri.to_string(),
            fingerprint: String::new(),
        };
        root.fingerprint = root.compute_fingerprint().map_err(|_| HsmError::Call {
            action: "computing the root key's fingerprint",
            detail: "AES-GCM encryption with the key was refused".into(),
        })?;
        Ok(root)
    }

    /// Token and object, for messages.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// The fingerprint of a key that never leaves the module: the first 8
    /// bytes, in hex, of SHA-256 over `dzl/root-key-fingerprint/pkcs11/v1\0`
    /// and the GCM tag of an empty message under a fixed all-zero IV with
    /// that label as AAD — a keyed check value, the same for the same key
    /// in any token, revealing nothing of it. No envelope uses that IV
    /// (their IVs are random 96-bit values).
    fn compute_fingerprint(&self) -> Result<String, CryptoError> {
        const LABEL: &[u8] = b"dzl/root-key-fingerprint/pkcs11/v1\0";
        let tag = self.gcm(true, [0u8; NONCE_LEN], LABEL, &[])?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(LABEL);
        ctx.update(&tag);
        Ok(hex::encode(&ctx.finish().as_ref()[..8]))
    }

    fn gcm(
        &self,
        encrypt: bool,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut iv = nonce;
        let params = GcmParams::new(&mut iv, aad, (TAG_LEN as u64 * 8).into())
            .map_err(|_| CryptoError::KeyModule)?;
        let mechanism = Mechanism::AesGcm(params);
        let out = {
            let session = self.session.lock().map_err(|_| CryptoError::KeyModule)?;
            if encrypt {
                session.encrypt(&mechanism, self.key, data)
            } else {
                session.decrypt(&mechanism, self.key, data)
            }
        };
        match out {
            Ok(bytes) => Ok(Zeroizing::new(bytes)),
            // The tag did not verify: tampered bytes, other AAD or key.
            Err(CkError::Pkcs11(RvError::EncryptedDataInvalid, _))
            | Err(CkError::Pkcs11(RvError::EncryptedDataLenRange, _)) => {
                Err(CryptoError::Integrity)
            }
            // SoftHSM2 answers a tag that does not verify with
            // CKR_GENERAL_ERROR. A module that still encrypts with the key
            // (its fingerprint comes out the same) is sound, so that
            // answer to a decryption is the tag's; otherwise the module
            // failed.
            Err(CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, _))
                if !encrypt
                    && self.compute_fingerprint().ok().as_deref()
                        == Some(self.fingerprint.as_str()) =>
            {
                Err(CryptoError::Integrity)
            }
            Err(_) => Err(CryptoError::KeyModule),
        }
    }
}

impl RootKeyHolder for Pkcs11Root {
    fn algorithm(&self) -> Algorithm {
        Algorithm::Aes256Gcm
    }

    fn seal_raw(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let sealed = self.gcm(true, nonce, aad, plaintext)?;
        if sealed.len() != plaintext.len() + TAG_LEN {
            return Err(CryptoError::KeyModule);
        }
        Ok(sealed.to_vec())
    }

    fn open_raw(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if ciphertext_and_tag.len() < TAG_LEN {
            return Err(CryptoError::Integrity);
        }
        self.gcm(false, nonce, aad, ciphertext_and_tag)
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

/// Loads the module, finds the token, opens a read-write session and logs
/// the user in. Returns the session and the token's description.
fn login(uri: &Pkcs11Uri) -> Result<(Session, String), HsmError> {
    let pin = uri.read_pin()?;
    let ctx = module(&uri.module_path)?;
    let (slot, token) = find_token(&ctx, uri)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(call("opening a session with the token"))?;
    match session.login(UserType::User, Some(&AuthPin::from(pin.as_str()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok((session, token)),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _))
        | Err(CkError::Pkcs11(RvError::PinInvalid, _))
        | Err(CkError::Pkcs11(RvError::PinLenRange, _)) => Err(HsmError::WrongPin(token)),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(HsmError::Call {
            action: "logging in",
            detail: format!("the user PIN of token {token} is locked"),
        }),
        Err(e) => Err(call("logging in")(e)),
    }
}

fn find_token(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<(Slot, String), HsmError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(call("listing the module's slots"))?;
    match &uri.token {
        TokenSelector::Slot(id) => slots
            .into_iter()
            .find(|s| s.id() == *id)
            .map(|s| (s, format!("in slot {id}")))
            .ok_or_else(|| HsmError::TokenNotFound(format!("in slot {id}"))),
        TokenSelector::Label(label) => {
            for slot in slots {
                let info = ctx
                    .get_token_info(slot)
                    .map_err(call("reading a token's label"))?;
                if info.label().trim_end() == label {
                    return Ok((slot, format!("{label:?}")));
                }
            }
            Err(HsmError::TokenNotFound(format!("{label:?}")))
        }
    }
}

fn find_key(
    session: &Session,
    uri: &Pkcs11Uri,
    token: &str,
) -> Result<Option<ObjectHandle>, HsmError> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(uri.object.as_bytes().to_vec()),
        ])
        .map_err(call("looking for the root key"))?;
    match found.as_slice() {
        [] => Ok(None),
        [key] => Ok(Some(*key)),
        _ => Err(HsmError::UnfitKey {
            token: token.to_owned(),
            object: uri.object.clone(),
            reason: format!("{} secret keys carry this label", found.len()),
        }),
    }
}

/// Refuses a key that could leave the module or is not AES-256.
fn check_fit(session: &Session, key: ObjectHandle, uri: &Pkcs11Uri) -> Result<(), HsmError> {
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Sensitive,
                AttributeType::Extractable,
            ],
        )
        .map_err(call("reading the root key's attributes"))?;
    let unfit = |reason: &str| HsmError::UnfitKey {
        token: uri.to_string(),
        object: uri.object.clone(),
        reason: reason.to_owned(),
    };
    let mut ok = (false, false, false, false);
    for a in &attrs {
        match a {
            Attribute::KeyType(t) => ok.0 = *t == KeyType::AES,
            Attribute::ValueLen(l) => ok.1 = u64::from(*l) == ROOT_KEY_LEN,
            Attribute::Sensitive(s) => ok.2 = *s,
            Attribute::Extractable(e) => ok.3 = !*e,
            _ => {}
        }
    }
    match ok {
        (false, _, _, _) => Err(unfit("it is not an AES key")),
        (_, false, _, _) => Err(unfit("it is not 32 bytes long")),
        (_, _, false, _) => Err(unfit("it is not sensitive (CKA_SENSITIVE)")),
        (_, _, _, false) => Err(unfit("it is extractable (CKA_EXTRACTABLE)")),
        _ => Ok(()),
    }
}

pub mod softhsm;
