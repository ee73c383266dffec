//! One type for every secret, so printing or serialising one by accident shows a mask.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

/// A secret string. `Debug` and `Display` mask it; reading it takes a deliberate [`Secret::expose`].
/// Deliberately not `Serialize`: writing a secret into a file is done by the one module that owns that file.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(Arc::from(s.into()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The masked form shown to people: a short prefix and suffix, never enough to use.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// Serialises a secret as `{"set": bool}`: whether it has a value, never the value (settings answers).
pub fn serialize_presence<S: serde::Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = ser.serialize_map(Some(1))?;
    m.serialize_entry("set", &!s.is_empty())?;
    m.end()
}

/// Masks a secret: up to 6 leading and 4 trailing characters of long values, `****` for short ones.
pub fn mask(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return String::new();
    }
    if chars.len() < 16 {
        return "****".into();
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    use subtle::ConstantTimeEq;
    let (a, b) = (a.as_ref(), b.as_ref());
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_mask() {
        let s = Secret::new("eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.secretpart");
        assert_eq!(format!("{s}"), "eyJ0eX****part");
        assert!(!format!("{s:?}").contains("secretpart"));
        assert_eq!(Secret::new("short").masked(), "****");
        assert_eq!(Secret::new("").masked(), "");
    }

    #[test]
    fn compare() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
