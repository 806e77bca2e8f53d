//! End-of-day manifests: what a tier holds of each origin, verified, and the pure
//! comparison of two tiers' manifests that names exactly what is missing or differs.

use serde::Serialize;

use crate::chain::{verify_chains, ChainFault};
use crate::hash::Sha256Digest;
use crate::ids::OriginId;
use crate::op::Op;
use crate::wire::{Manifest, ManifestEntry};

/// What a tier knows of an origin besides its ops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginFacts {
    /// The region it is registered in.
    pub region: Option<String>,
    /// Ops of it held in quarantine.
    pub quarantined: u64,
}

/// A manifest entry for one origin from the ops a tier holds of it (any order): every
/// op's hash is recomputed and every link checked, and `seq` is the verified prefix,
/// so a deleted or altered op shows as a shorter `seq` and a fault.
pub fn entry_for(origin: OriginId, ops: &[Op], facts: &OriginFacts) -> ManifestEntry {
    let report = verify_chains(ops.iter().filter(|o| o.origin == origin));
    let head = report.heads.get(&origin).copied().unwrap_or(crate::chain::ChainHead::EMPTY);
    let mut visits = std::collections::BTreeSet::new();
    let mut evidence = std::collections::BTreeSet::new();
    for op in ops.iter().filter(|o| o.origin == origin) {
        match op.entity.kind {
            crate::records::EntityKind::Visit => {
                visits.insert(op.entity.id);
            }
            crate::records::EntityKind::Evidence => {
                evidence.insert(op.entity.id);
            }
            _ => {}
        }
    }
    ManifestEntry {
        origin,
        seq: head.seq,
        head_hash: head.hash,
        ops: ops.iter().filter(|o| o.origin == origin).count() as u64,
        quarantined: facts.quarantined,
        visits: visits.len() as u64,
        evidence: evidence.len() as u64,
        region: facts.region.clone(),
        faults: report.faults,
    }
}

/// Which side of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The tier running the comparison.
    Here,
    /// The tier below it (a region, or a device).
    Below,
}

/// One difference between a tier and the tier below it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "difference", rename_all = "snake_case")]
pub enum ManifestDiff {
    /// The tier below holds ops `from..=to` of the origin that this tier lacks.
    MissingHere {
        /// The origin.
        origin: OriginId,
        /// First seq.
        from: u64,
        /// Last seq.
        to: u64,
    },
    /// This tier holds ops `from..=to` of an origin of the tier below that the tier
    /// below no longer holds (verified).
    MissingBelow {
        /// The origin.
        origin: OriginId,
        /// First seq.
        from: u64,
        /// Last seq.
        to: u64,
    },
    /// Both hold ops `1..=seq` but their heads differ: the chains fork at or before it.
    Differs {
        /// The origin.
        origin: OriginId,
        /// The seq.
        seq: u64,
        /// Head hash here.
        here: Sha256Digest,
        /// Head hash below.
        below: Sha256Digest,
    },
    /// A side's own copy failed verification.
    Fault {
        /// Which side.
        side: Side,
        /// What was found.
        fault: ChainFault,
    },
}

impl std::fmt::Display for ManifestDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let range = |from: &u64, to: &u64| if from == to { format!("op {from}") } else { format!("ops {from}..{to}") };
        match self {
            ManifestDiff::MissingHere { origin, from, to } => {
                write!(f, "{origin}: {} held below, missing here", range(from, to))
            }
            ManifestDiff::MissingBelow { origin, from, to } => {
                write!(f, "{origin}: {} held here, missing below", range(from, to))
            }
            ManifestDiff::Differs { origin, seq, here, below } => {
                write!(f, "{origin}: the chains differ at or before op {seq} (here {here}, below {below})")
            }
            ManifestDiff::Fault { side, fault } => {
                let side = match side {
                    Side::Here => "here",
                    Side::Below => "below",
                };
                match fault {
                    ChainFault::Gap { origin, from, to } => {
                        let verb = if from == to { "is" } else { "are" };
                        write!(f, "{origin}: {side}, {} {verb} missing", range(from, to))
                    }
                    ChainFault::Fork { origin, seq } => write!(f, "{origin}: {side}, two different ops {seq}"),
                    ChainFault::Altered { origin, seq } => {
                        write!(f, "{origin}: {side}, op {seq} was altered (its content does not hash to its hash)")
                    }
                    ChainFault::BrokenLink { origin, seq } => {
                        write!(f, "{origin}: {side}, op {seq} does not link to the op before it")
                    }
                }
            }
        }
    }
}

/// Compares this tier's manifest with the manifest of the tier below it (a region's,
/// or a device's). Every origin the tier below lists is compared; an origin only this
/// tier lists counts when it is registered in `below_region` (it should be below too).
/// An empty answer means the two tiers hold exactly the same verified ops.
pub fn compare(here: &Manifest, below: &Manifest, below_region: Option<&str>) -> Vec<ManifestDiff> {
    let here_by: std::collections::BTreeMap<OriginId, &ManifestEntry> =
        here.origins.iter().map(|e| (e.origin, e)).collect();
    let below_by: std::collections::BTreeMap<OriginId, &ManifestEntry> =
        below.origins.iter().map(|e| (e.origin, e)).collect();
    let mut origins: std::collections::BTreeSet<OriginId> = below_by.keys().copied().collect();
    for e in &here.origins {
        if below_region.is_some() && e.region.as_deref() == below_region {
            origins.insert(e.origin);
        }
    }
    let mut out = Vec::new();
    for origin in origins {
        let h = here_by.get(&origin);
        let b = below_by.get(&origin);
        let (hs, hh) = h.map(|e| (e.seq, e.head_hash)).unwrap_or((0, Sha256Digest::ZERO));
        let (bs, bh) = b.map(|e| (e.seq, e.head_hash)).unwrap_or((0, Sha256Digest::ZERO));
        if hs < bs {
            out.push(ManifestDiff::MissingHere { origin, from: hs + 1, to: bs });
        } else if hs > bs {
            out.push(ManifestDiff::MissingBelow { origin, from: bs + 1, to: hs });
        } else if hh != bh {
            out.push(ManifestDiff::Differs { origin, seq: hs, here: hh, below: bh });
        }
        for (side, entry) in [(Side::Here, h), (Side::Below, b)] {
            for fault in entry.map(|e| e.faults.as_slice()).unwrap_or_default() {
                out.push(ManifestDiff::Fault { side, fault: fault.clone() });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::ids::{EntityId, StoreId};
    use crate::records::{EntityKind, EntityRef};
    use serde_json::json;

    fn chain(origin: OriginId, n: u64) -> Vec<Op> {
        let entity = EntityRef { kind: EntityKind::Visit, id: EntityId(uuid::Uuid::from_u128(7)) };
        let mut prev = Sha256Digest::ZERO;
        (1..=n)
            .map(|seq| {
                let op = Op::new(
                    origin,
                    seq,
                    Hlc { ms: 1_000 + seq, c: 0 },
                    1_000 + seq as i64,
                    entity,
                    "note",
                    json!(format!("catatan {seq}")),
                    None,
                    prev,
                );
                prev = op.hash;
                op
            })
            .collect()
    }

    fn manifest(entries: Vec<ManifestEntry>) -> Manifest {
        Manifest { store: StoreId(uuid::Uuid::from_u128(1)), origins: entries }
    }

    fn check(here: &[Op], below: &[Op], expected: &[&str]) {
        let o = |ops: &[Op]| {
            let mut origins: Vec<OriginId> = ops.iter().map(|o| o.origin).collect();
            origins.dedup();
            let facts = OriginFacts { region: Some("jateng".into()), quarantined: 0 };
            manifest(origins.into_iter().map(|origin| entry_for(origin, ops, &facts)).collect())
        };
        let got: Vec<String> = compare(&o(here), &o(below), Some("jateng")).iter().map(|d| d.to_string()).collect();
        let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn comparisons_name_exactly_what_is_missing_or_differs() {
        let a = OriginId(uuid::Uuid::from_u128(0xa));
        let full = chain(a, 6);
        let id = a.to_string();
        // The same ops: nothing to say.
        check(&full, &full, &[]);
        // The tier below is ahead: what has not arrived yet.
        check(&full[..4], &full, &[&format!("{id}: ops 5..6 held below, missing here")]);
        // An op deleted here: the verified prefix stops before it, and the gap is named.
        let mut deleted = full.clone();
        deleted.remove(2);
        check(
            &deleted,
            &full,
            &[&format!("{id}: ops 3..6 held below, missing here"), &format!("{id}: here, op 3 is missing")],
        );
        // An op altered below (its value changed, its hash kept): named as altered.
        let mut altered = full.clone();
        altered[3].value = json!("diubah");
        check(
            &full,
            &altered,
            &[
                &format!("{id}: ops 4..6 held here, missing below"),
                &format!("{id}: below, op 4 was altered (its content does not hash to its hash)"),
            ],
        );
        // Re-hashed to hide it: the next op's link gives it away.
        let mut rehashed = full.clone();
        rehashed[3].value = json!("diubah");
        rehashed[3].hash = rehashed[3].compute_hash();
        check(
            &full,
            &rehashed,
            &[
                &format!("{id}: ops 5..6 held here, missing below"),
                &format!("{id}: below, op 5 does not link to the op before it"),
            ],
        );
        // A fork at the head: same length, different content.
        let mut forked = full.clone();
        forked[5] = Op::new(
            a,
            6,
            Hlc { ms: 9_999, c: 0 },
            9_999,
            forked[5].entity,
            "note",
            json!("lain"),
            None,
            forked[4].hash,
        );
        let diff = compare(
            &manifest(vec![entry_for(a, &full, &OriginFacts::default())]),
            &manifest(vec![entry_for(a, &forked, &OriginFacts::default())]),
            None,
        );
        assert!(matches!(diff.as_slice(), [ManifestDiff::Differs { seq: 6, .. }]), "{diff:?}");
        // An origin of the region that the tier below lost entirely.
        let b = OriginId(uuid::Uuid::from_u128(0xb));
        let mut both = full.clone();
        both.extend(chain(b, 2));
        check(&both, &full, &[&format!("{b}: ops 1..2 held here, missing below")]);
    }
}
