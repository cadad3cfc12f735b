//! csync keeps chosen files identical across the servers of a cluster and runs
//! a command on each server whose files changed. It reads csync2's config file
//! unchanged and accepts csync2's command line.
//!
//! # Layers
//!
//! Dependencies point one way, down. Each line is a layer, top to bottom; a
//! module may use modules of the lines below its own, never its own line or
//! one above (`tests/it/layering.rs` reads every `crate::` path under `src/`
//! and fails on an arrow against this table, naming file and line; README's
//! "Layout" repeats the table and the test keeps the two equal).
//!
//! ```text
//! cli, fuzzing                   command line, output, exit codes; fuzz entry points
//! listener                       -i/-ii: sockets, limits, signals, reload
//! watch, import_csync2           --watch: inotify, bursts, retries; --import-csync2
//! engine                         check, push, receive, run, first contact, -T
//! actions, net                   owed commands and running them; TLS, sessions
//! index, scan, apply, blockdelta SQLite state; the walk; writes into trees; deltas
//! policy, keygen                 the compiled group policy; group key files
//! paths                          DB form <-> real paths, escaping for humans
//! config                         csync2 syntax -> Config, file:line:col errors
//! pattern, rewrite               include/exclude rules; the %% rewriter
//! proto, confined, tempname, diag, types, logging, progress
//! ```
//!
//! - [`config`]: csync2 syntax → [`config::Config`], every error with `file:line:col`.
//! - [`pattern`]: csync2's include/exclude rules (which paths a group manages).
//! - [`policy`]: each member group compiled once per load (matcher, push
//!   targets, receive-only, ignore fields, backups, what peers may create).
//! - [`scan`]: walks include roots, hashes what may have changed, compares with
//!   the previous state. Never touches the database.
//! - [`tempname`]: the names of csync's temporaries (a leaf `scan` and
//!   [`apply`] share). [`blockdelta`]: block deltas for large files.
//! - [`index`]: the SQLite index: file states, dirty marks, peer states. Knows
//!   nothing of the config.
//! - [`actions`]: what a change owes, the owed list, running commands (paths
//!   as arguments, timeout, logfile). [`rewrite`]: the `%%` rewriter (a leaf:
//!   the config check uses it too).
//! - [`proto`]: wire messages and codec, no I/O; [`net`]: identities, TLS,
//!   connections; it learns about groups only through a trait the engine
//!   implements.
//! - [`engine`]: joins them into a run (check, push, actions), receive, prune.
//! - [`listener`]: the `-i`/`-ii` listener (sockets, limits, signals).
//! - [`cli`]: arguments, output, exit codes.
//!
//! # Words
//!
//! *node*: one server. *group*: a `group { }` block. *peer*: another host of a
//! group this node is in. *DB form*: a path as stored and sent, `%prefix%/rest`
//! where a prefix applies. *dirty*: an entry still to be pushed to a peer.
//! *owed*: an action command a change needs run, recorded before the change
//! is made and removed after the command ran.

pub mod actions;
pub mod apply;
pub mod blockdelta;
pub mod cli;
pub mod config;
pub mod confined;
pub mod diag;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod import_csync2;
pub mod index;
pub mod keygen;
pub mod listener;
pub mod logging;
pub mod net;
pub mod paths;
pub mod pattern;
pub mod policy;
pub mod progress;
pub mod proto;
pub mod rewrite;
pub mod scan;
pub mod tempname;
pub mod types;
pub mod watch;
