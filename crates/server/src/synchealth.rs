//! Sync health for the office: per device, when it last pushed here, what it last
//! reported it had not sent yet, its quarantined ops, the open conflicts it is part of
//! and whether its clock was flagged; per region, the same summed up.
//!
//! The backlog columns (`origins.pending_ops`, `pending_files`, `pending_at`) come with
//! a later migration than the rest: the query reads them only where
//! `PRAGMA table_info(origins)` lists them, so a store without them still reports.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Transaction};
use serde::Serialize;
use serde_json::Value;

use crate::admin;
use crate::error::ApiError;
use crate::results::fields_of;

/// One device origin.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DeviceHealth {
    /// The origin (the device's id).
    pub origin: String,
    /// Its assessor.
    pub assessor: Option<String>,
    /// Its region.
    pub region: Option<String>,
    /// Its label, if it set one.
    pub label: Option<String>,
    /// The head this tier holds.
    pub held_seq: u64,
    /// When it last pushed here (ms since 1970).
    pub last_push_at: Option<i64>,
    /// Ops it reported it had not sent yet, at `pending_at`.
    pub pending_ops: Option<u64>,
    /// Files it reported it had not sent yet.
    pub pending_files: Option<u64>,
    /// When it last reported (ms since 1970).
    pub pending_at: Option<i64>,
    /// Its ops held in quarantine here.
    pub quarantined: u64,
    /// Open conflicts one of its writes is part of.
    pub conflicts: u64,
    /// Whether an op of it carried a clock too far ahead.
    pub clock_flagged: bool,
}

impl DeviceHealth {
    /// True when its last report said something was still waiting to be sent.
    pub fn has_unsent(&self) -> bool {
        self.pending_ops.unwrap_or(0) > 0 || self.pending_files.unwrap_or(0) > 0
    }
}

/// One region.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RegionHealth {
    /// Region code.
    pub region: String,
    /// Its devices.
    pub devices: usize,
    /// The latest push of any of them.
    pub last_push_at: Option<i64>,
    /// Devices whose last report named unsent ops or files.
    pub devices_with_unsent: usize,
    /// Unsent ops reported, summed.
    pub pending_ops: u64,
    /// Unsent files reported, summed.
    pub pending_files: u64,
    /// Quarantined ops of the region (every origin).
    pub quarantined: u64,
    /// Open conflicts in the region.
    pub conflicts: u64,
    /// Devices whose clock was flagged.
    pub clocks_flagged: usize,
}

/// The health of every device in `region` (None: all), and of every region.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SyncHealth {
    /// Per region, by code.
    pub regions: Vec<RegionHealth>,
    /// Per device, by region, assessor and origin.
    pub devices: Vec<DeviceHealth>,
}

/// Whether `origins` has the backlog columns.
fn has_pending_columns(tx: &Transaction<'_>) -> Result<bool, ApiError> {
    let mut stmt = tx.prepare("PRAGMA table_info(origins)")?;
    let names: Vec<String> = stmt.query_map([], |r| r.get::<_, String>(1))?.collect::<Result<_, _>>()?;
    Ok(["pending_ops", "pending_files", "pending_at"].iter().all(|c| names.iter().any(|n| n == c)))
}

/// Reads the sync health of `region` (None: every region).
pub fn sync_health(tx: &Transaction<'_>, region: Option<&str>) -> Result<SyncHealth, ApiError> {
    let pending = if has_pending_columns(tx)? { "pending_ops, pending_files, pending_at" } else { "NULL, NULL, NULL" };
    let sql = format!(
        "SELECT origin, assessor, region, head_seq, last_push_at, quarantined, clock_flagged, {pending}
         FROM origins WHERE role = 'device' AND (?1 IS NULL OR region = ?1) ORDER BY region, assessor, origin"
    );
    let mut stmt = tx.prepare(&sql)?;
    let rows = stmt.query_map([region], |r| {
        Ok(DeviceHealth {
            origin: r.get(0)?,
            assessor: r.get(1)?,
            region: r.get(2)?,
            label: None,
            held_seq: r.get::<_, i64>(3)?.max(0) as u64,
            last_push_at: r.get(4)?,
            quarantined: r.get::<_, i64>(5)?.max(0) as u64,
            clock_flagged: r.get::<_, i64>(6)? == 1,
            pending_ops: r.get::<_, Option<i64>>(7)?.map(|n| n.max(0) as u64),
            pending_files: r.get::<_, Option<i64>>(8)?.map(|n| n.max(0) as u64),
            pending_at: r.get(9)?,
            conflicts: 0,
        })
    })?;
    let mut devices: Vec<DeviceHealth> = rows.collect::<Result<_, _>>()?;
    drop(stmt);

    // Open conflicts, counted for each origin with a write in them and for the region.
    let open: Vec<admin::ConflictView> =
        admin::conflicts(tx, region)?.into_iter().filter(|c| c.resolved_by.is_none()).collect();
    let mut per_origin: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_region: BTreeMap<String, u64> = BTreeMap::new();
    for c in &open {
        let mut origins: Vec<String> = c
            .versions
            .iter()
            .filter_map(|v| v.get("op").and_then(Value::as_str))
            .filter_map(|op| op.split_once('#').map(|(o, _)| o.to_owned()))
            .collect();
        origins.sort();
        origins.dedup();
        for o in origins {
            *per_origin.entry(o).or_default() += 1;
        }
        let r: Option<String> = tx
            .query_row("SELECT region FROM entities WHERE entity = ?1", [&c.entity], |r| r.get(0))
            .optional()?
            .flatten();
        *per_region.entry(r.unwrap_or_default()).or_default() += 1;
    }
    for d in &mut devices {
        d.conflicts = per_origin.get(&d.origin).copied().unwrap_or(0);
        d.label = fields_of(tx, &d.origin)?.get("label").and_then(Value::as_str).map(str::to_owned);
    }

    // Quarantined ops of each region, whatever origin wrote them.
    let mut stmt = tx.prepare(
        "SELECT COALESCE(o.region, ''), COUNT(*) FROM quarantine q JOIN ops o ON o.origin = q.origin AND o.seq = q.seq
         WHERE (?1 IS NULL OR o.region = ?1) GROUP BY 1",
    )?;
    let held: BTreeMap<String, i64> =
        stmt.query_map([region], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    drop(stmt);

    let mut regions: BTreeMap<String, RegionHealth> = BTreeMap::new();
    let blank = |code: &str| RegionHealth {
        region: code.to_owned(),
        devices: 0,
        last_push_at: None,
        devices_with_unsent: 0,
        pending_ops: 0,
        pending_files: 0,
        quarantined: 0,
        conflicts: 0,
        clocks_flagged: 0,
    };
    for d in &devices {
        let code = d.region.clone().unwrap_or_default();
        let r = regions.entry(code.clone()).or_insert_with(|| blank(&code));
        r.devices += 1;
        r.last_push_at = r.last_push_at.max(d.last_push_at);
        r.devices_with_unsent += usize::from(d.has_unsent());
        r.pending_ops += d.pending_ops.unwrap_or(0);
        r.pending_files += d.pending_files.unwrap_or(0);
        r.clocks_flagged += usize::from(d.clock_flagged);
    }
    for (code, n) in &held {
        regions.entry(code.clone()).or_insert_with(|| blank(code)).quarantined = (*n).max(0) as u64;
    }
    for (code, n) in &per_region {
        regions.entry(code.clone()).or_insert_with(|| blank(code)).conflicts = *n;
    }
    Ok(SyncHealth { regions: regions.into_values().collect(), devices })
}
