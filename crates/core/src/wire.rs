//! Messages of the sync protocol v1 (`proto/sync-v1.md`). Every type here has a JSON
//! Schema and golden examples in `proto/`, checked by the test suite.
//!
//! Requests refuse unknown fields (a typo never passes silently); responses accept
//! them, because v1 grows only by adding fields and clients must ignore what they do
//! not know.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::chain::ChainHead;
use crate::hash::Sha256Digest;
use crate::hlc::Hlc;
use crate::ids::{OriginId, StoreId};
use crate::op::Op;
use crate::records::RejectCode;

/// The protocol version this code speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The request header naming the protocol version.
pub const PROTOCOL_HEADER: &str = "sidak-protocol";
/// The pull response header that carries the page's `cursor` ahead of its body (§5.4).
pub const CURSOR_HEADER: &str = "sidak-cursor";
/// The pull response header that carries the page's `more` (`true` or `false`) ahead of
/// its body (§5.4).
pub const MORE_HEADER: &str = "sidak-more";

/// Limits (the server enforces them; clients keep under them).
pub mod limits {
    /// Most ops in one push.
    pub const MAX_OPS_PER_PUSH: usize = 1000;
    /// Largest request body, after decompression, in bytes.
    pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
    /// Most ops in one pull page.
    pub const MAX_PULL_LIMIT: usize = 1000;
    /// Pull page size when the client does not say.
    pub const DEFAULT_PULL_LIMIT: usize = 500;
    /// Largest evidence chunk, bytes.
    pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
    /// Largest evidence file, bytes.
    pub const MAX_EVIDENCE_BYTES: u64 = 64 * 1024 * 1024;
}

/// `POST /v1/ops/push`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// Ops, any origins the caller may push for, each origin's in seq order.
    pub ops: Vec<Op>,
    /// Per origin in `ops`, its chain head after the last of its ops here, signed with
    /// the origin's key (required for an origin that registered a `public_key`).
    /// (Added in v1.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heads: Vec<crate::sign::SignedHead>,
}

/// The answer to a push: per origin, exactly what is durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// One entry per origin in the request, ordered by origin.
    pub origins: Vec<OriginPushResult>,
    /// The server's clock after the push.
    pub server_hlc: Hlc,
}

/// What a push did for one origin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OriginPushResult {
    /// The origin.
    pub origin: OriginId,
    /// The server's verified head for this origin after the push: every op up to
    /// `held.seq` is durable here (accepted or quarantined).
    pub held: ChainHead,
    /// How many ops of the request were newly stored.
    pub stored: u32,
    /// How many were already held, unchanged.
    pub duplicates: u32,
    /// Stored but not applied: they failed validation. They keep their place in the
    /// chain and never block the ops behind them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<QuarantinedOp>,
    /// Refused, not stored (chain faults); the client must not skip them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedOp>,
}

/// An op stored in quarantine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedOp {
    /// Its seq.
    pub seq: u64,
    /// Why (a record-model code).
    pub code: RejectCode,
    /// In words.
    pub message: String,
}

/// An op refused at the chain level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedOp {
    /// Its seq.
    pub seq: u64,
    /// Why.
    pub code: ChainRejectCode,
    /// In words.
    pub message: String,
}

/// Chain-level refusal codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainRejectCode {
    /// Same (origin, seq) as a held op, different content.
    Altered,
    /// Earlier ops of the origin are missing; send from `held.seq + 1`.
    Gap,
    /// `prev` does not match the held op before it.
    BrokenLink,
    /// Malformed (bad field name, float value, wrong hash, …).
    Malformed,
    /// Not processed because an earlier op of the same origin in the batch was refused.
    Blocked,
    /// A code this version does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

/// An opaque pull cursor: the store it points into and a position in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The store.
    pub store: StoreId,
    /// The last `server_seq` the client has.
    pub seq: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.store.0.simple(), self.seq)
    }
}

impl FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Cursor, String> {
        let bad = || format!("`{}` is not a pull cursor", s.chars().take(80).collect::<String>());
        let (store, seq) = s.split_once('.').ok_or_else(bad)?;
        let store = uuid::Uuid::try_parse(store).map_err(|_| bad())?;
        let seq = seq.parse::<u64>().map_err(|_| bad())?;
        Ok(Cursor { store: StoreId(store), seq })
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cursor, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Where to ask for the next pull page before reading this one's body (§5.4): the
/// cursor a successful answer's headers name ([`CURSOR_HEADER`]), when they say more
/// waits ([`MORE_HEADER`]). `None` when they say no more, or are missing or unreadable
/// (a server from before them): the client then asks a page at a time.
pub fn cursor_ahead<'h>(header: impl Fn(&str) -> Option<&'h str>) -> Option<Cursor> {
    (header(MORE_HEADER)? == "true").then(|| header(CURSOR_HEADER)?.parse().ok())?
}

/// `GET /v1/ops/pull?cursor=…&limit=…`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    /// Ops the caller may see, in `server_seq` order.
    pub ops: Vec<PulledOp>,
    /// Where to continue.
    pub cursor: Cursor,
    /// Whether more ops are waiting.
    pub more: bool,
    /// The server's clock.
    pub server_hlc: Hlc,
}

/// An op as stored by a server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PulledOp {
    /// The server's own increasing sequence.
    pub server_seq: u64,
    /// When the server received it (ms since 1970).
    pub received_at: i64,
    /// The op.
    pub op: Op,
    /// True when the server holds the op in quarantine (stored, not applied): a
    /// pulling tier that mirrors this server does not apply it either. Omitted when
    /// false. (Added in v1; older servers never send it.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantined: bool,
}

/// `POST /v1/origins/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// The origins asked about (at most 1000).
    pub origins: Vec<OriginId>,
    /// A device's own report of what it has not sent yet, for the office's sync-health
    /// view; only from an assessor asking about exactly its own origin. (Added in v1.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

/// What a device holds that its server does not yet, as the device counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// Ops not acknowledged.
    pub ops: u64,
    /// Evidence files not uploaded completely.
    pub files: u64,
}

/// What the server holds of each origin, and what its upstream holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// One entry per origin asked about.
    pub origins: Vec<OriginStatus>,
}

/// One origin's acknowledgement state on a tier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginStatus {
    /// The origin.
    pub origin: OriginId,
    /// What this tier holds.
    pub held: ChainHead,
    /// Ops of it in quarantine here.
    pub quarantined: u32,
    /// What the tier above holds, as last reported to this tier (regional servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<ChainHead>,
    /// True when an op of this origin carried a clock too far ahead of this tier's
    /// (its device's date is wrong): the stamp was kept but not adopted. Omitted when
    /// false. (Added in v1.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clock_flagged: bool,
}

/// `GET /v1/manifest`: the end-of-day manifest of a tier, per origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The store that made it.
    pub store: StoreId,
    /// One entry per origin the caller may see, ordered by origin.
    pub origins: Vec<ManifestEntry>,
}

/// One origin in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The origin.
    pub origin: OriginId,
    /// Highest seq held contiguously from 1 with every hash and link verified.
    pub seq: u64,
    /// Hash of the op at `seq`.
    pub head_hash: Sha256Digest,
    /// Ops held.
    pub ops: u64,
    /// Of which in quarantine.
    pub quarantined: u64,
    /// Visits this origin created.
    pub visits: u64,
    /// Evidence files this origin cited.
    pub evidence: u64,
    /// The region the origin is registered in, when it has one. (Added in v1.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// What verifying this tier's copy of the chain found (every op's hash recomputed,
    /// every link checked): `seq` is the verified prefix. Omitted when clean. (Added
    /// in v1.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<crate::chain::ChainFault>,
}

/// `POST /v1/evidence/{sha256}`: announce an upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceBegin {
    /// Total size in bytes.
    pub size: u64,
    /// Media type (`image/jpeg`).
    pub media_type: String,
}

/// Where an evidence upload stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceStatus {
    /// The file's SHA-256.
    pub sha256: Sha256Digest,
    /// Total size.
    pub size: u64,
    /// Bytes received so far, contiguous from 0: send the next chunk at this offset.
    pub received: u64,
    /// True once every byte arrived and the SHA-256 was verified.
    pub complete: bool,
    /// Whether the centre holds the complete file: on the centre the same as
    /// `complete`; on a regional server what the centre last acknowledged to it.
    /// Omitted by servers that do not know. (Added in v1.) A device frees a local file
    /// only when this is true and the centre holds every op citing it (§6.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub centre_complete: Option<bool>,
}

/// `GET /v1/instruments`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstrumentList {
    /// Every published instrument version.
    pub instruments: Vec<InstrumentSummary>,
}

/// One published instrument version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstrumentSummary {
    /// Id.
    pub id: String,
    /// Version.
    pub version: u32,
    /// Title.
    pub title: String,
    /// SHA-256 of the canonical document.
    pub digest: String,
}

/// `GET /v1/whoami`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    /// assessor, supervisor, admin or peer.
    pub role: String,
    /// The region the token is bound to (admins: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The assessor (assessor tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assessor: Option<String>,
    /// The server's store.
    pub store: StoreId,
    /// The server's own origin (for its corrections and registry ops).
    pub server_origin: OriginId,
    /// The protocol version.
    pub protocol: u32,
}

/// Every error answer: a stable code and a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine code (proto/sync-v1.md, "Errors").
    pub code: String,
    /// In words.
    pub message: String,
}

/// `GET /v1/assignments`: the caller's assignments, materialised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentList {
    /// Assignments, ordered by id.
    pub assignments: Vec<Assignment>,
}

/// Work given to an assessor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The assignment record.
    pub id: crate::ids::EntityId,
    /// The assessor.
    pub assessor: String,
    /// The institution.
    pub institution: RegistryItem,
    /// The unit to visit.
    pub unit: RegistryItem,
    /// The service products to observe.
    pub products: Vec<RegistryItem>,
    /// The instrument to record with.
    pub instrument: crate::instrument::InstrumentRef,
    /// `covert` or `announced`.
    pub mode: String,
    /// Due date (ms since 1970), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<i64>,
    /// `active` or `cancelled`.
    pub status: String,
}

/// A registry record as shown in assignments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryItem {
    /// The record id.
    pub id: crate::ids::EntityId,
    /// Its code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// Its type (institutions and units).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Its region (institutions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Stable error codes with their HTTP statuses (proto/sync-v1.md, "Errors").
pub const ERROR_CODES: &[(&str, u16)] = &[
    ("malformed_json", 400),
    ("bad_query", 400),
    ("bad_cursor", 400),
    ("unsupported_protocol", 400),
    ("unauthorized", 401),
    ("role_forbidden", 403),
    ("scope_forbidden", 403),
    ("origin_forbidden", 403),
    ("not_found", 404),
    ("method_not_allowed", 405),
    ("reset_required", 409),
    ("offset_mismatch", 409),
    ("size_mismatch", 409),
    ("body_too_large", 413),
    ("too_many_ops", 413),
    ("evidence_too_large", 413),
    ("unsupported_media_type", 415),
    ("invalid_body", 422),
    ("evidence_mismatch", 422),
    ("invalid_correction", 422),
    ("too_many_failures", 429),
    ("internal", 500),
    ("shutting_down", 503),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_asked_ahead_only_where_its_headers_say_more_waits_and_where() {
        let cursor = "018f93f10f80717cabda114548e3ff2f.14";
        let headers = |more: Option<&'static str>, at: Option<&'static str>| {
            move |name: &str| match name {
                MORE_HEADER => more,
                CURSOR_HEADER => at,
                _ => None,
            }
        };
        assert_eq!(cursor_ahead(headers(Some("true"), Some(cursor))), Some(cursor.parse().unwrap()));
        assert_eq!(cursor_ahead(headers(Some("false"), Some(cursor))), None, "no more");
        assert_eq!(cursor_ahead(headers(None, Some(cursor))), None, "an older server");
        assert_eq!(cursor_ahead(headers(Some("true"), None)), None);
        assert_eq!(cursor_ahead(headers(Some("true"), Some("not-a-cursor"))), None);
    }
}
