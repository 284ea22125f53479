//! What may name an object: the rules and limits for tags and namespaces.
//! The bottom of the crate: it uses nothing else in it, so the error type
//! (which names the default namespace) and every layer above can use it.

use std::fmt;

/// The longest tag, in bytes (UTF-8).
pub const MAX_TAG_BYTES: usize = 1024;
/// The longest namespace, in bytes (UTF-8).
pub const MAX_NAMESPACE_BYTES: usize = 256;
/// The namespace of objects sent without one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why a tag or a namespace was refused. Converts into `Error::BadTag` and
/// `Error::BadArgument` respectively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The tag can not name an object; the message says why.
    Tag(String),
    /// The namespace can not hold objects; the message says why.
    Namespace(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Tag(m) | KeyError::Namespace(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Check a tag: a non-empty UTF-8 string of at most MAX_TAG_BYTES bytes
/// without NUL.
pub fn check_tag(tag: &str) -> Result<(), KeyError> {
    if tag.is_empty() {
        return Err(KeyError::Tag(
            "`tag` must be a non-empty string, not \"\"".into(),
        ));
    }
    if tag.len() > MAX_TAG_BYTES {
        return Err(KeyError::Tag(format!(
            "`tag` must be at most {MAX_TAG_BYTES} bytes long, not {} bytes",
            tag.len()
        )));
    }
    if tag.as_bytes().contains(&0) {
        return Err(KeyError::Tag(
            "`tag` must not contain a NUL character".into(),
        ));
    }
    Ok(())
}

/// Check a namespace: a non-empty UTF-8 string of at most
/// MAX_NAMESPACE_BYTES bytes without NUL.
pub fn check_namespace(ns: &str) -> Result<(), KeyError> {
    if ns.is_empty() || ns.len() > MAX_NAMESPACE_BYTES || ns.as_bytes().contains(&0) {
        return Err(KeyError::Namespace(format!(
            "`namespace` must be a non-empty string of at most {MAX_NAMESPACE_BYTES} bytes, not {} bytes",
            ns.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked() {
        assert!(check_tag("ok").is_ok());
        assert!(matches!(check_tag(""), Err(KeyError::Tag(_))));
        assert!(matches!(check_tag("a\0b"), Err(KeyError::Tag(_))));
        assert!(matches!(
            check_tag(&"x".repeat(1025)),
            Err(KeyError::Tag(_))
        ));
        assert!(check_tag(&"x".repeat(1024)).is_ok());
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(check_namespace(DEFAULT_NAMESPACE).is_ok());
        assert!(check_namespace(&"n".repeat(MAX_NAMESPACE_BYTES)).is_ok());
        for bad in [String::new(), "a\0b".into(), "n".repeat(257)] {
            assert!(matches!(check_namespace(&bad), Err(KeyError::Namespace(_))));
        }
    }
}
