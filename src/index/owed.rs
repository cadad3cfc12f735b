//! Owed actions (table `action_queue`, named so for existing databases):
//! commands owed to changes that are
//! made (or about to be). Rows are written before the change becomes visible
//! and removed after the command ran, so a crash in between costs a second
//! run of the command, never a missing one.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rusqlite::{Connection, params};

use super::{Index, Result, unix_now};

/// One command owed to one changed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedAction {
    /// The `exec` string as configured (`%%` not expanded).
    pub command: String,
    /// `logfile`; `None`: the node's log.
    pub logfile: Option<PathBuf>,
    /// Seconds before the command is killed.
    pub timeout_s: u32,
    /// The group whose action it is.
    pub group: String,
    /// DB form of the changed entry.
    pub path: Vec<u8>,
    /// Its local path (what `%%` expands to).
    pub real: PathBuf,
    /// The node the change came from; `None`: changed here.
    pub peer: Option<String>,
    /// The process that is to run it (see `action::owner_token`).
    pub owner: String,
    /// The change is made (false: still being applied; see
    /// [`Index::record_received_batch`], which sets it in the same step).
    pub ready: bool,
}

/// A recorded [`OwedAction`] with its row id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedRow {
    /// Row id: the order they became owed.
    pub id: i64,
    /// What is owed.
    pub action: OwedAction,
    /// The command's shell while it runs (`pid:starttime`); `None`: not started.
    pub running: Option<String>,
    /// Unix seconds.
    pub owed_since: i64,
}

/// Inserts `rows` on `conn` (inside the caller's transaction); returns their ids.
pub(super) fn insert(conn: &Connection, rows: &[OwedAction]) -> rusqlite::Result<Vec<i64>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut st = conn.prepare_cached(
        "INSERT INTO action_queue (command, logfile, timeout_s, grp, path, real, peer, owner, ready, queued_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let now = unix_now();
    let mut ids = Vec::with_capacity(rows.len());
    for a in rows {
        st.execute(params![
            a.command,
            a.logfile.as_ref().map(|p| p.as_os_str().as_bytes().to_vec()),
            i64::from(a.timeout_s),
            a.group,
            a.path,
            a.real.as_os_str().as_bytes(),
            a.peer,
            a.owner,
            i64::from(a.ready),
            now
        ])?;
        ids.push(conn.last_insert_rowid());
    }
    Ok(ids)
}

/// Marks owed rows ready (their change is now made), on `conn` inside
/// the caller's transaction.
pub(super) fn set_ready(conn: &Connection, ids: &[i64]) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached("UPDATE action_queue SET ready = 1 WHERE id = ?1")?;
    for id in ids {
        st.execute([id])?;
    }
    Ok(())
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OwedRow> {
    let bytes_path = |b: Vec<u8>| PathBuf::from(std::ffi::OsStr::from_bytes(&b));
    Ok(OwedRow {
        id: r.get(0)?,
        action: OwedAction {
            command: r.get(1)?,
            logfile: r.get::<_, Option<Vec<u8>>>(2)?.map(bytes_path),
            timeout_s: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(u32::MAX),
            group: r.get(4)?,
            path: r.get(5)?,
            real: bytes_path(r.get(6)?),
            peer: r.get(7)?,
            owner: r.get(8)?,
            ready: r.get::<_, i64>(9)? != 0,
        },
        running: r.get(10)?,
        owed_since: r.get(11)?,
    })
}

impl Index {
    /// Records `rows` as owed in one transaction, durable before this returns
    /// (against a crash of the process); returns their ids in order.
    ///
    /// # Errors
    /// When SQLite fails; then nothing is recorded.
    pub fn add_owed(&mut self, rows: &[OwedAction]) -> Result<Vec<i64>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| insert(tx, rows))
    }

    /// Every owed action, in the order they became owed.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn owed_actions(&self) -> Result<Vec<OwedRow>> {
        self.query_all(
            "SELECT id, command, logfile, timeout_s, grp, path, real, peer, owner, ready, running, queued_at \
             FROM action_queue ORDER BY id",
            from_row,
        )
    }

    /// Marks owed actions ready (their change is made) on their own,
    /// when the commit that should have done it failed.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn mark_owed_ready(&mut self, ids: &[i64]) -> Result<()> {
        self.write(|tx| set_ready(tx, ids))
    }

    /// Records that the command of rows `ids` now runs as `token`.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn mark_owed_running(&mut self, ids: &[i64], token: &str) -> Result<()> {
        self.write(|tx| {
            let mut st = tx.prepare_cached("UPDATE action_queue SET running = ?2 WHERE id = ?1")?;
            for id in ids {
                st.execute(params![id, token])?;
            }
            Ok(())
        })
    }

    /// Removes owed actions (their command ran, or their change was
    /// not made after all).
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn remove_owed(&mut self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut st = tx.prepare_cached("DELETE FROM action_queue WHERE id = ?1")?;
            for id in ids {
                st.execute([id])?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, owner: &str) -> OwedAction {
        OwedAction {
            command: "echo %%".into(),
            logfile: Some(PathBuf::from("/tmp/log")),
            timeout_s: 60,
            group: "g".into(),
            path: path.as_bytes().to_vec(),
            real: PathBuf::from(path),
            peer: None,
            owner: owner.into(),
            ready: true,
        }
    }

    #[test]
    fn add_list_remove() {
        let mut idx = Index::open_in_memory().unwrap();
        let ids = idx.add_owed(&[row("/a", "1:1"), row("/b", "1:1")]).unwrap();
        assert_eq!(ids.len(), 2);
        assert!(ids[0] < ids[1]);
        let rows = idx.owed_actions().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].action, row("/a", "1:1"));
        idx.remove_owed(&ids[..1]).unwrap();
        let rows = idx.owed_actions().unwrap();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![ids[1]]);
    }

    #[test]
    fn ready_with_the_received_entry() {
        let mut idx = Index::open_in_memory().unwrap();
        let mut a = row("/r", "3:3");
        a.ready = false;
        let ids = idx.add_owed(&[a]).unwrap();
        assert!(!idx.owed_actions().unwrap()[0].action.ready);
        let r = super::super::Received {
            file: None,
            removed: Some(b"/r".to_vec()),
            peer: "p".into(),
            version: None,
            origin: None,
            actions: ids,
            forward: Vec::new(),
        };
        idx.record_received_batch(&[r]).unwrap();
        assert!(idx.owed_actions().unwrap()[0].action.ready);
    }

    #[test]
    fn owed_with_a_batch() {
        let mut idx = Index::open_in_memory().unwrap();
        let batch = super::super::Batch { actions: vec![row("/x", "2:2")], ..Default::default() };
        idx.apply(&batch).unwrap();
        assert_eq!(idx.owed_actions().unwrap()[0].action.path, b"/x".to_vec());
    }
}
