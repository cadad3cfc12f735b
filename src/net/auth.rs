//! Group key proofs: a node shows it holds a group's key without sending it.
//!
//! The proof is a keyed BLAKE3 MAC over a value exported from this TLS session
//! (RFC 8446 §7.5), the role (client or server), the node's name and the group.
//! It is useless on any other connection, for the other direction, or for
//! another node, so it cannot be replayed or reflected.

/// RFC 5705/8446 exporter label for group proofs.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-csync-group-proof-v1";

/// Which side of the connection computes the proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node that connected.
    Client,
    /// The node that accepted.
    Server,
}

/// The MAC proving `node` holds `key` for `group` on the session whose
/// exporter value is `exporter`.
pub fn proof(key: &[u8], exporter: &[u8; 32], role: Role, node: &str, group: &str) -> [u8; 32] {
    // Derive a 32-byte MAC key from the csync2 key text (any length ≥ 32 chars).
    let mac_key = blake3::derive_key("csync 2026 group key proof v1", key);
    let mut h = blake3::Hasher::new_keyed(&mac_key);
    h.update(exporter);
    h.update(&[match role {
        Role::Client => b'C',
        Role::Server => b'S',
    }]);
    // Length prefixes keep (node, group) pairs unambiguous.
    h.update(&(node.len() as u32).to_be_bytes());
    h.update(node.as_bytes());
    h.update(&(group.len() as u32).to_be_bytes());
    h.update(group.as_bytes());
    *h.finalize().as_bytes()
}

/// Constant-time check of a received proof.
pub fn verify(
    key: &[u8],
    exporter: &[u8; 32],
    role: Role,
    node: &str,
    group: &str,
    mac: &[u8; 32],
) -> bool {
    blake3::Hash::from(proof(key, exporter, role, node, group)) == blake3::Hash::from(*mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_key_session_role_node_and_group() {
        let k = "a".repeat(64).into_bytes();
        let e = [1u8; 32];
        let p = proof(&k, &e, Role::Client, "n1", "web");
        assert!(verify(&k, &e, Role::Client, "n1", "web", &p));
        assert!(!verify("b".repeat(64).as_bytes(), &e, Role::Client, "n1", "web", &p));
        assert!(!verify(&k, &[2; 32], Role::Client, "n1", "web", &p));
        assert!(!verify(&k, &e, Role::Server, "n1", "web", &p));
        assert!(!verify(&k, &e, Role::Client, "n2", "web", &p));
        assert!(!verify(&k, &e, Role::Client, "n1", "db", &p));
    }
}
