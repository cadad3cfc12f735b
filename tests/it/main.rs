//! Integration tests: the real `csync` binary on real trees and real index files.

mod net_util;
mod util;

/// Issues 13 and 14 tried as an administrator: regressions found.
mod acceptance;
/// Actions: once per run, paths as arguments, timeouts, the journal.
mod actions;
/// Backups: N generations of what a peer replaced or deleted.
mod backups;
/// `-c`, `-cI`, `-L`, `-M`, `-m`, `-f`, `-R` on a prefixed tree.
mod check;
/// Command-line surface: modes, exit codes, `-k`.
mod cli;
/// Config errors: golden `file:line:col` diagnostics, exit codes.
mod config_errors;
/// The shipped example config and `--check-config` / `--explain`.
mod config_example;
/// Hostile peers: wedged sessions, pinned streams, idle sockets, SIGHUP reload.
mod hostile;
/// Issue 14 (operations): every --json output against doc/json-schema.md, --prometheus, journald logs.
mod json_outputs;
/// The layering of `src/lib.rs` holds for every `crate::` path.
mod layering;
/// Issue 14: a real csync2 cluster imported with --import-csync2.
mod migrate_csync2;
/// Issue 14: an existing RSA PKI works, csync2's certificates are refused, --days.
mod migrate_identity;
/// Issue 14: every csync2 command-line letter.
mod migrate_letters;
/// Issue 14 (operations): the Debian package, systemd units, cron example.
mod packaging;
/// The shapes administrators write: single-file roots, own copies, `-cr /`, added nodes.
mod real_setups;
/// What a peer may create: devices, setuid bits, owners (the receiver's policy).
mod receive_policy;
/// Security items 2 and 8: symlink swaps, a private index, hostile pushers, escaped names.
mod security;
/// Issue 4: `-x` between three real nodes.
mod sync;
/// Issue 4: every `auto` rule, both directions, ties, delete against modify.
mod sync_conflicts;
/// Security item 6: a receiver's delta signature cannot hang the sender.
mod sync_delta;
/// Receiver safety: hostile pushes, planted symlinks, kill -9 mid-transfer, deltas.
mod sync_safety;
/// Issue 3: identities, mutual TLS, the handshake, the daemon in every mode.
mod transport;
/// Issue 13: watch mode between three watching nodes.
mod watch;
/// Wrong input: unknown -P/-G, unusable databases, --check-config, TLS words.
mod wrong_input;
