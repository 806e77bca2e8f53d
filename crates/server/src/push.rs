//! `POST /v1/ops/push`: permissions for the whole request first, then per origin in
//! seq order — admit to the chain, validate, store (applied or quarantined) — then
//! retry what waited for a record that has now arrived, and recompute the results
//! the batch touched. All in the caller's one transaction.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Transaction};
use sidak_core::chain::{admit, Admission, ChainHead};
use sidak_core::hlc::DEFAULT_MAX_DRIFT_MS;
use sidak_core::ids::OriginId;
use sidak_core::op::Op;
use sidak_core::records::{EntityKind, RejectCode, Rejection};
use sidak_core::sign::{PublicKey, SignedHead};
use sidak_core::wire::{ChainRejectCode, OriginPushResult, PushRequest, PushResponse, QuarantinedOp, RejectedOp};

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::ledger::{self, Binding, Instruments};

/// What a push changed, beyond its answer.
#[derive(Debug, Default)]
pub struct PushEffects {
    /// Institutions whose results may have changed.
    pub dirty: BTreeSet<String>,
    /// Ops newly stored.
    pub stored: usize,
}

/// Groups a request's ops by origin, each group in seq order.
fn by_origin(ops: Vec<Op>) -> BTreeMap<OriginId, Vec<Op>> {
    let mut groups: BTreeMap<OriginId, Vec<Op>> = BTreeMap::new();
    for op in ops {
        groups.entry(op.origin).or_default().push(op);
    }
    for group in groups.values_mut() {
        group.sort_by_key(|o| o.seq);
    }
    groups
}

/// The binding a new origin's registration asks for.
#[derive(Clone, Debug)]
struct Registration {
    role: String,
    assessor: Option<String>,
    region: Option<String>,
}

/// Whether the caller may push an origin's ops; for an unknown origin, the binding its
/// registration (seq 1 and 2) would create.
fn permit(
    tx: &Transaction<'_>,
    who: &Principal,
    origin: OriginId,
    ops: &[Op],
) -> Result<Option<Registration>, ApiError> {
    let forbidden = |why: String| Err(ApiError::origin_forbidden(format!("origin {origin}: {why}")));
    if let Some(b) = ledger::binding(tx, origin)? {
        return match who.role {
            Role::Admin => Ok(None),
            Role::Assessor if b.role == "device" && b.assessor == who.assessor && b.region == who.region => Ok(None),
            Role::Peer if b.region.is_some() && b.region == who.region => Ok(None),
            _ => forbidden(format!(
                "it belongs to {} of {}",
                b.assessor.as_deref().unwrap_or("a server"),
                b.region.as_deref().unwrap_or("the centre")
            )),
        };
    }
    let Some(first) = ops.iter().find(|o| o.seq == 1) else {
        // Nothing of it can be stored anyway: its ops come back as gaps.
        return Ok(None);
    };
    let own = first.entity.kind == EntityKind::Device && first.entity.id.0 == origin.0;
    let claim = |field: &str| {
        ops.iter()
            .find(|o| o.seq <= 2 && own && o.entity == first.entity && o.field == field)
            .and_then(|o| o.value.as_str().map(str::to_owned))
    };
    let region = claim("region");
    let (role, assessor) = match (first.field.as_str(), first.value.as_str()) {
        ("assessor", Some(a)) if own => ("device", Some(a.to_owned())),
        ("role", Some("server")) if own => ("server", None),
        _ => {
            return forbidden(
                "a new origin's first op must register it (device/<origin> `assessor`, or `role` = \"server\")".into(),
            )
        }
    };
    let allowed = match who.role {
        Role::Admin => role == "device" && region.is_some() || role == "server",
        Role::Assessor => role == "device" && assessor == who.assessor && region == who.region,
        // A regional server registers its own origin in its region (the peer token's).
        Role::Peer => role == "server" || region.is_some() && region == who.region,
        Role::Supervisor => false,
    };
    let region = if who.role == Role::Peer && role == "server" { who.region.clone() } else { region };
    if !allowed {
        return forbidden(format!(
            "its registration (assessor {}, region {}) does not match this token (assessor {}, region {})",
            assessor.as_deref().unwrap_or("-"),
            region.as_deref().unwrap_or("-"),
            who.assessor.as_deref().unwrap_or("-"),
            who.region.as_deref().unwrap_or("-")
        ));
    }
    Ok(Some(Registration { role: role.to_owned(), assessor, region }))
}

/// Runs a push inside `tx`.
pub fn push(
    tx: &Transaction<'_>,
    instruments: &Instruments,
    who: &Principal,
    request: PushRequest,
    now_ms: i64,
) -> Result<(PushResponse, PushEffects), ApiError> {
    who.require(&[Role::Assessor, Role::Peer, Role::Admin])?;
    // A batch's ops mostly touch the same few records: their checks and scopes read
    // the same rows, remembered while this push runs.
    let _memo = ledger::remember_reads();
    let groups = by_origin(request.ops);
    // Permissions for the whole request before anything is written.
    let mut new_bindings = BTreeMap::new();
    for (origin, ops) in &groups {
        if let Some(b) = permit(tx, who, *origin, ops)? {
            new_bindings.insert(*origin, b);
        }
        check_issued_key(tx, who, *origin, ops)?;
    }
    let mut clock = ledger::clock(tx)?;
    let mut effects = PushEffects::default();
    let mut results = Vec::new();
    let signed: BTreeMap<OriginId, &SignedHead> = request.heads.iter().map(|h| (h.origin, h)).collect();
    for (origin, ops) in groups {
        let mut binding = ledger::binding(tx, origin)?;
        // An origin with a registered key must sign the head its ops here end at;
        // unsigned or badly signed ops are kept, in quarantine, never applied.
        let signature = check_signature(tx, origin, &ops, signed.get(&origin).copied())?;
        let mut result = OriginPushResult {
            origin,
            held: ChainHead::EMPTY,
            stored: 0,
            duplicates: 0,
            quarantined: Vec::new(),
            rejected: Vec::new(),
        };
        let mut blocked = false;
        // Ops stored in this run move the origin's head once, when the run ends (or
        // before anything reads the head from the store).
        let mut unsaved_head = false;
        let save_head = |binding: &Option<ledger::Binding>, unsaved: &mut bool| -> Result<(), ApiError> {
            if let (Some(b), true) = (binding, std::mem::take(unsaved)) {
                ledger::set_head(tx, origin, ChainHead { seq: b.head_seq, hash: b.head_hash }, now_ms)?;
            }
            Ok(())
        };
        for op in ops {
            if blocked {
                result.rejected.push(RejectedOp {
                    seq: op.seq,
                    code: ChainRejectCode::Blocked,
                    message: "an earlier op of this origin in the push was refused".into(),
                });
                continue;
            }
            let head =
                binding.as_ref().map(|b| ChainHead { seq: b.head_seq, hash: b.head_hash }).unwrap_or(ChainHead::EMPTY);
            let held_hash = if op.seq <= head.seq { ledger::hash_at(tx, origin, op.seq)? } else { None };
            let admission = admit(head, held_hash, &op);
            // Held already beyond the verified head (it came down from the upstream tier
            // out of order): the same op is a duplicate that lets the head move on.
            if admission == Admission::Append {
                if let Some(held) = ledger::hash_at(tx, origin, op.seq)? {
                    if held == op.hash {
                        result.duplicates += 1;
                        save_head(&binding, &mut unsaved_head)?;
                        let h = ledger::advance_head(tx, origin)?;
                        if let Some(b) = binding.as_mut() {
                            b.head_seq = h.seq;
                            b.head_hash = h.hash;
                        }
                        continue;
                    }
                    result.rejected.push(RejectedOp {
                        seq: op.seq,
                        code: ChainRejectCode::Altered,
                        message: format!("this server holds a different op #{} of this origin (hash {held})", op.seq),
                    });
                    blocked = true;
                    continue;
                }
            }
            let (code, message) = match admission {
                Admission::Duplicate => {
                    result.duplicates += 1;
                    continue;
                }
                Admission::Append => {
                    if binding.is_none() {
                        let r = new_bindings
                            .get(&origin)
                            .cloned()
                            .ok_or_else(|| ApiError::internal("an unbound origin reached append"))?;
                        ledger::bind(tx, origin, &r.role, r.assessor.as_deref(), r.region.as_deref())?;
                        binding = ledger::binding(tx, origin)?;
                    }
                    let b = binding.as_mut().expect("bound above");
                    store_one(tx, instruments, b, &op, now_ms, signature.as_ref().err(), &mut effects)?;
                    unsaved_head = true;
                    result.stored += 1;
                    if clock.observe(op.hlc, now_ms.max(0) as u64).is_err()
                        || op.wall > now_ms.saturating_add(DEFAULT_MAX_DRIFT_MS as i64)
                    {
                        tx.execute("UPDATE origins SET clock_flagged = 1 WHERE origin = ?1", [origin.to_string()])?;
                    }
                    continue;
                }
                Admission::Altered { held } => {
                    tx.execute(
                        "INSERT INTO rejections (origin, seq, code, message, hash, token, at) VALUES (?1, ?2, 'altered', ?3, ?4, ?5, ?6)",
                        params![origin.to_string(), op.seq as i64, format!("held {held}"), op.hash.to_hex(), who.token_id, now_ms],
                    )?;
                    (
                        ChainRejectCode::Altered,
                        format!("this server holds a different op #{} of this origin (hash {held})", op.seq),
                    )
                }
                Admission::Gap { expected } => (ChainRejectCode::Gap, format!("send op #{expected} first")),
                Admission::BrokenLink { expected } => {
                    (ChainRejectCode::BrokenLink, format!("prev must be {expected}, the hash of op #{}", op.seq - 1))
                }
                Admission::Malformed(e) => (ChainRejectCode::Malformed, e.to_string()),
            };
            result.rejected.push(RejectedOp { seq: op.seq, code, message });
            blocked = true;
        }
        save_head(&binding, &mut unsaved_head)?;
        if let Ok(Some(head)) = &signature {
            if ledger::hash_at(tx, origin, head.seq)? == Some(head.hash) {
                ledger::store_signed_head(tx, head)?;
            }
        }
        results.push((origin, result));
    }
    retry_waiting(tx, instruments, now_ms, &mut effects)?;
    // Report heads and quarantine after everything (a retry may have released ops).
    for (origin, result) in &mut results {
        if let Some(b) = ledger::binding(tx, *origin)? {
            result.held = ChainHead { seq: b.head_seq, hash: b.head_hash };
        }
        let mut stmt = tx.prepare_cached("SELECT seq, code, message FROM quarantine WHERE origin = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([origin.to_string()], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
        })?;
        for row in rows {
            let (seq, code, message) = row?;
            let code: RejectCode =
                serde_json::from_value(serde_json::Value::String(code)).unwrap_or(RejectCode::Unknown);
            result.quarantined.push(QuarantinedOp { seq: seq as u64, code, message });
        }
    }
    let server_hlc = clock.tick(now_ms.max(0) as u64);
    ledger::save_clock(tx, &clock)?;
    Ok((PushResponse { origins: results.into_iter().map(|(_, r)| r).collect(), server_hlc }, effects))
}

/// Validates and stores one admitted op, moving `author`'s head in memory only (the
/// caller saves it).
fn store_one(
    tx: &Transaction<'_>,
    instruments: &Instruments,
    author: &mut Binding,
    op: &Op,
    now_ms: i64,
    refused: Option<&Rejection>,
    effects: &mut PushEffects,
) -> Result<(), ApiError> {
    let verdict = match refused {
        Some(r) => Err(r.clone()),
        None => ledger::check(tx, instruments, op, author)?,
    };
    match verdict {
        Ok(()) => {
            if let Some(inst) = ledger::store_applied_row(tx, op, author, now_ms)? {
                effects.dirty.insert(inst);
            }
        }
        Err(rejection) => {
            ledger::store_quarantined_row(tx, op, author, now_ms)?;
            let code = if refused.is_some() {
                BAD_SIGNATURE.to_owned()
            } else {
                serde_json::to_value(rejection.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            };
            ledger::quarantine(tx, op, &code, &rejection.message, now_ms)?;
        }
    }
    author.head_seq = op.seq;
    author.head_hash = op.hash;
    effects.stored += 1;
    Ok(())
}

/// The key an origin's own ops in a push register (its device record's `public_key`).
fn registered_key(origin: OriginId, ops: &[Op]) -> Option<PublicKey> {
    ops.iter()
        .find(|o| o.entity.kind == EntityKind::Device && o.entity.id.0 == origin.0 && o.field == "public_key")
        .and_then(|o| o.value.as_str().and_then(|s| s.parse::<PublicKey>().ok()))
}

/// An assessor token issued for device keys pushes only origins that hold (or register
/// in this push) one of them: a copied token does not let another device in.
fn check_issued_key(tx: &Transaction<'_>, who: &Principal, origin: OriginId, ops: &[Op]) -> Result<(), ApiError> {
    if who.role != Role::Assessor {
        return Ok(());
    }
    let issued = crate::auth::device_keys(tx, &who.token_id)?;
    if issued.is_empty() {
        return Ok(());
    }
    let key = match ledger::public_key(tx, origin)? {
        Some(k) => Some(k),
        None => registered_key(origin, ops),
    };
    match key {
        Some(k) if issued.contains(&k) => Ok(()),
        Some(k) => Err(ApiError::origin_forbidden(format!(
            "origin {origin}: its device key {k} is not one this token ({}) was issued for; ask the admin for a token for this device",
            who.token_id
        ))),
        None => Err(ApiError::origin_forbidden(format!(
            "origin {origin}: token {} was issued for device keys, and this origin registers none",
            who.token_id
        ))),
    }
}

/// The quarantine code of ops whose chain head is not signed by their origin's key.
pub const BAD_SIGNATURE: &str = "bad_signature";

/// Checks the signed head an origin's ops in a push end at, when the origin registered
/// a key (held, or registered by these very ops). `Ok(Some(head))`: verified, to keep;
/// `Ok(None)`: the origin signs nothing; `Err`: why its new ops go to quarantine.
fn check_signature(
    tx: &Transaction<'_>,
    origin: OriginId,
    ops: &[Op],
    head: Option<&SignedHead>,
) -> Result<Result<Option<SignedHead>, Rejection>, ApiError> {
    let registered = registered_key(origin, ops);
    let key = match ledger::public_key(tx, origin)? {
        Some(k) => k,
        None => match registered {
            Some(k) => k,
            None => return Ok(Ok(None)),
        },
    };
    let refuse = |why: String| Ok(Err(Rejection { code: RejectCode::Unknown, message: why }));
    let Some(last) = ops.last() else { return Ok(Ok(None)) };
    let Some(head) = head else {
        return refuse(format!("origin {origin} signs its chain, but this push carries no signed head"));
    };
    if (head.seq, head.hash) != (last.seq, last.hash) {
        return refuse(format!(
            "the signed head ({}, {}) is not the last op of this push ({}, {})",
            head.seq, head.hash, last.seq, last.hash
        ));
    }
    match head.verify(&key) {
        Ok(()) => Ok(Ok(Some(head.clone()))),
        Err(e) => refuse(format!("the chain head of origin {origin} at {}: {e}", head.seq)),
    }
}

/// Re-checks ops that waited for a record (`missing_dependency`) until nothing more
/// can be released.
pub fn retry_waiting(
    tx: &Transaction<'_>,
    instruments: &Instruments,
    now_ms: i64,
    effects: &mut PushEffects,
) -> Result<usize, ApiError> {
    let mut released = 0;
    loop {
        let waiting: Vec<Op> = {
            let sql = format!(
                "SELECT {} FROM ops o JOIN quarantine q ON q.origin = o.origin AND q.seq = o.seq WHERE q.code = 'missing_dependency' ORDER BY o.server_seq",
                ledger::OP_COLUMNS.split(", ").map(|c| format!("o.{c}")).collect::<Vec<_>>().join(", ")
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map([], |r| ledger::row_op(r, 0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            out
        };
        let mut progress = false;
        for op in waiting {
            let author = ledger::binding(tx, op.origin)?
                .ok_or_else(|| ApiError::internal("a quarantined op of an unbound origin"))?;
            match ledger::check(tx, instruments, &op, &author)? {
                Ok(()) => {
                    tx.execute(
                        "DELETE FROM quarantine WHERE origin = ?1 AND seq = ?2",
                        params![op.origin.to_string(), op.seq as i64],
                    )?;
                    ledger::release(tx, &op)?;
                    tx.execute(
                        "UPDATE origins SET quarantined = quarantined - 1 WHERE origin = ?1",
                        [op.origin.to_string()],
                    )?;
                    if let Some(inst) = ledger::apply(tx, &op, &author)? {
                        effects.dirty.insert(inst);
                    }
                    released += 1;
                    progress = true;
                }
                Err(r) if r.code != RejectCode::MissingDependency => {
                    let code = serde_json::to_value(r.code)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    ledger::quarantine(tx, &op, &code, &r.message, now_ms)?;
                }
                Err(_) => {}
            }
        }
        if !progress {
            return Ok(released);
        }
    }
}
