//! Actions, in one place: which commands a change owes, the owed list, and
//! running what is owed.
//!
//! - [`command`]: runs one `action` command safely (paths as arguments,
//!   own process group, timeout, logfile), and the run lock and process
//!   tokens that tell whose owed rows are orphans.
//! - [`owed`]: [`ActionTable`] (what a change owes, per csync2's rules) and
//!   [`run_owed`] (each owed command once per run, with all its paths).
//! - [`gate`]: the listener's [`Gate`], so overlapping sessions share a run.
//!
//! One word: what a change needs run is *owed*; the rows are recorded in the
//! index (`index::OwedAction`, table `action_queue`) before the change is made
//! and removed after the command ran. The `%%` rewriting lives in
//! [`crate::rewrite`], a leaf, because the config check uses it too.
//!
//! This module is called by the engine and the CLI and never imports them.

pub mod command;
pub mod gate;
pub mod owed;

pub use command::{IN_ACTION, TICK, owner_alive, owner_token};
pub use gate::{Gate, MAX_WAIT};
pub use owed::{ActionTable, Ran, lock_path, run_owed};

/// Why actions could not be prepared or run (a command's own failure is in
/// its [`Ran`], not here).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The index failed.
    #[error(transparent)]
    Index(#[from] crate::index::Error),
    /// A group's patterns could not be compiled (the config check should have caught it).
    #[error(transparent)]
    Pattern(#[from] crate::policy::PatternError),
    /// The lock that serializes action runs could not be taken.
    #[error("actions: {0}")]
    Lock(String),
}
