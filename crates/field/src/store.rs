//! The field store: one SQLCipher-encrypted SQLite file (WAL, foreign keys on, full
//! fsync on commit), numbered migrations applied at open, and `read`/`write`
//! transactions. Its key comes from [`crate::keys`]; the WAL is encrypted page by page
//! like the database, and temporary tables stay in memory.
//!
//! Every user action runs in one `write` transaction that stores the change and its op
//! together: after a crash either both exist or neither.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use sidak_core::instrument::{load_instrument, Instrument, InstrumentRef};

use crate::error::FieldError;
use crate::keys::DbKey;

/// The database file inside the data directory. The name says nothing about what is
/// assessed (see docs/field.md).
pub const DB_FILE: &str = "store.sqlite";

/// Numbered migrations; the index + 1 is the schema version they bring.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the op log, materialised fields, instruments, registry, assignments, blobs.
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    CREATE TABLE ops (
        origin TEXT NOT NULL,
        seq INTEGER NOT NULL CHECK (seq > 0),
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
        PRIMARY KEY (origin, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE fields (
        entity TEXT NOT NULL,
        field TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        v_origin TEXT NOT NULL,
        v_seq INTEGER NOT NULL,
        hlc_ms INTEGER NOT NULL,
        hlc_c INTEGER NOT NULL,
        PRIMARY KEY (entity, field),
        FOREIGN KEY (v_origin, v_seq) REFERENCES ops (origin, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE instruments (
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        digest TEXT NOT NULL,
        document TEXT NOT NULL,
        PRIMARY KEY (id, version)
    ) STRICT;
    CREATE TABLE registry (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('institution', 'unit', 'product')),
        code TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT,
        region TEXT
    ) STRICT;
    CREATE TABLE assignments (id TEXT PRIMARY KEY, document TEXT NOT NULL) STRICT;
    CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        media_type TEXT NOT NULL,
        added_at INTEGER NOT NULL
    ) STRICT;
    "#,
    // 2: sync bookkeeping: acknowledgements per origin, cursor, uploads; lookups by kind.
    //    `uploads.received` is what the server held when an upload last finished or was
    //    set aside, not kept per chunk: an upload resumes from the server's own count.
    r#"
    CREATE TABLE acks (
        origin TEXT PRIMARY KEY,
        server_seq INTEGER NOT NULL DEFAULT 0,
        server_hash TEXT,
        upstream_seq INTEGER,
        upstream_hash TEXT
    ) STRICT;
    CREATE TABLE sync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    CREATE TABLE uploads (
        sha256 TEXT PRIMARY KEY REFERENCES blobs (sha256),
        received INTEGER NOT NULL DEFAULT 0,
        complete INTEGER NOT NULL DEFAULT 0,
        pruned INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX fields_by_kind ON fields (kind, entity);
    CREATE INDEX ops_by_entity ON ops (entity);
    "#,
    // 3: an evidence file the server refused because it no longer hashes to its
    //    digest (damaged storage): not sent again, reported, never blocks the rest.
    r#"
    ALTER TABLE uploads ADD COLUMN failed TEXT;
    "#,
    // 4: whether the centre holds each file complete (relayed by a regional server):
    //    with the centre's acknowledgement of the ops citing it, what `prune` needs.
    r#"
    ALTER TABLE uploads ADD COLUMN centre_complete INTEGER NOT NULL DEFAULT 0;
    "#,
    // 5: records by what they point at (a visit's questionnaires, notes, evidence; a
    //    file's evidence records), as the server indexes them.
    r#"
    CREATE INDEX fields_by_value ON fields (kind, field, value);
    "#,
];

/// The open store.
pub struct Store {
    conn: Connection,
    dir: PathBuf,
    instruments: BTreeMap<InstrumentRef, Instrument>,
}

fn store_err(dir: &Path) -> impl Fn(rusqlite::Error) -> FieldError + '_ {
    move |source| FieldError::Store { path: dir.join(DB_FILE), source }
}

impl Store {
    /// Opens (or creates) the store in `dir` with its key, applying any pending
    /// migrations.
    pub(crate) fn open(dir: &Path, key: &DbKey) -> Result<Store, FieldError> {
        std::fs::create_dir_all(dir).map_err(|source| FieldError::Io { path: dir.to_owned(), source })?;
        let conn = open_keyed(&dir.join(DB_FILE), key).map_err(|source| match source {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                FieldError::Corrupt(format!(
                    "{} does not open with the key its header holds (the two files do not belong together)",
                    dir.join(DB_FILE).display()
                ))
            }
            source => FieldError::Store { path: dir.join(DB_FILE), source },
        })?;
        Self::prepare(conn, dir)
    }

    fn prepare(mut conn: Connection, dir: &Path) -> Result<Store, FieldError> {
        let e = store_err(dir);
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(&e)?;
        // Sorts and temporary tables in memory: never a plaintext temporary file.
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(&e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(&e)?;
        // FULL: a commit is on disk before the command reports success, so a dead
        // battery cannot take back what the assessor was told was saved.
        conn.pragma_update(None, "synchronous", "FULL").map_err(&e)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(&e)?;
        // Room for every statement an answer's write and a sync run, so none is
        // compiled again per op.
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn).map_err(&e)?;
        let mut store = Store { conn, dir: dir.to_owned(), instruments: BTreeMap::new() };
        store.reload_instruments()?;
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` in a read transaction.
    pub fn read<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &BTreeMap<InstrumentRef, Instrument>) -> Result<T, FieldError>,
    ) -> Result<T, FieldError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(store_err(&self.dir))?;
        let out = f(&tx, &self.instruments)?;
        tx.finish().map_err(store_err(&self.dir))?;
        Ok(out)
    }

    /// Runs `f` in a write transaction, committed only if `f` succeeds.
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &BTreeMap<InstrumentRef, Instrument>) -> Result<T, FieldError>,
    ) -> Result<T, FieldError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(store_err(&self.dir))?;
        let out = f(&tx, &self.instruments)?;
        tx.commit().map_err(store_err(&self.dir))?;
        Ok(out)
    }

    /// Re-reads the instruments table into memory.
    pub(crate) fn reload_instruments(&mut self) -> Result<(), FieldError> {
        let dir = self.dir.clone();
        let mut stmt = self.conn.prepare("SELECT document FROM instruments").map_err(store_err(&dir))?;
        let docs: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(store_err(&dir))?
            .collect::<Result<_, _>>()
            .map_err(store_err(&dir))?;
        drop(stmt);
        self.instruments = docs
            .iter()
            .map(|d| load_instrument(d).map(|i| (i.reference.clone(), i)))
            .collect::<Result<_, _>>()
            .map_err(|e| FieldError::Corrupt(format!("a stored instrument no longer loads: {e}")))?;
        Ok(())
    }

    /// The instruments held.
    pub fn instruments(&self) -> &BTreeMap<InstrumentRef, Instrument> {
        &self.instruments
    }

    /// Writes the WAL back into the database file and empties it.
    pub(crate) fn checkpoint(&mut self) -> Result<(), FieldError> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(store_err(&self.dir))
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64, FieldError> {
        self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(store_err(&self.dir))
    }
}

/// Opens the database file with SQLCipher's raw key (before anything else touches it)
/// and reads its schema, which fails with `NotADatabase` under a wrong key.
pub(crate) fn open_keyed(path: &Path, key: &DbKey) -> rusqlite::Result<Connection> {
    // NO_MUTEX: the connection is used by one thread at a time (rusqlite's `Connection` is
    // not `Sync`), so SQLite's per-connection mutex on every call is pure cost.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.execute_batch(&key.pragma())?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
    Ok(conn)
}

/// Whether `path` is a plain (unencrypted) SQLite database: its first 16 bytes say so.
pub(crate) fn is_plain_sqlite(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 16];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"SQLite format 3\0"
}

/// Applies every migration after the database's `user_version`, each in its own
/// transaction together with the version bump.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > MIGRATIONS.len() as i64 {
        // A newer release migrated it: this one would read and write tables whose
        // meaning it does not know.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!(
                "the store's schema is version {current}, newer than this sidak-field knows ({}): a newer release wrote it; run that release or a later one",
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
    use super::*;

    /// Schema version 1 exactly as the first release created it. Frozen here, not read
    /// from `MIGRATIONS[0]`: a released migration edited in place would leave stores
    /// made by that release behind, and this test would then see the difference.
    const RELEASE_1: &str = r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    CREATE TABLE ops (
        origin TEXT NOT NULL,
        seq INTEGER NOT NULL CHECK (seq > 0),
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
        PRIMARY KEY (origin, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE fields (
        entity TEXT NOT NULL,
        field TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        v_origin TEXT NOT NULL,
        v_seq INTEGER NOT NULL,
        hlc_ms INTEGER NOT NULL,
        hlc_c INTEGER NOT NULL,
        PRIMARY KEY (entity, field),
        FOREIGN KEY (v_origin, v_seq) REFERENCES ops (origin, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE instruments (
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        digest TEXT NOT NULL,
        document TEXT NOT NULL,
        PRIMARY KEY (id, version)
    ) STRICT;
    CREATE TABLE registry (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('institution', 'unit', 'product')),
        code TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT,
        region TEXT
    ) STRICT;
    CREATE TABLE assignments (id TEXT PRIMARY KEY, document TEXT NOT NULL) STRICT;
    CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        media_type TEXT NOT NULL,
        added_at INTEGER NOT NULL
    ) STRICT;
    "#;

    /// SQL with its layout taken out: runs of white space become one space, and none
    /// is kept next to brackets and commas (an `ALTER TABLE … ADD COLUMN` writes the
    /// new column on the table's last line).
    fn normalised(sql: &str) -> String {
        let words = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut out = String::new();
        for c in words.chars() {
            if c == ' ' && out.ends_with(['(', ',']) {
                continue;
            }
            if matches!(c, ')' | ',' | '(') && out.ends_with(' ') {
                out.pop();
            }
            out.push(c);
        }
        out
    }

    /// One schema object: type, name, table and normalised SQL.
    type SchemaObject = (String, String, String, Option<String>);

    /// Every schema object and the schema version.
    fn schema(conn: &Connection) -> (Vec<SchemaObject>, i64) {
        let mut stmt = conn.prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").unwrap();
        let objects = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, Option<String>>(3)?.as_deref().map(normalised)))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (objects, conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap())
    }

    #[test]
    fn normalising_ignores_layout_only() {
        assert_eq!(
            normalised("CREATE TABLE t (\n  a INTEGER ,\n  b TEXT\n    , c TEXT)"),
            "CREATE TABLE t(a INTEGER,b TEXT,c TEXT)"
        );
        assert_ne!(normalised("CREATE TABLE t (a INTEGER)"), normalised("CREATE TABLE t (a TEXT)"));
    }

    #[test]
    fn migrating_an_old_store_gives_the_fresh_schema() {
        use serde_json::json;
        use sidak_core::hash::Sha256Digest;
        use sidak_core::hlc::Hlc;
        use sidak_core::ids::{EntityId, OriginId};
        use sidak_core::op::Op;
        use sidak_core::records::{EntityKind, EntityRef};

        let dir = tempfile::tempdir().unwrap();
        // A store as the first release left it, with a device identity, ops and their
        // fields, and a photo waiting to be sent.
        let origin = OriginId(uuid::Uuid::from_bytes([7; 16]));
        let me = EntityRef { kind: EntityKind::Device, id: EntityId(origin.0) };
        let visit = EntityRef { kind: EntityKind::Visit, id: EntityId(uuid::Uuid::from_bytes([8; 16])) };
        let mut ops: Vec<Op> = Vec::new();
        for (entity, field, value) in [
            (me, "assessor", json!("a1")),
            (me, "region", json!("jateng")),
            (visit, "mode", json!("covert")),
            (visit, "answer.proses.moto", json!(2)),
            (visit, "answer.proses.moto", json!(3)),
        ] {
            let seq = ops.len() as u64 + 1;
            let prev = ops.last().map_or(Sha256Digest::ZERO, |o| o.hash);
            let parent = ops.iter().rev().find(|o| o.entity == entity && o.field == field).map(Op::op_ref);
            let ms = 1_790_000_000_000 + seq * 1000;
            ops.push(Op::new(origin, seq, Hlc { ms, c: 0 }, ms as i64, entity, field, value, parent, prev));
        }
        let digest = "ab".repeat(32);
        {
            let mut conn = open_keyed(&dir.path().join(DB_FILE), &DbKey::for_tests()).unwrap();
            conn.execute_batch(RELEASE_1).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            let tx = conn.transaction().unwrap();
            for (key, value) in [("origin", origin.to_string()), ("assessor", "a1".into()), ("region", "jateng".into())]
            {
                set_meta(&tx, key, &value).unwrap();
            }
            for op in &ops {
                crate::log::insert(&tx, op).unwrap();
                crate::log::apply(&tx, op).unwrap();
            }
            tx.execute(
                "INSERT INTO blobs (sha256, size, media_type, added_at) VALUES (?1, 5, 'image/jpeg', 1)",
                [&digest],
            )
            .unwrap();
            tx.commit().unwrap();
        }

        let mut migrated = Store::open(dir.path(), &DbKey::for_tests()).unwrap();
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = Store::open(fresh_dir.path(), &DbKey::for_tests()).unwrap();
        assert_eq!(schema(&migrated.conn), schema(&fresh.conn), "migrated and fresh schemas differ");
        assert_eq!(schema(&migrated.conn).1, MIGRATIONS.len() as i64);
        assert_eq!(migrated.schema_version().unwrap(), MIGRATIONS.len() as i64);

        // The data survived, and the new tables work with it.
        let (identity, held, moto, blob) = migrated
            .write(|tx, _| {
                let identity = crate::log::require_identity(tx)?;
                let held = crate::log::read_ops(tx, Some(origin), 1, u64::MAX)?;
                let moto: String = tx
                    .query_row(
                        "SELECT value FROM fields WHERE entity = ?1 AND field = 'answer.proses.moto'",
                        [visit.id.to_string()],
                        |r| r.get(0),
                    )
                    .map_err(crate::error::db)?;
                tx.execute("INSERT INTO uploads (sha256) VALUES (?1)", [&digest]).map_err(crate::error::db)?;
                let blob: (i64, String, i64, i64, i64, Option<String>, i64) = tx
                    .query_row(
                        "SELECT b.size, b.media_type, u.received, u.complete, u.pruned, u.failed, u.centre_complete
                         FROM blobs b JOIN uploads u ON u.sha256 = b.sha256",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
                    )
                    .map_err(crate::error::db)?;
                Ok((identity, held, moto, blob))
            })
            .unwrap();
        assert_eq!((identity.origin, identity.assessor.as_str(), identity.region.as_str()), (origin, "a1", "jateng"));
        assert_eq!(held, ops, "every op, byte for byte");
        assert_eq!(moto, "3", "the materialised fields");
        assert_eq!(blob, (5, "image/jpeg".to_owned(), 0, 0, 0, None, 0));
        let head = migrated.read(|tx, _| crate::log::head(tx, origin)).unwrap();
        assert_eq!(head, (5, ops[4].hash));

        // Opening again changes nothing.
        drop(migrated);
        let again = Store::open(dir.path(), &DbKey::for_tests()).unwrap();
        assert_eq!(schema(&again.conn), schema(&fresh.conn));
    }

    /// A store a newer release migrated is refused, with what to do, and left as it was.
    #[test]
    fn a_store_from_a_newer_release_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &DbKey::for_tests()).unwrap();
        let newer = MIGRATIONS.len() as i64 + 1;
        store.conn.pragma_update(None, "user_version", newer).unwrap();
        drop(store);
        let Err(e) = Store::open(dir.path(), &DbKey::for_tests()) else { panic!("a newer store was opened") };
        let message = e.to_string();
        assert!(
            message.contains(&format!("schema is version {newer}, newer than this sidak-field knows")),
            "{message}"
        );
        let conn = open_keyed(&dir.path().join(DB_FILE), &DbKey::for_tests()).unwrap();
        assert_eq!(conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).unwrap(), newer);
    }

    #[test]
    fn the_database_is_unreadable_without_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), &DbKey::for_tests()).unwrap();
        store.write(|tx, _| set_meta(tx, "assessor", "asr-jateng-01").map_err(crate::error::db)).unwrap();
        drop(store);
        let path = dir.path().join(DB_FILE);
        assert!(!is_plain_sqlite(&path));
        let plain = Connection::open(&path).unwrap();
        let err = plain.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::NotADatabase), "{err}");
        assert!(matches!(
            Store::open(dir.path(), &crate::keys::DbKey::other_for_tests()),
            Err(FieldError::Corrupt(m)) if m.contains("does not open with the key")
        ));
        assert!(Store::open(dir.path(), &DbKey::for_tests()).is_ok());
    }

    #[test]
    fn pragmas_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &DbKey::for_tests()).unwrap();
        let mode: String = store.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        let fk: i64 = store.conn.pragma_query_value(None, "foreign_keys", |r| r.get(0)).unwrap();
        let sync: i64 = store.conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        assert_eq!((mode.as_str(), fk, sync), ("wal", 1, 2));
    }
}
