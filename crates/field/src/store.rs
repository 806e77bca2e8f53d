//! The field store: one SQLite file (WAL, foreign keys on, full fsync on commit),
//! numbered migrations applied at open, and `read`/`write` transactions.
//!
//! Every user action runs in one `write` transaction that stores the change and its op
//! together: after a crash either both exist or neither.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use sidak_core::instrument::{load_instrument, Instrument, InstrumentRef};

use crate::error::FieldError;

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
    /// Opens (or creates) the store in `dir`, applying any pending migrations.
    pub fn open(dir: &Path) -> Result<Store, FieldError> {
        std::fs::create_dir_all(dir).map_err(|source| FieldError::Io { path: dir.to_owned(), source })?;
        let path = dir.join(DB_FILE);
        let conn =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)
                .map_err(store_err(dir))?;
        Self::prepare(conn, dir)
    }

    fn prepare(mut conn: Connection, dir: &Path) -> Result<Store, FieldError> {
        let e = store_err(dir);
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(&e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(&e)?;
        // FULL: a commit is on disk before the command reports success, so a dead
        // battery cannot take back what the assessor was told was saved.
        conn.pragma_update(None, "synchronous", "FULL").map_err(&e)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(&e)?;
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

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64, FieldError> {
        self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(store_err(&self.dir))
    }
}

/// Applies every migration after the database's `user_version`, each in its own
/// transaction together with the version bump.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
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
    tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()
}

/// Sets a value in the `meta` table.
pub(crate) fn set_meta(tx: &Transaction<'_>, key: &str, value: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt =
            conn.prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn migrating_an_old_store_gives_the_fresh_schema() {
        let dir = tempfile::tempdir().unwrap();
        // A store as the first release left it: only migration 1, with data in it.
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute("INSERT INTO meta (key, value) VALUES ('origin', 'kept')", []).unwrap();
        }
        let migrated = Store::open(dir.path()).unwrap();
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = Store::open(fresh_dir.path()).unwrap();
        assert_eq!(schema(&migrated.conn), schema(&fresh.conn));
        assert_eq!(migrated.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let kept: String =
            migrated.conn.query_row("SELECT value FROM meta WHERE key = 'origin'", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, "kept", "migration keeps data");
        // Opening again changes nothing.
        drop(migrated);
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(schema(&again.conn), schema(&fresh.conn));
    }

    #[test]
    fn pragmas_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mode: String = store.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        let fk: i64 = store.conn.pragma_query_value(None, "foreign_keys", |r| r.get(0)).unwrap();
        let sync: i64 = store.conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        assert_eq!((mode.as_str(), fk, sync), ("wal", 1, 2));
    }
}
