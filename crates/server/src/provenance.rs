//! Provenance of a published figure: for every answer an institution's result is
//! computed from, which origin recorded it (device and assessor), and the proof that
//! it arrived unaltered — the chain from the answer's op up to a head the origin
//! signed, every hash recomputed and every link checked, and the signature verified
//! with the origin's registered key.

use rusqlite::{params, Transaction};
use serde::Serialize;
use sidak_core::chain::ChainHead;
use sidak_core::ids::OriginId;

use crate::error::ApiError;
use crate::ledger;

/// How an answer is vouched for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Proof {
    /// The op and every op after it up to a signed head hash and link correctly, and
    /// the head's signature verifies with the origin's key.
    Verified {
        /// The signed head (`seq`).
        head: u64,
    },
    /// The origin registered no key (an older client): only the chain vouches for it.
    Unsigned,
    /// No signed head covers the op yet (it arrived through a tier that kept none).
    NotCovered,
    /// The proof fails: the op or one after it was altered, or the signature is bad.
    Broken {
        /// Why.
        reason: String,
    },
}

/// One answer behind a result.
#[derive(Clone, Debug, Serialize)]
pub struct AnswerProvenance {
    /// The visit or respondent record.
    pub record: String,
    /// The field (`answer.<indicator>`).
    pub field: String,
    /// The value used.
    pub value: serde_json::Value,
    /// The op that wrote it (`origin#seq`).
    pub op: String,
    /// Who: the origin's assessor, or `server` for a server's own records.
    pub recorded_by: String,
    /// The proof.
    pub proof: Proof,
}

/// The provenance of every answer of an institution's submitted visits and their
/// questionnaires (by institution code or record id).
pub fn of_institution(tx: &Transaction<'_>, institution: &str) -> Result<Vec<AnswerProvenance>, ApiError> {
    let id: Option<String> = tx
        .query_row(
            "SELECT entity FROM fields WHERE kind = 'institution' AND field NOT GLOB 'answer.*'
               AND ((field = 'code' AND value = json_quote(?1)) OR entity = ?1) LIMIT 1",
            [institution],
            |r| r.get(0),
        )
        .ok();
    let Some(id) = id else { return Err(ApiError::not_found(format!("no institution `{institution}`"))) };
    let mut stmt = tx.prepare(
        "SELECT f.entity, f.field, f.value, f.v_origin, f.v_seq FROM fields f JOIN entities e ON e.entity = f.entity
         WHERE e.institution = ?1 AND f.kind IN ('visit', 'respondent') AND f.field LIKE 'answer.%'
         ORDER BY f.entity, f.field",
    )?;
    let rows: Vec<(String, String, String, String, i64)> = stmt
        .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (record, field, value, origin, seq) in rows {
        let origin_id: OriginId = origin.parse().map_err(ApiError::internal)?;
        let binding = ledger::binding(tx, origin_id)?;
        let recorded_by = match &binding {
            Some(b) if b.role == "device" => b.assessor.clone().unwrap_or_default(),
            _ => "server".into(),
        };
        out.push(AnswerProvenance {
            record,
            field,
            value: serde_json::from_str(&value).unwrap_or(serde_json::Value::Null),
            op: format!("{origin}#{seq}"),
            recorded_by,
            proof: prove(tx, origin_id, seq as u64)?,
        });
    }
    Ok(out)
}

/// The proof that op `seq` of `origin` is as its origin wrote it.
pub fn prove(tx: &Transaction<'_>, origin: OriginId, seq: u64) -> Result<Proof, ApiError> {
    let Some(key) = ledger::public_key(tx, origin)? else { return Ok(Proof::Unsigned) };
    let head: Option<i64> = tx.query_row(
        "SELECT MIN(seq) FROM signed_heads WHERE origin = ?1 AND seq >= ?2",
        params![origin.to_string(), seq as i64],
        |r| r.get(0),
    )?;
    let Some(head_seq) = head else { return Ok(Proof::NotCovered) };
    let signed = ledger::signed_heads(tx, origin, head_seq as u64, head_seq as u64)?;
    let Some(signed) = signed.first() else { return Ok(Proof::NotCovered) };
    let broken = |reason: String| Ok(Proof::Broken { reason });
    if let Err(e) = signed.verify(&key) {
        return broken(format!("the signed head {head_seq}: {e}"));
    }
    // From the op (its predecessor's hash anchors it) up to the signed head.
    let ops = ledger::ops_of(tx, origin, seq, head_seq as u64)?;
    if ops.len() as u64 != head_seq as u64 - seq + 1 {
        return broken(format!("ops {seq}..{head_seq} are not all held"));
    }
    let mut prev = None;
    for op in &ops {
        if op.compute_hash() != op.hash {
            return broken(format!("op {} was altered: its content does not hash to its hash", op.seq));
        }
        if prev.is_some_and(|p| p != op.prev) {
            return broken(format!("op {} does not link to the op before it", op.seq));
        }
        prev = Some(op.hash);
    }
    let last = ops.last().map(|o| ChainHead { seq: o.seq, hash: o.hash });
    if last != Some(signed.head()) {
        return broken(format!("the chain does not end at the signed head {head_seq}"));
    }
    Ok(Proof::Verified { head: head_seq as u64 })
}
