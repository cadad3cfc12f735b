//! The names csync gives its temporaries in a managed tree, shared by the
//! writer (`apply`, which creates them) and the scanner (`scan`, which must
//! skip them). A leaf: it depends on nothing else in the crate, so `scan`
//! need not import `apply` to know what a temporary is.

use std::sync::atomic::{AtomicU64, Ordering};

/// Longest accepted path component, in bytes (`NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// Prefix of every temporary name csync creates.
pub const TEMP_PREFIX: &[u8] = b".csync.";

/// True for a name [`temp_name`] or [`fixed`] makes
/// (`.csync.<name>.<16 hex>`): a transfer in progress, or one a crash
/// interrupted. Scans skip these, so a leftover is never mistaken for a
/// managed file and spread to peers.
pub fn is_temp_name(name: &[u8]) -> bool {
    name.len() > TEMP_PREFIX.len() + 17
        && name.starts_with(TEMP_PREFIX)
        && name[name.len() - 17] == b'.'
        && name[name.len() - 16..].iter().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A fresh temporary name for `name`: `.csync.<name>.<16 hex>`, with `name`
/// shortened so the whole stays within [`NAME_MAX`] bytes; two calls never
/// give the same name.
pub fn temp_name(name: &[u8]) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.update(&now.to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    with_suffix(name, &h.finalize().to_hex().as_bytes()[..16])
}

/// The one temporary name for `name`'s content (the same on every call, so
/// a crashed writer's leftover is found again and replaced).
pub fn fixed(name: &[u8]) -> Vec<u8> {
    with_suffix(name, &blake3::hash(name).to_hex().as_bytes()[..16])
}

/// `.csync.<name, shortened>.<hex>`.
fn with_suffix(name: &[u8], hex: &[u8]) -> Vec<u8> {
    let keep = NAME_MAX - TEMP_PREFIX.len() - 1 - 16;
    let mut out = TEMP_PREFIX.to_vec();
    out.extend_from_slice(&name[..name.len().min(keep)]);
    out.push(b'.');
    out.extend_from_slice(hex);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised() {
        assert!(is_temp_name(&temp_name(b"nginx.conf")));
        assert!(is_temp_name(&temp_name(&[b'x'; 255])));
        assert!(is_temp_name(&fixed(b"nginx.conf")));
        assert!(!is_temp_name(b".csync.conf"));
        assert!(!is_temp_name(b"nginx.conf"));
        assert!(!is_temp_name(b".csync.x.0123456789ABCDEF"));
    }

    #[test]
    fn fixed_names_are_stable_and_fit() {
        assert_eq!(fixed(b"a"), fixed(b"a"));
        assert_ne!(fixed(b"a"), fixed(b"b"));
        assert!(fixed(&[b'x'; 255]).len() <= NAME_MAX);
    }
}
