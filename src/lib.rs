//! csync keeps chosen files identical across the servers of a cluster and runs
//! a command on each server whose files changed. It reads csync2's config file
//! unchanged and accepts csync2's command line.
//!
//! # Layout
//!
//! Dependencies point one way, top to bottom:
//!
//! ```text
//! cli ─▶ engine ─▶ { index, scan, paths, actions } ─▶ config ─▶ pattern ─▶ { diag, types }
//! ```
//!
//! - [`config`]: csync2 syntax → [`config::Config`], every error with `file:line:col`.
//! - [`pattern`]: csync2's include/exclude rules (which paths a group manages).
//! - [`scan`]: walks include roots, hashes what may have changed, compares with
//!   the previous state. Never touches the database.
//! - [`tempname`]: the names of csync's temporaries (a leaf `scan` and
//!   [`apply`] share). [`blockdelta`]: block deltas for large files.
//! - [`index`]: the SQLite index: file states, dirty marks, peer states. Knows
//!   nothing of the config.
//! - [`actions`]: what a change owes, the owed list, running commands (paths
//!   as arguments, timeout, logfile). [`rewrite`]: the `%%` rewriter (a leaf:
//!   the config check uses it too).
//! - [`engine`]: joins them into check, update, receive, prune.
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
pub mod index;
pub mod keygen;
pub mod listener;
pub mod logging;
pub mod net;
pub mod paths;
pub mod pattern;
pub mod proto;
pub mod rewrite;
pub mod scan;
pub mod tempname;
pub mod types;
