//! The `pkcs11:` URI that names the root key (RFC 7512 style):
//!
//! ```text
//! pkcs11:token=dzl-vault;object=dzl-root?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/dzl/hsm.pin
//! pkcs11:slot-id=0;object=dzl-root?module-path=/opt/hsm/lib/libcs_pkcs11_R3.so&pin-source=env:DZL_HSM_PIN
//! ```
//!
//! - path attributes (`;`-separated): `token` (the token label) or
//!   `slot-id` (a slot number), one of them required; `object` (the key's
//!   label), required; `type`, if present, must be `secret-key`; `id`,
//!   `manufacturer`, `model`, `serial`, `library-*` are accepted and ignored.
//! - query attributes (`&`-separated): `module-path` (the PKCS#11 library),
//!   required; `pin-source`, required: `file:<path>` (the file's first line
//!   is the user PIN) or `env:<VARIABLE>` (the variable holds it).
//!   `pin-value` is refused: a PIN in clear would end up in shell history,
//!   process listings and configuration files.
//!
//! Values are percent-decoded (RFC 3986). A URI carries no secret, so it
//! may be logged and kept in configuration.

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::HsmError;

/// Where the token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token whose label is this (`token=`).
    Label(String),
    /// The slot of this number (`slot-id=`).
    Slot(u64),
}

/// Where the user PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// The first line of this file (`pin-source=file:…`).
    File(PathBuf),
    /// This environment variable (`pin-source=env:…`).
    Env(String),
}

/// A parsed `pkcs11:` URI naming a root key in a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// The PKCS#11 library.
    pub module_path: PathBuf,
    /// The token.
    pub token: TokenSelector,
    /// The key object's label (`CKA_LABEL`).
    pub object: String,
    /// Where the user PIN comes from.
    pub pin: PinSource,
}

impl Pkcs11Uri {
    /// Parses a `pkcs11:` URI (see the module documentation). The message
    /// of the error names what is wrong, never a PIN.
    pub fn parse(text: &str) -> Result<Self, HsmError> {
        let bad = |m: &str| HsmError::Uri(m.to_owned());
        let rest = text
            .trim()
            .strip_prefix("pkcs11:")
            .ok_or_else(|| bad("a PKCS#11 root key is named by a URI starting with pkcs11:"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut token = None;
        let mut slot = None;
        let mut object = None;
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| bad("every pkcs11: path attribute is name=value"))?;
            let value = pct_decode(value)?;
            match name {
                "token" => token = Some(value),
                "slot-id" => {
                    slot = Some(
                        value
                            .parse::<u64>()
                            .map_err(|_| bad("slot-id must be a decimal number"))?,
                    )
                }
                "object" => object = Some(value),
                "type" if value == "secret-key" => {}
                "type" => return Err(bad("the root key's type is secret-key")),
                "id"
                | "manufacturer"
                | "model"
                | "serial"
                | "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-manufacturer"
                | "slot-description" => {}
                other => return Err(HsmError::Uri(format!("unknown pkcs11: attribute {other}"))),
            }
        }
        let mut module = None;
        let mut pin = None;
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| bad("every pkcs11: query attribute is name=value"))?;
            match name {
                "module-path" => module = Some(PathBuf::from(pct_decode(value)?)),
                "pin-source" => {
                    let value = pct_decode(value)?;
                    pin = Some(if let Some(p) = value.strip_prefix("file:") {
                        let p = p.strip_prefix("//").unwrap_or(p);
                        PinSource::File(PathBuf::from(p))
                    } else if let Some(v) = value.strip_prefix("env:") {
                        if v.is_empty() {
                            return Err(bad("pin-source=env: needs a variable name"));
                        }
                        PinSource::Env(v.to_owned())
                    } else {
                        return Err(bad("pin-source must be file:<path> or env:<VARIABLE>"));
                    })
                }
                "pin-value" => {
                    return Err(bad(
                        "pin-value is refused: give the PIN by pin-source=file:<path> or \
                         pin-source=env:<VARIABLE>, never in the URI",
                    ))
                }
                "module-name" => {
                    return Err(bad("give the library by module-path, not module-name"))
                }
                other => {
                    return Err(HsmError::Uri(format!(
                        "unknown pkcs11: query attribute {other}"
                    )))
                }
            }
        }
        let token = match (token, slot) {
            (Some(label), None) => TokenSelector::Label(label),
            (None, Some(slot)) => TokenSelector::Slot(slot),
            (Some(_), Some(_)) => {
                return Err(bad("name the token by token= or slot-id=, not both"))
            }
            (None, None) => return Err(bad("the pkcs11: URI must name the token (token=label)")),
        };
        let object = object
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("the pkcs11: URI must name the key (object=label)"))?;
        let module_path =
            module.ok_or_else(|| bad("the pkcs11: URI must give ?module-path=<library>"))?;
        let pin = pin.ok_or_else(|| {
            bad("the pkcs11: URI must give pin-source=file:<path> or pin-source=env:<VARIABLE>")
        })?;
        Ok(Pkcs11Uri {
            module_path,
            token,
            object,
            pin,
        })
    }

    /// Reads the user PIN from its source: a file's first line, or an
    /// environment variable, surrounding whitespace trimmed.
    pub fn read_pin(&self) -> Result<Zeroizing<String>, HsmError> {
        let raw = match &self.pin {
            PinSource::File(path) => {
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    HsmError::Pin(format!("reading the PIN file {}: {e}", path.display()))
                })?)
            }
            PinSource::Env(var) => Zeroizing::new(std::env::var(var).map_err(|_| {
                HsmError::Pin(format!("the PIN variable {var} is not set (or not UTF-8)"))
            })?),
        };
        let pin = Zeroizing::new(raw.lines().next().unwrap_or("").trim().to_owned());
        if pin.is_empty() {
            return Err(HsmError::Pin(match &self.pin {
                PinSource::File(p) => format!("the PIN file {} is empty", p.display()),
                PinSource::Env(v) => format!("the PIN variable {v} is empty"),
            }));
        }
        Ok(pin)
    }
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = HsmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pkcs11Uri::parse(s)
    }
}

impl fmt::Display for Pkcs11Uri {
    /// A short description for messages: token and object, no PIN source.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.token {
            TokenSelector::Label(l) => write!(f, "token {l:?}")?,
            TokenSelector::Slot(s) => write!(f, "slot {s}")?,
        }
        write!(f, ", object {:?}", self.object)
    }
}

fn pct_decode(s: &str) -> Result<String, HsmError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| HsmError::Uri("a % in the pkcs11: URI is not %XX".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| HsmError::Uri("the pkcs11: URI is not UTF-8".into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_full_uri_parses() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=dzl%20vault;object=dzl-root;type=secret-key\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/dzl/hsm.pin",
        )
        .unwrap();
        assert_eq!(u.token, TokenSelector::Label("dzl vault".into()));
        assert_eq!(u.object, "dzl-root");
        assert_eq!(
            u.module_path,
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(u.pin, PinSource::File("/etc/dzl/hsm.pin".into()));
        assert_eq!(u.to_string(), "token \"dzl vault\", object \"dzl-root\"");
        let s = Pkcs11Uri::parse("pkcs11:slot-id=3;object=k?pin-source=env:PIN&module-path=/m.so")
            .unwrap();
        assert_eq!(s.token, TokenSelector::Slot(3));
        assert_eq!(s.pin, PinSource::Env("PIN".into()));
    }

    #[test]
    fn incomplete_or_unsafe_uris_are_refused_with_the_reason() {
        let m = "module-path=/m.so";
        for (uri, needle) in [
            ("file:/x", "starting with pkcs11:"),
            (
                "pkcs11:object=k?module-path=/m.so&pin-source=env:P",
                "name the token",
            ),
            (
                "pkcs11:token=t?module-path=/m.so&pin-source=env:P",
                "name the key",
            ),
            ("pkcs11:token=t;object=k?pin-source=env:P", "module-path"),
            ("pkcs11:token=t;object=k?module-path=/m.so", "pin-source"),
            (
                &format!("pkcs11:token=t;object=k?{m}&pin-value=1234"),
                "pin-value is refused",
            ),
            (
                &format!("pkcs11:token=t;object=k?{m}&pin-source=1234"),
                "file:<path>",
            ),
            (
                &format!("pkcs11:token=t;slot-id=1;object=k?{m}&pin-source=env:P"),
                "not both",
            ),
            (
                &format!("pkcs11:token=t;object=k;type=private?{m}&pin-source=env:P"),
                "secret-key",
            ),
            (
                &format!("pkcs11:token=t%zz;object=k?{m}&pin-source=env:P"),
                "%XX",
            ),
            (
                &format!("pkcs11:token=t;color=red;object=k?{m}&pin-source=env:P"),
                "color",
            ),
        ] {
            let err = Pkcs11Uri::parse(uri).unwrap_err().to_string();
            assert!(err.contains(needle), "{uri}: {err}");
            assert!(!err.contains("1234"), "{err}");
        }
    }

    #[test]
    fn the_pin_comes_from_its_file_or_variable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pin");
        std::fs::write(&file, "98765\n").unwrap();
        let mut u = Pkcs11Uri::parse(&format!(
            "pkcs11:token=t;object=k?module-path=/m.so&pin-source=file:{}",
            file.display()
        ))
        .unwrap();
        assert_eq!(u.read_pin().unwrap().as_str(), "98765");
        std::fs::write(&file, "\n").unwrap();
        assert!(u.read_pin().unwrap_err().to_string().contains("is empty"));
        u.pin = PinSource::Env("DZL_HSM_TEST_PIN_THAT_IS_NOT_SET".into());
        assert!(u.read_pin().unwrap_err().to_string().contains("is not set"));
    }
}
