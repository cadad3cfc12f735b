//! `csync -k FILE`: a new group key, as csync2 makes them.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// csync2's key alphabet: base64 with `.` and `_` for `+` and `/`, so keys
/// pass csync2's own `[A-Za-z0-9._]` check.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";

/// 64 characters from 48 random bytes (384 bits), newline-terminated.
///
/// # Errors
/// When the system's random source cannot be read.
pub fn new_key() -> io::Result<String> {
    let mut raw = [0u8; 48];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    let mut key = String::with_capacity(65);
    for chunk in raw.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            key.push(ALPHABET[((n >> shift) & 63) as usize] as char);
        }
    }
    key.push('\n');
    Ok(key)
}

/// Writes a new key to `path`: created exclusively (an existing key is never
/// overwritten) with mode 0600, since the key is a group secret.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn create_key_file(path: &Path) -> io::Result<()> {
    let key = new_key()?;
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(key.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pass_csync2_rules_and_differ() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 65);
        assert!(crate::config::validate_key(&a).is_ok());
    }

    #[test]
    fn refuses_to_overwrite_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        create_key_file(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(create_key_file(&p).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    }
}
