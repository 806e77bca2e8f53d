//! What every request handler shares: the store, the instruments, the evidence files,
//! the server's identity, whether it is shutting down, and the in-memory brakes of
//! authentication (failed attempts per source, when each token's use was recorded).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use sha2::{Digest, Sha256};
use sidak_core::hash::Sha256Digest;
use sidak_core::ids::{OriginId, StoreId};
use sidak_core::instrument::{Instrument, InstrumentRef};

use crate::admin::load_instruments;
use crate::db::{meta, Db};
use crate::error::ApiError;
use crate::ledger::{self, Instruments};
use crate::lockout::Lockout;
use crate::push_group::PushQueue;

/// Milliseconds since 1970 (replaceable in tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    })
}

/// Shared server state.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    data_dir: PathBuf,
    instruments: RwLock<Instruments>,
    store: StoreId,
    server_origin: OriginId,
    shutting_down: AtomicBool,
    clock: Clock,
    changed: Arc<(Mutex<bool>, Condvar)>,
    lockout: Lockout,
    touched: Mutex<HashMap<String, i64>>,
    uploads: Mutex<HashMap<Sha256Digest, UploadHash>>,
    /// Each unfinished upload's turn: one chunk of a file is written at a time.
    upload_turns: Mutex<HashMap<Sha256Digest, Arc<tokio::sync::Mutex<()>>>>,
    pushes: PushQueue,
}

/// An upload's turn, held while one chunk of it is written and recorded (see
/// [`AppState::upload_turn`]). Dropping it gives the turn to the next chunk.
pub struct UploadTurn {
    state: AppState,
    sha: Sha256Digest,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for UploadTurn {
    fn drop(&mut self) {
        drop(self.held.take());
        // Forgotten once nobody holds or waits for it.
        let mut turns = self.state.inner.upload_turns.lock().unwrap_or_else(|p| p.into_inner());
        if turns.get(&self.sha).is_some_and(|t| Arc::strong_count(t) == 1) {
            turns.remove(&self.sha);
        }
    }
}

/// The SHA-256 of an upload's bytes so far, fed as each chunk is written, so that a
/// completed upload is verified without reading its file back.
struct UploadHash {
    /// Bytes fed: the part file's length when they were written.
    fed: u64,
    hasher: Sha256,
}

/// At most this many unfinished uploads keep a running hash (a few hundred bytes
/// each); beyond it they are forgotten, and verified from their files when they end.
const MAX_RUNNING_HASHES: usize = 4096;

impl AppState {
    /// Opens the store under `data_dir`, creating its identity on first start.
    pub fn open(data_dir: &Path, clock: Clock) -> Result<AppState, ApiError> {
        AppState::with_db(Db::open(data_dir)?, data_dir, clock)
    }

    /// [`AppState::open`] over a store already opened from `data_dir` (whose own
    /// failure to open a caller may report in full, as the command line does).
    pub fn with_db(db: Db, data_dir: &Path, clock: Clock) -> Result<AppState, ApiError> {
        let now = clock();
        let (store, server_origin, instruments) = db.write_blocking(|tx| {
            ledger::ensure_identity(tx, now)?;
            let store: StoreId =
                meta(tx, "store_id")?.and_then(|s| s.parse().ok()).ok_or_else(|| ApiError::internal("no store id"))?;
            let origin: OriginId = meta(tx, "server_origin")?
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::internal("no server origin"))?;
            let backfilled = crate::results::backfill_counts(tx)?;
            if backfilled > 0 {
                tracing::info!(rows = backfilled, "filled in the completeness of results stored before it was kept");
            }
            Ok::<_, ApiError>((store, origin, load_instruments(tx)?))
        })?;
        std::fs::create_dir_all(data_dir.join("blobs")).map_err(ApiError::internal)?;
        std::fs::create_dir_all(data_dir.join("uploads")).map_err(ApiError::internal)?;
        Ok(AppState {
            inner: Arc::new(Inner {
                db,
                data_dir: data_dir.to_owned(),
                instruments: RwLock::new(Arc::new(instruments)),
                store,
                server_origin,
                shutting_down: AtomicBool::new(false),
                clock,
                changed: Arc::new((Mutex::new(false), Condvar::new())),
                lockout: Lockout::default(),
                touched: Mutex::new(HashMap::new()),
                uploads: Mutex::new(HashMap::new()),
                upload_turns: Mutex::new(HashMap::new()),
                pushes: PushQueue::default(),
            }),
        })
    }

    /// The store.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Pushes waiting to be applied together (see [`crate::push_group`]).
    pub fn push_queue(&self) -> &PushQueue {
        &self.inner.pushes
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// A snapshot of the published instruments.
    pub fn instruments(&self) -> Instruments {
        self.inner.instruments.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the instruments after a publish. It reads the store on the calling
    /// thread: for blocking code (replication, the CLI). A handler loads them inside
    /// its store task instead and hands them to [`AppState::adopt_instruments`].
    pub fn reload_instruments(&self) -> Result<(), ApiError> {
        let fresh = self.db().read_blocking(load_instruments)?;
        self.adopt_instruments(fresh);
        Ok(())
    }

    /// Takes in instruments read from the store. Published instruments are never
    /// changed or removed, so the snapshot becomes the union: two publishes finishing
    /// in either order leave both in it.
    pub fn adopt_instruments(&self, fresh: BTreeMap<InstrumentRef, Instrument>) {
        let mut held = self.inner.instruments.write().unwrap_or_else(|p| p.into_inner());
        if fresh.keys().all(|k| held.contains_key(k)) {
            return;
        }
        let mut all = (**held).clone();
        all.extend(fresh);
        *held = Arc::new(all);
    }

    /// The store id (cursors name it).
    pub fn store(&self) -> StoreId {
        self.inner.store
    }

    /// The server's own origin.
    pub fn server_origin(&self) -> OriginId {
        self.inner.server_origin
    }

    /// Now, ms since 1970.
    pub fn now(&self) -> i64 {
        (self.inner.clock)()
    }

    /// Marks the server as shutting down (health answers 503).
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Signals that new data arrived (a push, a completed file), so that replication
    /// to the centre runs now rather than at its next interval.
    pub fn notify_changed(&self) {
        let (lock, cv) = &*self.inner.changed;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    /// What [`AppState::notify_changed`] signals on.
    pub fn change_signal(&self) -> Arc<(Mutex<bool>, Condvar)> {
        self.inner.changed.clone()
    }

    /// True once shutdown began.
    pub fn shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Failed authentications per source address.
    pub fn lockout(&self) -> &Lockout {
        &self.inner.lockout
    }

    /// True when this process should record now that token `id` was used: it has not
    /// done so within [`crate::auth::LAST_USED_EVERY_MS`] (`stored`: the token's
    /// `last_used_at` as read). Claims the minute, so concurrent requests write once.
    pub fn claim_touch(&self, id: &str, stored: Option<i64>, now_ms: i64) -> bool {
        let every = crate::auth::LAST_USED_EVERY_MS;
        if stored.is_some_and(|t| now_ms - t < every) {
            return false;
        }
        let mut touched = self.inner.touched.lock().unwrap_or_else(|p| p.into_inner());
        if touched.get(id).is_some_and(|t| now_ms - t < every) {
            return false;
        }
        if touched.len() >= 10_000 {
            touched.retain(|_, t| now_ms - *t < every);
        }
        touched.insert(id.to_owned(), now_ms);
        true
    }

    /// Where a complete evidence file lives.
    pub fn blob_path(&self, sha: &str) -> PathBuf {
        self.inner.data_dir.join("blobs").join(&sha[..2]).join(sha)
    }

    /// Where a partial upload lives.
    pub fn upload_path(&self, sha: &str) -> PathBuf {
        self.inner.data_dir.join("uploads").join(format!("{sha}.part"))
    }

    /// Waits for an upload's turn: its chunks are written to its part file outside the
    /// store's writer, so that a 1 MiB write and its fsync do not hold up every other
    /// write, and this keeps two chunks of one file (a retry beside its original, say)
    /// from writing it at once.
    pub async fn upload_turn(&self, sha: &Sha256Digest) -> UploadTurn {
        let turn = {
            let mut turns = self.inner.upload_turns.lock().unwrap_or_else(|p| p.into_inner());
            turns.entry(*sha).or_default().clone()
        };
        UploadTurn { state: self.clone(), sha: *sha, held: Some(turn.lock_owned().await) }
    }

    /// Feeds the running hash of an upload with `bytes`, just written to its part file
    /// at offset `at`. A hash that did not see exactly the bytes before `at` (a chunk
    /// whose transaction rolled back, a restart) is dropped, and the upload is then
    /// verified from its file when it completes.
    pub fn hash_upload(&self, sha: &Sha256Digest, at: u64, bytes: &[u8]) {
        let mut uploads = self.inner.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let running = match uploads.remove(sha) {
            Some(u) if u.fed == at => Some(u),
            _ if at == 0 => Some(UploadHash { fed: 0, hasher: Sha256::new() }),
            _ => None,
        };
        if let Some(mut u) = running {
            if uploads.len() >= MAX_RUNNING_HASHES {
                uploads.clear();
            }
            u.hasher.update(bytes);
            u.fed += bytes.len() as u64;
            uploads.insert(*sha, u);
        }
    }

    /// The digest of an upload's first `size` bytes, if its running hash saw exactly
    /// those; forgets the running hash either way.
    pub fn take_upload_hash(&self, sha: &Sha256Digest, size: u64) -> Option<Sha256Digest> {
        let running = self.inner.uploads.lock().unwrap_or_else(|p| p.into_inner()).remove(sha)?;
        (running.fed == size).then(|| Sha256Digest(running.hasher.finalize().into()))
    }
}

/// Syncs a directory, so that the files just created, renamed or removed in it are
/// durable: a rename reaches the disk with its directory, not with the file's own sync.
pub fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
