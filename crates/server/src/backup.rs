//! Online backup of a server's data directory: a consistent copy of the SQLite store
//! (`VACUUM INTO`, safe while the server runs) and of every complete evidence file,
//! into a directory that `sidak-server serve --data-dir` can start from.
//!
//! The copy gets a store identity of its own ([`crate::ledger::renew_identity`]):
//! restored, it is a new store to every device, which then resends what the copy
//! lacks and pulls again from the start, instead of trusting cursors and chain heads
//! that the original handed out after the copy was taken.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::db::DB_FILE;
use crate::error::ApiError;
use crate::state::AppState;

/// What a backup wrote.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    /// The backup directory.
    pub to: PathBuf,
    /// Ops in the copied store.
    pub ops: u64,
    /// Evidence files in the backup.
    pub files: u64,
    /// Of which copied now (the others were there from an earlier backup).
    pub files_copied: u64,
    /// Bytes of evidence copied now.
    pub bytes_copied: u64,
}

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target already holds a store.
    #[error("{0} already holds a store: back up into a new or empty directory (evidence files there are reused)")]
    TargetHasStore(PathBuf),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be copied.
    #[error(transparent)]
    Store(#[from] ApiError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_owned(), source }
}

/// Copies the store and its evidence files into `to`.
pub fn backup(state: &AppState, to: &Path) -> Result<BackupReport, BackupError> {
    let target = to.join(DB_FILE);
    if target.exists() {
        return Err(BackupError::TargetHasStore(target));
    }
    std::fs::create_dir_all(to).map_err(io(to))?;
    state.db().copy_to(&target).map_err(ApiError::from)?;
    // The files to copy are those the *copy* marks complete: each is on disk already
    // (a file is moved into place before its row says complete), and files completed
    // after the snapshot are not needed by it.
    let copy = crate::db::Db::open(to).map_err(ApiError::from)?;
    let now = state.now();
    copy.write_blocking(|tx| crate::ledger::renew_identity(tx, now))?;
    let (ops, complete): (u64, Vec<String>) = copy.read_blocking(|tx| {
        let ops: i64 = tx.query_row("SELECT COUNT(*) FROM ops", [], |r| r.get(0))?;
        let mut stmt = tx.prepare("SELECT sha256 FROM blobs WHERE complete = 1 ORDER BY sha256")?;
        let complete = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok::<_, ApiError>((ops as u64, complete))
    })?;
    drop(copy);
    let mut report = BackupReport { to: to.to_owned(), ops, files: 0, files_copied: 0, bytes_copied: 0 };
    // Directories whose entries changed: the store's copy and `blobs/` in `to` itself.
    let mut synced = std::collections::BTreeSet::from([to.to_owned()]);
    for sha in complete {
        let from = state.blob_path(&sha);
        let dest = to.join("blobs").join(&sha[..2]).join(&sha);
        report.files += 1;
        if dest.exists() {
            continue;
        }
        let dir = dest.parent().unwrap_or(to);
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            synced.insert(dir.parent().unwrap_or(to).to_owned());
        }
        // Copy to a temporary name, synced, then rename: a crash never leaves half a
        // file under a digest's name.
        let part = dest.with_extension("part");
        let bytes = std::fs::copy(&from, &part).map_err(io(&from))?;
        std::fs::File::open(&part).and_then(|f| f.sync_all()).map_err(io(&part))?;
        std::fs::rename(&part, &dest).map_err(io(&dest))?;
        synced.insert(dir.to_owned());
        report.files_copied += 1;
        report.bytes_copied += bytes;
    }
    // The renames reach the disk with their directories: a backup reported done is on
    // disk, whatever happens to the power next.
    for dir in &synced {
        crate::state::sync_dir(dir).map_err(io(dir))?;
    }
    Ok(report)
}
