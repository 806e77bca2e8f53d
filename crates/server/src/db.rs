//! The server's SQLite store: one writer connection and a few readers, WAL mode,
//! numbered migrations, and `read`/`write` that run off the async threads
//! (`spawn_blocking`) so SQLite never blocks the runtime.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

/// The database file inside the data directory.
pub const DB_FILE: &str = "sidak.sqlite";

/// Numbered migrations; index + 1 is the schema version.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: ops with scope tags, origins, quarantine, fields, records, instruments,
    //    tokens, evidence, results.
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    CREATE TABLE ops (
        server_seq INTEGER PRIMARY KEY AUTOINCREMENT,
        origin TEXT NOT NULL,
        seq INTEGER NOT NULL,
        hlc_ms INTEGER NOT NULL,
        hlc_c INTEGER NOT NULL,
        wall INTEGER NOT NULL,
        kind TEXT NOT NULL,
        entity TEXT NOT NULL,
        field TEXT NOT NULL,
        value TEXT NOT NULL,
        parent_origin TEXT,
        parent_seq INTEGER,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        quarantined INTEGER NOT NULL DEFAULT 0,
        region TEXT,
        assessor TEXT,
        class TEXT NOT NULL CHECK (class IN ('registry', 'assignment', 'review', 'origin')),
        UNIQUE (origin, seq)
    ) STRICT;
    CREATE INDEX ops_by_region ON ops (region, server_seq);
    CREATE INDEX ops_by_assessor ON ops (assessor, server_seq);
    CREATE INDEX ops_by_entity ON ops (entity, field);
    CREATE TABLE origins (
        origin TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('device', 'server')),
        assessor TEXT,
        region TEXT,
        head_seq INTEGER NOT NULL DEFAULT 0,
        head_hash TEXT NOT NULL,
        quarantined INTEGER NOT NULL DEFAULT 0,
        upstream_seq INTEGER,
        upstream_hash TEXT,
        clock_flagged INTEGER NOT NULL DEFAULT 0,
        last_push_at INTEGER
    ) STRICT;
    CREATE TABLE quarantine (
        origin TEXT NOT NULL,
        seq INTEGER NOT NULL,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (origin, seq),
        FOREIGN KEY (origin, seq) REFERENCES ops (origin, seq)
    ) STRICT;
    CREATE TABLE rejections (
        id INTEGER PRIMARY KEY,
        origin TEXT NOT NULL,
        seq INTEGER NOT NULL,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        hash TEXT NOT NULL,
        token TEXT NOT NULL,
        at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE fields (
        entity TEXT NOT NULL,
        field TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        v_origin TEXT NOT NULL,
        v_seq INTEGER NOT NULL,
        hlc_ms INTEGER NOT NULL,
        hlc_c INTEGER NOT NULL,
        PRIMARY KEY (entity, field)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX fields_by_value ON fields (kind, field, value);
    CREATE TABLE entities (
        entity TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        region TEXT,
        assessor TEXT,
        institution TEXT
    ) STRICT;
    CREATE INDEX entities_by_institution ON entities (institution);
    CREATE TABLE instruments (
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        digest TEXT NOT NULL,
        document TEXT NOT NULL,
        published_at INTEGER NOT NULL,
        PRIMARY KEY (id, version)
    ) STRICT;
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('assessor', 'supervisor', 'admin', 'peer')),
        region TEXT,
        assessor TEXT,
        label TEXT,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        media_type TEXT NOT NULL,
        received INTEGER NOT NULL DEFAULT 0,
        complete INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE results (
        kind TEXT NOT NULL CHECK (kind IN ('institution', 'unit')),
        entity TEXT NOT NULL,
        instrument TEXT NOT NULL,
        institution TEXT NOT NULL,
        code TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        region TEXT,
        status TEXT NOT NULL,
        score TEXT,
        provisional TEXT,
        grade TEXT,
        zone TEXT,
        document TEXT NOT NULL,
        changed INTEGER NOT NULL,
        PRIMARY KEY (kind, entity, instrument)
    ) STRICT;
    CREATE INDEX results_by_change ON results (changed);
    CREATE INDEX results_by_institution ON results (institution);
    "#,
    // 2: tiers. Whether the centre holds each evidence file; origins of which this
    //    tier holds only the part in its scope (the centre's own, seen from a region).
    r#"
    ALTER TABLE blobs ADD COLUMN upstream_complete INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE partial_origins (origin TEXT PRIMARY KEY REFERENCES origins (origin)) STRICT;
    "#,
    // 3: what each device last reported it had not sent yet (sync health).
    r#"
    ALTER TABLE origins ADD COLUMN pending_ops INTEGER;
    ALTER TABLE origins ADD COLUMN pending_files INTEGER;
    ALTER TABLE origins ADD COLUMN pending_at INTEGER;
    "#,
    // 4: how complete each result is: indicator answers required and present, and the
    //    entries of the document's `missing` list. NULL until computed: rows written
    //    before this migration are filled in from their documents when the store opens.
    r#"
    ALTER TABLE results ADD COLUMN required INTEGER;
    ALTER TABLE results ADD COLUMN answered INTEGER;
    ALTER TABLE results ADD COLUMN missing INTEGER;
    "#,
    // 5: chain heads signed by their origin's key, as pushed: what vouches for every op
    //    up to them, and what a regional server forwards to the centre.
    r#"
    CREATE TABLE signed_heads (
        origin TEXT NOT NULL REFERENCES origins (origin),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (origin, seq)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 6: the token lifecycle (expiry, revocation — at once or at the end of a
    //    rotation's grace —, the successor of a rotated token, last use to the minute)
    //    and the append-only audit log of admin and supervisor actions. The triggers
    //    refuse every UPDATE and DELETE of an audit entry.
    r#"
    ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
    ALTER TABLE tokens ADD COLUMN revoked_at INTEGER;
    ALTER TABLE tokens ADD COLUMN replaced_by TEXT;
    ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        actor_role TEXT NOT NULL,
        actor_label TEXT,
        region TEXT,
        via TEXT NOT NULL CHECK (via IN ('http', 'cli')),
        kind TEXT NOT NULL,
        action TEXT NOT NULL,
        summary TEXT NOT NULL,
        result TEXT NOT NULL
    ) STRICT;
    CREATE INDEX audit_by_region ON audit (region, id);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: an entry is never changed'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: an entry is never deleted'); END;
    "#,
    // 7: the device keys an assessor token was issued for. A token with keys binds only
    //    origins that register one of them; a token without keys trusts the first key
    //    each of its origins registers.
    r#"
    CREATE TABLE token_keys (
        token_id TEXT NOT NULL REFERENCES tokens (id),
        public_key TEXT NOT NULL,
        PRIMARY KEY (token_id, public_key)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 8: an institution's result document is stored without its units' documents,
    //    which its unit rows hold already; `units` lists their record ids, in the
    //    document's order, and reading splices them in. NULL: the document is whole.
    r#"
    ALTER TABLE results ADD COLUMN units TEXT;
    "#,
    // 9: answers leave the value index. They are most field rows, each push rewrites
    //    hundreds of them scattered over the index (it is ordered by kind, field name and
    //    value), and nothing looks an answer up by its value. SQLite uses a partial index
    //    only for a query whose WHERE repeats its condition, so each lookup by kind,
    //    field or value says `field NOT GLOB 'answer.*'` too ([`VALUE_INDEX_CONDITION`]).
    r#"
    DROP INDEX fields_by_value;
    CREATE INDEX fields_by_value ON fields (kind, field, value) WHERE field NOT GLOB 'answer.*';
    "#,
    // 10: the records placed in no institution, by kind. Every institution's recompute
    //     reads the corrections and deductions not placed yet; through
    //     `entities_by_institution` that meant reading every unplaced record (devices
    //     and the rest) to check its kind, once per institution. SQLite does not choose
    //     a partial index here by itself, so the query names it (`INDEXED BY`).
    r#"
    CREATE INDEX entities_unplaced ON entities (kind) WHERE institution IS NULL;
    "#,
];

/// The condition of the partial index `fields_by_value` (migration 9): every field but
/// answers ([`sidak_core::records::ANSWER_PREFIX`]). A query that looks fields up by
/// kind, field or value repeats it, or SQLite scans the whole table instead.
pub const VALUE_INDEX_CONDITION: &str = "field NOT GLOB 'answer.*'";

/// Why the database failed.
#[derive(Debug, thiserror::Error)]
#[error("database {path}: {source}")]
pub struct DbError {
    /// The database file.
    pub path: PathBuf,
    /// The SQLite error.
    #[source]
    pub source: rusqlite::Error,
}

/// The store: shareable, cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    queued_writers: AtomicUsize,
    on_async_threads: AtomicUsize,
}

thread_local! {
    /// Set while [`Db::read`] or [`Db::write`] runs its work on a blocking thread.
    static IN_STORE_TASK: Cell<bool> = const { Cell::new(false) };
}

/// How much of the database file a connection maps for reading (a national season's
/// store is a few GB; beyond this SQLite reads the rest with `pread`).
const MMAP_SIZE: i64 = 4 << 30;

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    // NO_MUTEX: a connection is only ever used by one thread at a time (it is `Send`, not
    // `Sync`), so SQLite's per-connection mutex, taken on every column read, is pure cost.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // The push path runs a few dozen distinct statements per op: keep them all compiled.
    conn.set_prepared_statement_cache_capacity(256);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: an acknowledged push survives a power cut, not only a crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Reads through a memory map instead of a `pread` and a copy per page: pulls and
    // recomputes read far more than they write. Pages stay the kernel's page cache.
    conn.pragma_update(None, "mmap_size", MMAP_SIZE)?;
    Ok(conn)
}

impl Db {
    /// Opens (or creates) the store at `dir/sidak.sqlite` and migrates it.
    pub fn open(dir: &Path) -> Result<Db, DbError> {
        let path = dir.join(DB_FILE);
        let err = |source| DbError { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let mut writer = open_conn(&path).map_err(err)?;
        migrate(&mut writer).map_err(err)?;
        Ok(Db {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                queued_writers: Default::default(),
                on_async_threads: Default::default(),
            }),
        })
    }

    /// Writes waiting for the writer connection (a measure of write pressure).
    pub fn queued_writers(&self) -> usize {
        self.inner.queued_writers.load(Ordering::SeqCst)
    }

    /// How many times the store was used on a thread of an async runtime instead of
    /// through [`Db::read`] / [`Db::write`]: 0 in a correct server (the router tests
    /// check it for every endpoint). Threads of their own (the CLI, replication) do
    /// not count: they have no runtime.
    pub fn calls_on_async_threads(&self) -> usize {
        self.inner.on_async_threads.load(Ordering::SeqCst)
    }

    /// Counts and logs a blocking store call made on an async runtime's thread.
    fn check_thread(&self) {
        if !IN_STORE_TASK.with(Cell::get) && tokio::runtime::Handle::try_current().is_ok() {
            self.inner.on_async_threads.fetch_add(1, Ordering::SeqCst);
            tracing::warn!("SQLite used on an async thread: use Db::read or Db::write");
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in a write transaction on the current thread (blocking callers: CLI,
    /// tests, `spawn_blocking` bodies).
    pub fn write_blocking<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.writer();
        self.in_write_tx(&mut conn, f)
    }

    /// [`Db::write_blocking`], if `wanted()` still holds once this thread has the
    /// writer: `None` (and no transaction) if not. For work that others may have done
    /// while this thread waited (a group commit's queue, emptied by whoever got the
    /// writer first).
    pub fn write_blocking_if<T, E: From<DbError>>(
        &self,
        wanted: impl FnOnce() -> bool,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        let mut conn = self.writer();
        if !wanted() {
            return Ok(None);
        }
        self.in_write_tx(&mut conn, f).map(Some)
    }

    /// The writer connection, once this thread has it (counted in
    /// [`Db::queued_writers`] while it waits).
    fn writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.check_thread();
        self.inner.queued_writers.fetch_add(1, Ordering::SeqCst);
        let conn = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.queued_writers.fetch_sub(1, Ordering::SeqCst);
        conn
    }

    /// Runs `f` in an immediate transaction on `conn`, committed if `f` succeeds.
    fn in_write_tx<T, E: From<DbError>>(
        &self,
        conn: &mut Connection,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let err = |source| DbError { path: self.inner.path.clone(), source };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let out = f(&tx)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// Runs `f` in a read transaction on the current thread.
    pub fn read_blocking<T, E: From<DbError>>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E> {
        let err = |source| DbError { path: self.inner.path.clone(), source };
        self.check_thread();
        let pooled = self.inner.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.inner.path).map_err(err)?,
        };
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(err)?;
            let out = f(&tx)?;
            tx.finish().map_err(err)?;
            Ok(out)
        })();
        let mut readers = self.inner.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() < 4 {
            readers.push(conn);
        }
        result
    }

    /// Writes a consistent copy of the whole store to `target` (`VACUUM INTO`, which
    /// reads one snapshot and may run while the server writes).
    pub fn copy_to(&self, target: &Path) -> Result<(), DbError> {
        let err = |source| DbError { path: self.inner.path.clone(), source };
        let conn = open_conn(&self.inner.path).map_err(err)?;
        let text = target.to_str().ok_or_else(|| err(rusqlite::Error::InvalidPath(target.to_owned())))?;
        conn.execute("VACUUM INTO ?1", [text]).map_err(err)?;
        Ok(())
    }

    /// [`Db::write_blocking`] on a blocking thread.
    pub async fn write<T, E>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || on_blocking_thread(|| db.write_blocking(f)))
            .await
            .expect("database task panicked")
    }

    /// [`Db::read_blocking`] on a blocking thread.
    pub async fn read<T, E>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || on_blocking_thread(|| db.read_blocking(f)))
            .await
            .expect("database task panicked")
    }
}

/// Runs `f`, which uses the store, on a blocking thread inside a runtime (the body of
/// a `spawn_blocking`, as [`Db::read`] and [`Db::write`] do): marked as store work, so
/// that [`Db::calls_on_async_threads`] counts only calls made where they would stall
/// async tasks.
pub fn on_blocking_thread<T>(f: impl FnOnce() -> T) -> T {
    IN_STORE_TASK.with(|flag| flag.set(true));
    let out = f();
    IN_STORE_TASK.with(|flag| flag.set(false));
    out
}

/// Applies pending migrations, each with its version bump in one transaction.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > MIGRATIONS.len() as i64 {
        // A newer release migrated it: this one would read and write tables whose
        // meaning it does not know.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!(
                "the store's schema is version {current}, newer than this sidak-server knows ({}): a newer release wrote it; run that release or a later one",
                MIGRATIONS.len()
            )),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// A value from the `meta` table.
pub(crate) fn meta(tx: &Transaction<'_>, key: &str) -> rusqlite::Result<Option<String>> {
    tx.prepare_cached("SELECT value FROM meta WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()
}

/// Sets a value in the `meta` table.
pub(crate) fn set_meta(tx: &Transaction<'_>, key: &str, value: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{migrate, MIGRATIONS, VALUE_INDEX_CONDITION};

    /// The value index leaves answers out, and a lookup that repeats its condition is
    /// answered from it: SQLite uses a partial index only then, and scans otherwise.
    /// The store is one from before migration 9, holding fields, upgraded.
    #[test]
    fn the_value_index_holds_no_answers_and_lookups_use_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..8] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 8).unwrap();
        conn.execute_batch(
            r#"INSERT INTO fields (entity, field, kind, value, v_origin, v_seq, hlc_ms, hlc_c) VALUES
                 ('v1', 'institution', 'visit', '"i1"', 'o', 1, 1, 0),
                 ('v1', 'answer.U1', 'visit', '3', 'o', 2, 1, 0),
                 ('v2', 'institution', 'visit', '"i2"', 'o', 3, 1, 0),
                 ('v2', 'answer.U1', 'visit', '3', 'o', 4, 1, 0);"#,
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let sql: String = conn
            .query_row("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'fields_by_value'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(sql.ends_with(&format!("WHERE {VALUE_INDEX_CONDITION}")), "{sql}");
        assert_eq!(VALUE_INDEX_CONDITION, format!("field NOT GLOB '{}*'", sidak_core::records::ANSWER_PREFIX));

        let indexed: i64 = conn.query_row("SELECT COUNT(*) FROM fields INDEXED BY fields_by_value WHERE kind = 'visit' AND field NOT GLOB 'answer.*'", [], |r| r.get(0)).unwrap();
        assert_eq!(indexed, 2, "the references only");

        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
            let rows = stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let children = plan(crate::results::CHILDREN_SQL);
        assert!(children.contains("USING COVERING INDEX fields_by_value"), "{children}");
        let without = plan("SELECT entity FROM fields WHERE kind = ?1 AND field = ?2 AND value = json_quote(?3)");
        assert!(!without.contains("fields_by_value"), "without the condition SQLite cannot use it: {without}");

        let tx = conn.transaction().unwrap();
        assert_eq!(crate::results::children(&tx, "visit", "institution", "i2").unwrap(), vec!["v2".to_owned()]);
        assert_eq!(crate::results::ids_of_kind(&tx, "visit").unwrap(), vec!["v1".to_owned(), "v2".to_owned()]);
        assert!(
            crate::results::children(&tx, "visit", "answer.U1", "3").is_err(),
            "answers are not looked up by value"
        );
    }

    /// An institution's records are read through its own index entries, and the
    /// corrections and deductions placed nowhere yet through the unplaced index, not
    /// by reading every unplaced record (migration 10); the unplaced correction is read,
    /// the unplaced device and the other institution's visit are not.
    #[test]
    fn an_institutions_records_are_read_through_the_entity_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute_batch(
            r#"INSERT INTO entities (entity, kind, institution) VALUES
                 ('v1', 'visit', 'i1'), ('v2', 'visit', 'i2'), ('c1', 'correction', NULL), ('d1', 'device', NULL);
               INSERT INTO fields (entity, field, kind, value, v_origin, v_seq, hlc_ms, hlc_c) VALUES
                 ('v1', 'answer.U1', 'visit', '3', 'o', 1, 1, 0),
                 ('v2', 'answer.U1', 'visit', '2', 'o', 2, 1, 0),
                 ('c1', 'field', 'correction', '"answer.U1"', 'o', 3, 1, 0),
                 ('d1', 'name', 'device', '"hp"', 'o', 4, 1, 0);"#,
        )
        .unwrap();
        let sql = crate::results::institution_records_sql();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(["i1"], |r| r.get(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join("; ");
        assert!(plan.contains("USING INDEX entities_by_institution (institution=?)"), "{plan}");
        assert!(plan.contains("USING INDEX entities_unplaced (kind=?)"), "{plan}");
        let ids: std::collections::HashMap<i64, String> = conn
            .prepare(&crate::results::institution_entities_sql())
            .unwrap()
            .query_map(["i1"], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let read: Vec<(String, String)> = conn
            .prepare(&sql)
            .unwrap()
            .query_map(["i1"], |r| Ok((ids[&r.get::<_, i64>(0)?].clone(), r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(read, [("v1".to_owned(), "answer.U1".to_owned()), ("c1".to_owned(), "field".to_owned())]);
        assert_eq!(ids.len(), 2, "{ids:?}");
    }
}
