//! csync2's group key file rules: the first line is the key, at least 32 characters
//! from `[A-Za-z0-9._]`.
//!
//! The same rules serve `config::load` and `csync -k`'s tests, so a key that csync
//! writes is always one it accepts.

/// Shortest key csync2 accepts.
pub const MIN_KEY_LEN: usize = 32;

/// Checks the content of a key file and returns the key (its first line).
///
/// # Errors
/// A one-line reason, e.g. `the key is 20 characters long; at least 32 are required`.
pub fn validate_key(text: &str) -> Result<String, String> {
    let line = text.split('\n').next().unwrap_or("");
    // Files edited on Windows end lines with CRLF; the `\r` is not part of the key.
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err("the key file's first line is empty".to_owned());
    }
    if let Some((i, c)) = line
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_'))
    {
        return Err(format!(
            "the key contains '{}' at position {}; only A-Z, a-z, 0-9, '.' and '_' are allowed",
            c.escape_debug(),
            i + 1
        ));
    }
    let len = line.chars().count();
    if len < MIN_KEY_LEN {
        return Err(format!(
            "the key is {len} characters long; at least {MIN_KEY_LEN} are required"
        ));
    }
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "abcdefghijklmnopqrstuvwxyzABCDEF._0123456789";

    #[test]
    fn accepts_first_line_only() {
        assert_eq!(validate_key(&format!("{GOOD}\nanything else!")).unwrap(), GOOD);
        assert_eq!(validate_key(&format!("{GOOD}\r\n")).unwrap(), GOOD);
        assert_eq!(validate_key(GOOD).unwrap(), GOOD);
        assert!(validate_key(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!(validate_key("").unwrap_err(), "the key file's first line is empty");
        assert_eq!(validate_key("\nabc").unwrap_err(), "the key file's first line is empty");
        assert_eq!(
            validate_key(&"a".repeat(31)).unwrap_err(),
            "the key is 31 characters long; at least 32 are required"
        );
        assert_eq!(
            validate_key(&format!("{GOOD}-x")).unwrap_err(),
            "the key contains '-' at position 45; only A-Z, a-z, 0-9, '.' and '_' are allowed"
        );
        assert!(validate_key(&format!("{GOOD} ")).unwrap_err().contains("' ' at position 45"));
        assert!(validate_key("é").unwrap_err().contains("'é' at position 1"));
    }
}
