//! What an assessor does, offline: the field client's API. A mobile app calls these
//! functions; the `sidak-field` CLI is one such caller. Every action is one
//! transaction that writes the change and its ops together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;
use serde_json::{json, Value};
use sidak_core::hash::Sha256Digest;
use sidak_core::ids::EntityId;
use sidak_core::instrument::{AnswerKind, Indicator, Instrument, InstrumentRef, Level, Location, RespondentKind};
use sidak_core::records::{is_code, EntityKind, EntityRef, VisitMode, ANSWER_PREFIX};
use sidak_core::scoring::{
    score_institution, AnswerInput, InstitutionInput, InstitutionResult, ProductInput, RespondentInput, UnitInput,
};
use sidak_core::wire::{Assignment, AssignmentList, RegistryItem};

use crate::blobs::Blobs;
use crate::error::{db, FieldError};
use crate::keys::{self, DataKey, KdfParams, Passphrase};
use crate::log::{self, append, require_identity, Identity};
use crate::store::{is_plain_sqlite, set_meta, Store, DB_FILE};

/// A clock: milliseconds since 1970.
pub type Clock = Box<dyn Fn() -> u64 + Send>;

/// The system clock.
pub fn system_clock() -> Clock {
    Box::new(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    })
}

/// The field client over one data directory, unlocked by the assessor's passphrase.
pub struct Field {
    pub(crate) store: Store,
    pub(crate) blobs: Blobs,
    pub(crate) clock: Clock,
    key: DataKey,
    kdf: KdfParams,
}

/// What `visit start` needs.
#[derive(Clone, Debug)]
pub struct StartVisit {
    /// The assignment (id or the start of it).
    pub assignment: String,
    /// The product (code or id); may be omitted when the assignment has one product.
    pub product: Option<String>,
    /// Covert or announced; defaults to the assignment's mode.
    pub mode: Option<VisitMode>,
    /// Where the service was delivered.
    pub location: Location,
}

/// A visit as the device sees it.
#[derive(Clone, Debug, Serialize)]
pub struct VisitView {
    /// Its id.
    pub id: EntityId,
    /// `draft` or `submitted`.
    pub status: String,
    /// `covert` or `announced`.
    pub mode: String,
    /// Where the service was delivered.
    pub location: String,
    /// The instrument it is recorded with.
    pub instrument: InstrumentRef,
    /// The assignment it belongs to.
    pub assignment: Option<EntityId>,
    /// Institution, unit and product (names are shown only when revealed).
    pub institution: RegistryItem,
    /// The unit.
    pub unit: RegistryItem,
    /// The product.
    pub product: RegistryItem,
    /// Started, ms since 1970.
    pub started_at: Option<i64>,
    /// Finished, ms since 1970.
    pub finished_at: Option<i64>,
    /// Answers by indicator id.
    pub answers: BTreeMap<String, Value>,
    /// Questionnaires taken in this visit.
    pub respondents: Vec<RespondentView>,
    /// Notes.
    pub notes: Vec<NoteView>,
    /// Evidence cited.
    pub evidence: Vec<EvidenceView>,
    /// Fields changed after the visit was submitted.
    pub post_submission_edits: Vec<String>,
}

/// A questionnaire.
#[derive(Clone, Debug, Serialize)]
pub struct RespondentView {
    /// Its id.
    pub id: EntityId,
    /// Who answered.
    pub kind: String,
    /// Their role, if noted.
    pub role: Option<String>,
    /// Answers by indicator id.
    pub answers: BTreeMap<String, Value>,
}

/// A note.
#[derive(Clone, Debug, Serialize)]
pub struct NoteView {
    /// Its id.
    pub id: EntityId,
    /// The indicator it is about, if any.
    pub indicator: Option<String>,
    /// The text.
    pub text: String,
}

/// An evidence record.
#[derive(Clone, Debug, Serialize)]
pub struct EvidenceView {
    /// Its id.
    pub id: EntityId,
    /// The file's SHA-256.
    pub sha256: String,
    /// Media type.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// The indicator it supports, if any.
    pub indicator: Option<String>,
    /// Whether the file is still on this device.
    pub on_device: bool,
}

/// One line of `visit list`.
#[derive(Clone, Debug, Serialize)]
pub struct VisitSummary {
    /// Its id.
    pub id: EntityId,
    /// `draft` or `submitted`.
    pub status: String,
    /// `covert` or `announced`.
    pub mode: String,
    /// Started, ms since 1970.
    pub started_at: Option<i64>,
    /// How many answers.
    pub answers: usize,
    /// Institution and unit names (only when revealed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

/// What `sidak-field status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct StatusView {
    /// The device's origin.
    pub origin: String,
    /// The assessor.
    pub assessor: String,
    /// The region.
    pub region: String,
    /// The chain head: ops written and the hash of the last.
    pub head_seq: u64,
    /// Hash of the last op.
    pub head_hash: String,
    /// Ops the server has acknowledged.
    pub server_acked: u64,
    /// Ops the tier above the server has acknowledged, when known.
    pub upstream_acked: Option<u64>,
    /// Ops not yet held by the server.
    pub unsent_ops: u64,
    /// Evidence files not yet fully uploaded.
    pub unsent_files: u64,
    /// Of which damaged on this device (no longer matching their digest): not sent.
    pub damaged_files: u64,
    /// When the last sync finished completely (ms since 1970).
    pub last_sync: Option<i64>,
    /// What the last sync attempt said.
    pub last_sync_result: Option<String>,
    /// Visits by status.
    pub visits: BTreeMap<String, u64>,
    /// Per visit: whether the server and the centre hold all of it.
    pub visit_acks: Vec<VisitAck>,
}

/// Where a visit's ops are held.
#[derive(Clone, Debug, Serialize)]
pub struct VisitAck {
    /// The visit.
    pub id: EntityId,
    /// Held by the server synced with.
    pub server: bool,
    /// Held by the centre (through the region, or directly).
    pub centre: bool,
}

fn new_id() -> EntityId {
    EntityId(uuid::Uuid::now_v7())
}

impl Field {
    /// Opens the field client on `dir` with the assessor's passphrase; an empty or
    /// missing directory becomes a new store, encrypted under that passphrase.
    pub fn open(dir: &Path, passphrase: &Passphrase) -> Result<Field, FieldError> {
        Self::open_with_clock(dir, passphrase, system_clock())
    }

    /// Opens the field client with another clock (tests, devices with a wrong clock).
    pub fn open_with_clock(dir: &Path, passphrase: &Passphrase, clock: Clock) -> Result<Field, FieldError> {
        Self::open_or_create(dir, passphrase, KdfParams::default(), clock)
    }

    /// Opens the store in `dir`, or creates it with Argon2id at cost `kdf` (the cost of
    /// an existing store is the one its header holds).
    pub fn open_or_create(
        dir: &Path,
        passphrase: &Passphrase,
        kdf: KdfParams,
        clock: Clock,
    ) -> Result<Field, FieldError> {
        if keys::exists(dir) {
            return Self::unlock(dir, passphrase, clock);
        }
        let db = dir.join(DB_FILE);
        if db.exists() {
            return Err(if is_plain_sqlite(&db) {
                FieldError::Unencrypted { path: db }
            } else {
                FieldError::Corrupt(format!("{} has lost its key header {}", db.display(), keys::HEADER_FILE))
            });
        }
        let key = keys::create(dir, passphrase, &kdf)?;
        Self::with_key(dir, key, kdf, clock)
    }

    /// Opens the store in `dir`; never creates one ([`FieldError::NotInitialised`]
    /// when there is none).
    pub fn open_existing(dir: &Path, passphrase: &Passphrase) -> Result<Field, FieldError> {
        if !Self::exists(dir) {
            return Err(FieldError::NotInitialised);
        }
        Self::open_or_create(dir, passphrase, KdfParams::default(), system_clock())
    }

    /// Whether `dir` holds a store (encrypted or from before encryption).
    pub fn exists(dir: &Path) -> bool {
        keys::exists(dir) || dir.join(DB_FILE).exists()
    }

    fn unlock(dir: &Path, passphrase: &Passphrase, clock: Clock) -> Result<Field, FieldError> {
        let (key, kdf) = keys::unlock(dir, passphrase)?;
        keys::remove_stale(dir)?;
        Self::with_key(dir, key, kdf, clock)
    }

    fn with_key(dir: &Path, key: DataKey, kdf: KdfParams, clock: Clock) -> Result<Field, FieldError> {
        let store = Store::open(dir, &key.db_key())?;
        let blobs = Blobs::new(dir, key.evidence_keys());
        Ok(Field { store, blobs, clock, key, kdf })
    }

    /// Replaces the passphrase. Nothing is re-encrypted: the key everything is
    /// encrypted with is wrapped again under the new passphrase, and the new header
    /// replaces the old in one atomic rename, so a crash leaves exactly one of the two
    /// passphrases working. The Argon2id cost stays the store's.
    pub fn change_passphrase(&mut self, new: &Passphrase) -> Result<(), FieldError> {
        keys::rewrap(self.dir(), &self.key, new, &self.kdf)
    }

    /// Writes the WAL back into the database file (for measuring the store's size).
    pub fn checkpoint(&mut self) -> Result<(), FieldError> {
        self.store.checkpoint()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.store.dir()
    }

    /// The content-addressed evidence store.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    pub(crate) fn now(&self) -> u64 {
        (self.clock)()
    }

    /// Who this device is, if set up.
    pub fn identity(&mut self) -> Result<Option<Identity>, FieldError> {
        self.store.read(|tx, _| log::identity(tx))
    }

    /// Sets the device up, or reports how it is set up when it already is with the
    /// same assessor and region (so `init` can be repeated safely).
    pub fn identity_or_init(&mut self, assessor: &str, region: &str) -> Result<Identity, FieldError> {
        match self.identity()? {
            Some(me) if me.assessor == assessor && me.region == region => Ok(me),
            _ => self.init(assessor, region),
        }
    }

    /// Sets the device up: a new origin whose first ops bind it to its assessor and region.
    pub fn init(&mut self, assessor: &str, region: &str) -> Result<Identity, FieldError> {
        for (what, code) in [("assessor", assessor), ("region", region)] {
            if !is_code(code) {
                return Err(FieldError::Invalid(format!(
                    "{what} `{code}` is not a code (lowercase letters, digits, `-`, `_`, `.`)"
                )));
            }
        }
        let now = self.now();
        let dir = self.dir().to_owned();
        self.store.write(|tx, instruments| {
            if let Some(me) = log::identity(tx)? {
                return Err(FieldError::AlreadyInitialised {
                    origin: me.origin.to_string(),
                    assessor: me.assessor,
                    dir,
                });
            }
            let me = Identity {
                origin: sidak_core::ids::OriginId(uuid::Uuid::now_v7()),
                assessor: assessor.to_owned(),
                region: region.to_owned(),
            };
            set_meta(tx, "origin", &me.origin.to_string()).map_err(db)?;
            set_meta(tx, "assessor", assessor).map_err(db)?;
            set_meta(tx, "region", region).map_err(db)?;
            set_meta(tx, "created_at", &now.to_string()).map_err(db)?;
            let device = EntityRef { kind: EntityKind::Device, id: EntityId(me.origin.0) };
            append(tx, &me, instruments, now, device, "assessor", json!(assessor))?;
            append(tx, &me, instruments, now, device, "region", json!(region))?;
            append(tx, &me, instruments, now, device, "role", json!("device"))?;
            // The device's signing key: its public half is registered with the origin,
            // its secret never leaves this store (proto/sync-v1.md §3.6).
            let keys = sidak_core::sign::KeyPair::from_seed(&rand::random::<[u8; 32]>());
            set_meta(tx, "signing_seed", &hex::encode(keys.seed())).map_err(db)?;
            append(tx, &me, instruments, now, device, "public_key", json!(keys.public().to_hex()))?;
            Ok(me)
        })
    }

    /// This device's public key, which an admin may issue its token for
    /// (`sidak-server token create --device-key`).
    pub fn device_key(&mut self) -> Result<sidak_core::sign::PublicKey, FieldError> {
        Ok(self.signing_keys()?.public())
    }

    /// This device's signing keys.
    pub(crate) fn signing_keys(&mut self) -> Result<sidak_core::sign::KeyPair, FieldError> {
        let seed = self.store.read(|tx, _| crate::store::meta(tx, "signing_seed").map_err(db))?;
        let seed = seed.ok_or_else(|| FieldError::Corrupt("this device has no signing key".into()))?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&seed, &mut bytes)
            .map_err(|_| FieldError::Corrupt("the signing key is damaged".into()))?;
        Ok(sidak_core::sign::KeyPair::from_seed(&bytes))
    }

    /// Stores an instrument on the device (from a file now, from a pull later).
    pub fn load_instrument(&mut self, instrument: &Instrument) -> Result<bool, FieldError> {
        let added = self.store.write(|tx, _| {
            let held: Option<String> = tx
                .query_row(
                    "SELECT digest FROM instruments WHERE id = ?1 AND version = ?2",
                    params![instrument.reference.id, instrument.reference.version],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            match held {
                Some(d) if d == instrument.digest => Ok(false),
                Some(_) => Err(FieldError::Invalid(format!(
                    "this device holds a different {} already; a published version never changes",
                    instrument.reference
                ))),
                None => {
                    tx.execute(
                        "INSERT INTO instruments (id, version, digest, document) VALUES (?1, ?2, ?3, ?4)",
                        params![
                            instrument.reference.id,
                            instrument.reference.version,
                            instrument.digest,
                            instrument.document.to_string()
                        ],
                    )
                    .map_err(db)?;
                    Ok(true)
                }
            }
        })?;
        if added {
            self.store.reload_instruments()?;
        }
        Ok(added)
    }

    /// The instruments on the device.
    pub fn instruments(&self) -> Vec<&Instrument> {
        self.store.instruments().values().collect()
    }

    /// Replaces the assignments (and the registry records they name) with `list`.
    pub fn load_assignments(&mut self, list: &AssignmentList) -> Result<usize, FieldError> {
        self.store.write(|tx, _| {
            let me = require_identity(tx)?;
            for a in &list.assignments {
                if a.assessor != me.assessor {
                    return Err(FieldError::Invalid(format!(
                        "assignment {} is for assessor `{}`, not `{}`",
                        a.id, a.assessor, me.assessor
                    )));
                }
            }
            tx.execute("DELETE FROM assignments", []).map_err(db)?;
            for a in &list.assignments {
                let doc = serde_json::to_string(a).expect("assignment serialises");
                tx.execute("INSERT INTO assignments (id, document) VALUES (?1, ?2)", params![a.id.to_string(), doc])
                    .map_err(db)?;
                upsert_registry(tx, EntityKind::Institution, &a.institution)?;
                upsert_registry(tx, EntityKind::Unit, &a.unit)?;
                for p in &a.products {
                    upsert_registry(tx, EntityKind::Product, p)?;
                }
            }
            Ok(list.assignments.len())
        })
    }

    /// The assignments on the device.
    pub fn assignments(&mut self) -> Result<Vec<Assignment>, FieldError> {
        self.store.read(|tx, _| all_assignments(tx))
    }

    /// Starts a visit; returns its id.
    pub fn start_visit(&mut self, start: &StartVisit) -> Result<EntityId, FieldError> {
        let now = self.now();
        self.store.write(|tx, instruments| {
            let me = require_identity(tx)?;
            let assignment = find_assignment(tx, &start.assignment)?;
            if assignment.status != "active" {
                return Err(FieldError::Invalid(format!("assignment {} is {}", assignment.id, assignment.status)));
            }
            if !instruments.contains_key(&assignment.instrument) {
                return Err(FieldError::UnknownInstrument {
                    name: assignment.instrument.to_string(),
                    known: instruments.keys().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                });
            }
            let product = match (&start.product, assignment.products.as_slice()) {
                (None, [only]) => only.clone(),
                (None, _) => {
                    let codes: Vec<_> = assignment.products.iter().map(|p| p.code.as_str()).collect();
                    return Err(FieldError::Invalid(format!(
                        "say which product with --product (one of: {})",
                        codes.join(", ")
                    )));
                }
                (Some(name), products) => products
                    .iter()
                    .find(|p| &p.code == name || p.id.to_string().starts_with(name.as_str()))
                    .cloned()
                    .ok_or_else(|| FieldError::NotFound { what: "product of this assignment", name: name.clone() })?,
            };
            let mode = match start.mode {
                Some(VisitMode::Covert) => "covert",
                Some(VisitMode::Announced) => "announced",
                None => assignment.mode.as_str(),
            };
            let visit = EntityRef { kind: EntityKind::Visit, id: new_id() };
            let fields = [
                ("instrument", serde_json::to_value(&assignment.instrument).expect("serialises")),
                ("assignment", json!(assignment.id.to_string())),
                ("institution", json!(assignment.institution.id.to_string())),
                ("unit", json!(assignment.unit.id.to_string())),
                ("product", json!(product.id.to_string())),
                ("mode", json!(mode)),
                ("location", json!(start.location.name())),
                ("started_at", json!(now)),
                ("status", json!("draft")),
            ];
            for (field, value) in fields {
                append(tx, &me, instruments, now, visit, field, value)?;
            }
            Ok(visit.id)
        })
    }

    /// Records an answer given as text (`yes`, `2`, `na`, an option id, a number).
    pub fn answer(&mut self, visit: &str, indicator: &str, text: &str) -> Result<AnswerOutcome, FieldError> {
        let reference = self.store.read(|tx, instruments| {
            let id = find_entity(tx, EntityKind::Visit, visit)?;
            visit_instrument(tx, instruments, id)
        })?;
        let instrument = &self.store.instruments()[&reference];
        let ind = instrument
            .indicator(indicator)
            .ok_or_else(|| FieldError::Rejected(unknown_indicator(instrument, indicator)))?;
        let value = parse_cli_answer(ind, text)?;
        self.answer_value(visit, indicator, value)
    }

    /// Records an answer given as JSON.
    pub fn answer_value(&mut self, visit: &str, indicator: &str, value: Value) -> Result<AnswerOutcome, FieldError> {
        let now = self.now();
        self.store.write(|tx, instruments| {
            let me = require_identity(tx)?;
            let id = find_entity(tx, EntityKind::Visit, visit)?;
            let post_submission = field_value(tx, id, "status")?.as_ref().and_then(Value::as_str) == Some("submitted");
            let op = append(
                tx,
                &me,
                instruments,
                now,
                EntityRef { kind: EntityKind::Visit, id },
                &format!("{ANSWER_PREFIX}{indicator}"),
                value,
            )?;
            Ok(AnswerOutcome { visit: id, seq: op.seq, post_submission })
        })
    }

    /// Adds a note to a visit.
    pub fn note(&mut self, visit: &str, text: &str, indicator: Option<&str>) -> Result<EntityId, FieldError> {
        let now = self.now();
        self.store.write(|tx, instruments| {
            let me = require_identity(tx)?;
            let visit = find_entity(tx, EntityKind::Visit, visit)?;
            let note = EntityRef { kind: EntityKind::Note, id: new_id() };
            append(tx, &me, instruments, now, note, "visit", json!(visit.to_string()))?;
            if let Some(ind) = indicator {
                append(tx, &me, instruments, now, note, "indicator", json!(ind))?;
            }
            append(tx, &me, instruments, now, note, "text", json!(text))?;
            append(tx, &me, instruments, now, note, "created_at", json!(now))?;
            Ok(note.id)
        })
    }

    /// Attaches an evidence file: streamed into the content-addressed store, checked,
    /// then cited by an evidence record.
    pub fn attach(
        &mut self,
        visit: &str,
        file: &Path,
        indicator: Option<&str>,
        media_type: Option<&str>,
    ) -> Result<(EntityId, Sha256Digest, u64), FieldError> {
        let visit_id = self.store.read(|tx, _| find_entity(tx, EntityKind::Visit, visit))?;
        let media_type = media_type.map(str::to_owned).unwrap_or_else(|| guess_media_type(file));
        let (digest, size) = self.blobs.put_file(file)?;
        let now = self.now();
        self.store.write(|tx, instruments| {
            let me = require_identity(tx)?;
            tx.execute(
                "INSERT INTO blobs (sha256, size, media_type, added_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![digest.to_hex(), size as i64, media_type, now as i64],
            )
            .map_err(db)?;
            tx.execute("INSERT INTO uploads (sha256) VALUES (?1) ON CONFLICT DO NOTHING", [digest.to_hex()])
                .map_err(db)?;
            let evidence = EntityRef { kind: EntityKind::Evidence, id: new_id() };
            append(tx, &me, instruments, now, evidence, "visit", json!(visit_id.to_string()))?;
            if let Some(ind) = indicator {
                append(tx, &me, instruments, now, evidence, "indicator", json!(ind))?;
            }
            append(tx, &me, instruments, now, evidence, "sha256", json!(digest.to_hex()))?;
            append(tx, &me, instruments, now, evidence, "media_type", json!(media_type))?;
            append(tx, &me, instruments, now, evidence, "size", json!(size))?;
            append(tx, &me, instruments, now, evidence, "captured_at", json!(now))?;
            Ok((evidence.id, digest, size))
        })
    }

    /// Starts a respondent questionnaire in a visit.
    pub fn add_respondent(
        &mut self,
        visit: &str,
        kind: RespondentKind,
        role: Option<&str>,
    ) -> Result<EntityId, FieldError> {
        let now = self.now();
        self.store.write(|tx, instruments| {
            let me = require_identity(tx)?;
            let visit = find_entity(tx, EntityKind::Visit, visit)?;
            let instrument = visit_instrument(tx, instruments, visit)?;
            if instruments[&instrument].respondent_rule(kind).is_none() {
                return Err(FieldError::Invalid(format!("{instrument} has no `{}` questionnaire", kind.name())));
            }
            let respondent = EntityRef { kind: EntityKind::Respondent, id: new_id() };
            append(tx, &me, instruments, now, respondent, "visit", json!(visit.to_string()))?;
            append(tx, &me, instruments, now, respondent, "kind", json!(kind.name()))?;
            if let Some(role) = role {
                append(tx, &me, instruments, now, respondent, "role", json!(role))?;
            }
            Ok(respondent.id)
        })
    }

    /// Records a respondent's answer given as text.
    pub fn answer_respondent(
        &mut self,
        respondent: &str,
        indicator: &str,
        text: &str,
    ) -> Result<AnswerOutcome, FieldError> {
        let (visit, instrument) = self.store.read(|tx, instruments| {
            let id = find_entity(tx, EntityKind::Respondent, respondent)?;
            let visit = respondent_visit(tx, id)?;
            Ok((visit, visit_instrument(tx, instruments, visit)?))
        })?;
        let value = {
            let instrument = &self.store.instruments()[&instrument];
            let ind = instrument
                .indicator(indicator)
                .ok_or_else(|| FieldError::Rejected(unknown_indicator(instrument, indicator)))?;
            parse_cli_answer(ind, text)?
        };
        let now = self.now();
        self.store.write(|tx, instruments| {
            let me = require_identity(tx)?;
            let id = find_entity(tx, EntityKind::Respondent, respondent)?;
            let post_submission =
                field_value(tx, visit, "status")?.as_ref().and_then(Value::as_str) == Some("submitted");
            let op = append(
                tx,
                &me,
                instruments,
                now,
                EntityRef { kind: EntityKind::Respondent, id },
                &format!("{ANSWER_PREFIX}{indicator}"),
                value,
            )?;
            Ok(AnswerOutcome { visit, seq: op.seq, post_submission })
        })
    }

    /// Submits a visit. Later edits are kept as post-submission edits.
    pub fn finish(&mut self, visit: &str) -> Result<EntityId, FieldError> {
        let now = self.now();
        self.store.write(|tx, instruments| {
            let me = require_identity(tx)?;
            let id = find_entity(tx, EntityKind::Visit, visit)?;
            if field_value(tx, id, "status")?.as_ref().and_then(Value::as_str) == Some("submitted") {
                return Err(FieldError::Invalid(format!("visit {} is already submitted", short(id))));
            }
            let entity = EntityRef { kind: EntityKind::Visit, id };
            append(tx, &me, instruments, now, entity, "finished_at", json!(now))?;
            append(tx, &me, instruments, now, entity, "status", json!("submitted"))?;
            Ok(id)
        })
    }

    /// One visit with everything recorded in it.
    pub fn visit(&mut self, visit: &str) -> Result<VisitView, FieldError> {
        self.store.read(|tx, _| {
            let id = find_entity(tx, EntityKind::Visit, visit)?;
            load_visit(tx, id)
        })
    }

    /// A visit's provisional result from the core scoring model: the institution,
    /// unit and product it concerns, scored with this visit's answers alone.
    pub fn provisional_score(&mut self, view: &VisitView) -> Result<InstitutionResult, FieldError> {
        let instrument = self
            .store
            .instruments()
            .get(&view.instrument)
            .ok_or_else(|| FieldError::UnknownInstrument { name: view.instrument.to_string(), known: String::new() })?;
        let evidence: BTreeMap<&str, Vec<String>> = view.evidence.iter().fold(BTreeMap::new(), |mut m, e| {
            if let Some(ind) = &e.indicator {
                m.entry(ind.as_str()).or_default().push(e.sha256.clone());
            }
            m
        });
        let answer =
            |id: &str, v: &Value| AnswerInput::with_evidence(v.clone(), evidence.get(id).cloned().unwrap_or_default());
        let at = |level: Level| -> BTreeMap<String, AnswerInput> {
            view.answers
                .iter()
                .filter(|(id, _)| instrument.indicator(id).is_some_and(|i| i.level == level))
                .map(|(id, v)| (id.clone(), answer(id, v)))
                .collect()
        };
        let respondents_at = |level: Level| -> Vec<RespondentInput> {
            view.respondents
                .iter()
                .filter_map(|r| {
                    let kind = RespondentKind::from_name(&r.kind)?;
                    (instrument.respondent_rule(kind)?.level == level).then(|| RespondentInput {
                        id: r.id.to_string(),
                        kind,
                        answers: r.answers.iter().map(|(id, v)| (id.clone(), answer(id, v))).collect(),
                    })
                })
                .collect()
        };
        let location = Location::from_name(&view.location).unwrap_or(Location::OwnOffice);
        let input = InstitutionInput {
            id: view.institution.code.clone(),
            name: view.institution.name.clone(),
            kind: view.institution.kind.clone().unwrap_or_else(|| "kota".into()),
            region: view.institution.region.clone(),
            answers: at(Level::Institution),
            respondents: respondents_at(Level::Institution),
            deductions: Vec::new(),
            units: vec![UnitInput {
                id: view.unit.code.clone(),
                name: view.unit.name.clone(),
                unit_type: view.unit.kind.clone().unwrap_or_default(),
                answers: at(Level::Unit),
                respondents: respondents_at(Level::Unit),
                deductions: Vec::new(),
                products: vec![ProductInput {
                    id: view.product.code.clone(),
                    name: view.product.name.clone(),
                    location,
                    answers: at(Level::Product),
                }],
            }],
        };
        Ok(score_institution(instrument, &input)?)
    }

    /// Every visit on the device, newest first.
    pub fn visits(&mut self, reveal: bool) -> Result<Vec<VisitSummary>, FieldError> {
        self.store.read(|tx, _| {
            let ids: Vec<String> = {
                let mut stmt = tx.prepare("SELECT DISTINCT entity FROM fields WHERE kind = 'visit'").map_err(db)?;
                let rows = stmt.query_map([], |r| r.get(0)).map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)?
            };
            let mut out = Vec::new();
            for id in ids {
                let id: EntityId = id.parse().map_err(|_| FieldError::Corrupt("bad visit id".into()))?;
                // A visit of another device whose first ops are not here (yet) is skipped.
                if field_value(tx, id, "instrument")?.is_none() {
                    continue;
                }
                let v = load_visit(tx, id)?;
                out.push(VisitSummary {
                    id,
                    status: v.status.clone(),
                    mode: v.mode.clone(),
                    started_at: v.started_at,
                    answers: v.answers.len(),
                    place: reveal.then(|| format!("{} / {}", v.institution.name, v.unit.name)),
                });
            }
            out.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
            Ok(out)
        })
    }

    /// The device's status: what is unsent, when it last synced, where its visits are held.
    pub fn status(&mut self) -> Result<StatusView, FieldError> {
        self.store.read(|tx, _| {
            let me = require_identity(tx)?;
            let (head_seq, head_hash) = log::head(tx, me.origin)?;
            let (server_acked, upstream_acked): (i64, Option<i64>) = tx
                .query_row(
                    "SELECT server_seq, upstream_seq FROM acks WHERE origin = ?1",
                    [me.origin.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?
                .unwrap_or((0, None));
            let (unsent_files, damaged_files): (i64, i64) = tx
                .query_row("SELECT COUNT(*), COUNT(failed) FROM uploads WHERE complete = 0", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(db)?;
            let sync_meta = |key: &str| -> Result<Option<String>, FieldError> {
                tx.query_row("SELECT value FROM sync_meta WHERE key = ?1", [key], |r| r.get(0)).optional().map_err(db)
            };
            let mut visits = BTreeMap::new();
            let mut stmt = tx
                .prepare("SELECT value, COUNT(*) FROM fields WHERE kind = 'visit' AND field = 'status' GROUP BY value")
                .map_err(db)?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(db)?;
            for row in rows {
                let (status, n) = row.map_err(db)?;
                visits.insert(serde_json::from_str::<String>(&status).unwrap_or(status), n as u64);
            }
            drop(stmt);
            let visit_acks = visit_acks(tx, me.origin, server_acked as u64, upstream_acked.map(|u| u as u64))?;
            Ok(StatusView {
                origin: me.origin.to_string(),
                assessor: me.assessor,
                region: me.region,
                head_seq,
                head_hash: head_hash.to_hex(),
                server_acked: server_acked as u64,
                upstream_acked: upstream_acked.map(|u| u as u64),
                unsent_ops: head_seq.saturating_sub(server_acked as u64),
                unsent_files: unsent_files as u64,
                damaged_files: damaged_files as u64,
                last_sync: sync_meta("last_sync_at")?.and_then(|v| v.parse().ok()),
                last_sync_result: sync_meta("last_sync_result")?,
                visits,
                visit_acks,
            })
        })
    }

    /// Every op held, for verification (tests, audits).
    pub fn all_ops(&mut self) -> Result<Vec<sidak_core::op::Op>, FieldError> {
        self.store.read(|tx, _| log::read_ops(tx, None, 0, u64::MAX))
    }

    /// This device's end-of-day manifest: its own chain, verified, in the format a
    /// server's `GET /v1/manifest` uses, for `sidak-server manifest compare`.
    pub fn manifest(&mut self) -> Result<sidak_core::wire::Manifest, FieldError> {
        let me = self.store.read(|tx, _| require_identity(tx))?;
        let ops = self.store.read(|tx, _| log::read_ops(tx, Some(me.origin), 0, u64::MAX))?;
        let facts = sidak_core::manifest::OriginFacts { region: Some(me.region.clone()), quarantined: 0 };
        Ok(sidak_core::wire::Manifest {
            store: sidak_core::ids::StoreId(me.origin.0),
            origins: vec![sidak_core::manifest::entry_for(me.origin, &ops, &facts)],
        })
    }

    /// Frees the local copy of every evidence file that the centre holds complete and
    /// whose citing records the centre holds too (as last learnt by `sync`); keeps
    /// every other file. The records stay; only the photo bytes leave the device.
    pub fn prune(&mut self) -> Result<PruneReport, FieldError> {
        let me = self.store.read(|tx, _| require_identity(tx))?;
        let (free, kept) = self.store.read(|tx, _| {
            let centre: i64 = tx
                .query_row("SELECT upstream_seq FROM acks WHERE origin = ?1", [me.origin.to_string()], |r| {
                    r.get::<_, Option<i64>>(0)
                })
                .optional()
                .map_err(db)?
                .flatten()
                .unwrap_or(0);
            let mut stmt = tx
                .prepare(
                    "SELECT u.sha256, b.size, u.centre_complete,
                        (SELECT MAX(o.seq) FROM ops o WHERE o.origin = ?1 AND o.entity IN
                            (SELECT entity FROM fields WHERE kind = 'evidence' AND field = 'sha256' AND value = json_quote(u.sha256)))
                     FROM uploads u JOIN blobs b ON b.sha256 = u.sha256 WHERE u.pruned = 0",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([me.origin.to_string()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<i64>>(3)?))
                })
                .map_err(db)?;
            let (mut free, mut kept) = (Vec::new(), 0u64);
            for row in rows {
                let (sha, size, centre_complete, cited_up_to) = row.map_err(db)?;
                if centre_complete == 1 && cited_up_to.unwrap_or(i64::MAX) <= centre {
                    free.push((sha, size as u64));
                } else {
                    kept += 1;
                }
            }
            Ok((free, kept))
        })?;
        let mut report = PruneReport { freed: 0, bytes: 0, kept };
        for (sha, size) in free {
            let digest: Sha256Digest = sha.parse().map_err(|_| FieldError::Corrupt(format!("bad digest {sha}")))?;
            // Marked first, deleted after: a crash in between leaves a stray file,
            // never a record that claims a file it no longer has.
            self.store.write(|tx, _| {
                tx.execute("UPDATE uploads SET pruned = 1 WHERE sha256 = ?1", [&sha]).map_err(db)?;
                Ok(())
            })?;
            self.blobs.remove(&digest)?;
            report.freed += 1;
            report.bytes += size;
        }
        Ok(report)
    }
}

/// What `prune` did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PruneReport {
    /// Files freed.
    pub freed: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files kept because the centre does not hold them (or their records) yet.
    pub kept: u64,
}

/// The result of recording an answer.
#[derive(Clone, Debug, Serialize)]
pub struct AnswerOutcome {
    /// The visit.
    pub visit: EntityId,
    /// The op's seq in this device's log.
    pub seq: u64,
    /// True when the visit was already submitted: the edit is flagged for supervisors.
    pub post_submission: bool,
}

/// The last eight characters of an id, as shown to people. (The first ones of a UUID
/// v7 are its creation time, shared by everything made in the same minute.)
pub fn short(id: EntityId) -> String {
    let s = id.to_string();
    s[s.len() - 8..].to_owned()
}

fn unknown_indicator(instrument: &Instrument, id: &str) -> sidak_core::records::Rejection {
    sidak_core::records::Rejection {
        code: sidak_core::records::RejectCode::BadAnswer,
        message: format!("{} has no indicator `{id}`", instrument.reference),
    }
}

/// Reads an answer typed on the command line, by the indicator's kind.
pub fn parse_cli_answer(indicator: &Indicator, text: &str) -> Result<Value, FieldError> {
    let t = text.trim();
    if matches!(t.to_ascii_lowercase().as_str(), "na" | "n/a" | "tidak-berlaku") {
        return Ok(json!({"na": true}));
    }
    let bad =
        |expected: &str| FieldError::Invalid(format!("indicator `{}` takes {expected}, not `{text}`", indicator.id));
    Ok(match &indicator.answer {
        AnswerKind::YesNo => match t.to_ascii_lowercase().as_str() {
            "yes" | "y" | "ya" | "true" => json!(true),
            "no" | "n" | "tidak" | "false" => json!(false),
            _ => return Err(bad("yes or no")),
        },
        AnswerKind::Scale { min, max, .. } => {
            json!(t.parse::<i64>().map_err(|_| bad(&format!("a whole number from {min} to {max}")))?)
        }
        AnswerKind::Count { .. } => json!(t.parse::<i64>().map_err(|_| bad("a whole number"))?),
        AnswerKind::Number { .. } => {
            t.parse::<sidak_core::num::Exact>().map_err(|_| bad("a number such as 2.5"))?;
            json!(t)
        }
        AnswerKind::Choice { .. } | AnswerKind::Text => json!(t),
    })
}

fn guess_media_type(path: &Path) -> String {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "heic" => "image/heic",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "m4a" => "audio/mp4",
        _ => "application/octet-stream",
    }
    .to_owned()
}

fn upsert_registry(tx: &Transaction<'_>, kind: EntityKind, item: &RegistryItem) -> Result<(), FieldError> {
    tx.execute(
        "INSERT INTO registry (id, kind, code, name, type, region) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET code = excluded.code, name = excluded.name, type = excluded.type, region = excluded.region",
        params![item.id.to_string(), kind.name(), item.code, item.name, item.kind, item.region],
    )
    .map_err(db)?;
    Ok(())
}

pub(crate) fn all_assignments(tx: &Transaction<'_>) -> Result<Vec<Assignment>, FieldError> {
    let mut stmt = tx.prepare("SELECT document FROM assignments ORDER BY id").map_err(db)?;
    let docs: Vec<String> = stmt.query_map([], |r| r.get(0)).map_err(db)?.collect::<Result<_, _>>().map_err(db)?;
    docs.iter()
        .map(|d| serde_json::from_str(d).map_err(|e| FieldError::Corrupt(format!("stored assignment: {e}"))))
        .collect()
}

fn find_assignment(tx: &Transaction<'_>, name: &str) -> Result<Assignment, FieldError> {
    let all = all_assignments(tx)?;
    let part = name.to_ascii_lowercase();
    let matches: Vec<_> = all
        .into_iter()
        .filter(|a| {
            let id = a.id.to_string();
            (part.len() >= 4 && (id.starts_with(&part) || id.ends_with(&part))) || a.unit.code == name
        })
        .collect();
    match matches.len() {
        0 => Err(FieldError::NotFound { what: "assignment", name: name.to_owned() }),
        1 => Ok(matches.into_iter().next().expect("one")),
        n => Err(FieldError::Ambiguous { what: "assignment", name: name.to_owned(), count: n }),
    }
}

/// Finds a record of `kind` by its id, or by its first or last characters (at least 4;
/// people are shown the last 8).
pub(crate) fn find_entity(tx: &Transaction<'_>, kind: EntityKind, name: &str) -> Result<EntityId, FieldError> {
    let part = name.trim().to_ascii_lowercase();
    if part.len() < 4 || !part.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(FieldError::NotFound { what: kind.name(), name: name.to_owned() });
    }
    // A whole id (what apps and scripts pass): one lookup by key, not a scan.
    if let Ok(id) = part.parse::<EntityId>() {
        let found: Option<String> = tx
            .query_row(
                "SELECT entity FROM fields WHERE entity = ?1 AND kind = ?2 LIMIT 1",
                params![id.to_string(), kind.name()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        return match found {
            Some(_) => Ok(id),
            None => Err(FieldError::NotFound { what: kind.name(), name: name.to_owned() }),
        };
    }
    let mut stmt = tx
        .prepare_cached("SELECT DISTINCT entity FROM fields WHERE kind = ?1 AND (substr(entity, 1, length(?2)) = ?2 OR substr(entity, -length(?2)) = ?2) LIMIT 2")
        .map_err(db)?;
    let ids: Vec<String> =
        stmt.query_map(params![kind.name(), part], |r| r.get(0)).map_err(db)?.collect::<Result<_, _>>().map_err(db)?;
    match ids.len() {
        0 => Err(FieldError::NotFound { what: kind.name(), name: name.to_owned() }),
        1 => ids[0].parse().map_err(|_| FieldError::Corrupt(format!("bad id {}", ids[0]))),
        n => Err(FieldError::Ambiguous { what: kind.name(), name: name.to_owned(), count: n }),
    }
}

pub(crate) fn field_value(tx: &Transaction<'_>, entity: EntityId, field: &str) -> Result<Option<Value>, FieldError> {
    let text: Option<String> = tx
        .query_row(
            "SELECT value FROM fields WHERE entity = ?1 AND field = ?2",
            params![entity.to_string(), field],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    text.map(|t| serde_json::from_str(&t).map_err(|_| FieldError::Corrupt(format!("field {field} of {entity}"))))
        .transpose()
}

fn entity_fields(tx: &Transaction<'_>, entity: EntityId) -> Result<BTreeMap<String, Value>, FieldError> {
    let mut stmt = tx.prepare_cached("SELECT field, value FROM fields WHERE entity = ?1").map_err(db)?;
    let rows =
        stmt.query_map([entity.to_string()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(db)?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (f, v) = row.map_err(db)?;
        out.insert(f, serde_json::from_str(&v).map_err(|_| FieldError::Corrupt(format!("field of {entity}")))?);
    }
    Ok(out)
}

fn children(tx: &Transaction<'_>, kind: EntityKind, visit: EntityId) -> Result<Vec<EntityId>, FieldError> {
    let mut stmt = tx
        .prepare_cached("SELECT entity FROM fields WHERE kind = ?1 AND field = 'visit' AND value = ?2 ORDER BY entity")
        .map_err(db)?;
    let target = serde_json::to_string(&visit.to_string()).expect("string");
    let ids: Vec<String> = stmt
        .query_map(params![kind.name(), target], |r| r.get(0))
        .map_err(db)?
        .collect::<Result<_, _>>()
        .map_err(db)?;
    ids.iter().map(|i| i.parse().map_err(|_| FieldError::Corrupt(format!("bad id {i}")))).collect()
}

fn visit_instrument(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    visit: EntityId,
) -> Result<InstrumentRef, FieldError> {
    let value = field_value(tx, visit, "instrument")?
        .ok_or_else(|| FieldError::Corrupt(format!("visit {visit} has no instrument")))?;
    let r: InstrumentRef = serde_json::from_value(value)
        .map_err(|_| FieldError::Corrupt(format!("visit {visit} has a bad instrument")))?;
    if !instruments.contains_key(&r) {
        return Err(FieldError::UnknownInstrument {
            name: r.to_string(),
            known: instruments.keys().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        });
    }
    Ok(r)
}

fn respondent_visit(tx: &Transaction<'_>, respondent: EntityId) -> Result<EntityId, FieldError> {
    let v = field_value(tx, respondent, "visit")?
        .ok_or_else(|| FieldError::Corrupt(format!("respondent {respondent} has no visit")))?;
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| FieldError::Corrupt(format!("respondent {respondent} has a bad visit")))
}

fn registry_item(tx: &Transaction<'_>, id: Option<&Value>) -> Result<RegistryItem, FieldError> {
    let id: EntityId = id
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| FieldError::Corrupt("a visit without its registry reference".into()))?;
    let row = tx
        .query_row("SELECT code, name, type, region FROM registry WHERE id = ?1", [id.to_string()], |r| {
            Ok(RegistryItem { id, code: r.get(0)?, name: r.get(1)?, kind: r.get(2)?, region: r.get(3)? })
        })
        .optional()
        .map_err(db)?;
    Ok(row.unwrap_or(RegistryItem {
        id,
        code: short(id),
        name: format!("record {}", short(id)),
        kind: None,
        region: None,
    }))
}

fn str_of(fields: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    fields.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn load_visit(tx: &Transaction<'_>, id: EntityId) -> Result<VisitView, FieldError> {
    let f = entity_fields(tx, id)?;
    let instrument: InstrumentRef = f
        .get("instrument")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or_else(|| FieldError::Corrupt(format!("visit {id} has no instrument")))?;
    let answers =
        f.iter().filter_map(|(k, v)| k.strip_prefix(ANSWER_PREFIX).map(|i| (i.to_owned(), v.clone()))).collect();
    let mut respondents = Vec::new();
    for r in children(tx, EntityKind::Respondent, id)? {
        let rf = entity_fields(tx, r)?;
        respondents.push(RespondentView {
            id: r,
            kind: str_of(&rf, "kind").unwrap_or_default(),
            role: str_of(&rf, "role"),
            answers: rf
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(ANSWER_PREFIX).map(|i| (i.to_owned(), v.clone())))
                .collect(),
        });
    }
    let mut notes = Vec::new();
    for n in children(tx, EntityKind::Note, id)? {
        let nf = entity_fields(tx, n)?;
        notes.push(NoteView {
            id: n,
            indicator: str_of(&nf, "indicator"),
            text: str_of(&nf, "text").unwrap_or_default(),
        });
    }
    let mut evidence = Vec::new();
    for e in children(tx, EntityKind::Evidence, id)? {
        let ef = entity_fields(tx, e)?;
        let sha256 = str_of(&ef, "sha256").unwrap_or_default();
        let on_device = tx
            .query_row("SELECT pruned FROM uploads WHERE sha256 = ?1", [&sha256], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(db)?
            .is_some_and(|pruned| pruned == 0);
        evidence.push(EvidenceView {
            id: e,
            sha256,
            media_type: str_of(&ef, "media_type").unwrap_or_default(),
            size: ef.get("size").and_then(Value::as_u64).unwrap_or(0),
            indicator: str_of(&ef, "indicator"),
            on_device,
        });
    }
    let post_submission_edits = post_submission_edits(tx, id)?;
    Ok(VisitView {
        id,
        status: str_of(&f, "status").unwrap_or_else(|| "draft".into()),
        mode: str_of(&f, "mode").unwrap_or_default(),
        location: str_of(&f, "location").unwrap_or_default(),
        instrument,
        assignment: f.get("assignment").and_then(Value::as_str).and_then(|s| s.parse().ok()),
        institution: registry_item(tx, f.get("institution"))?,
        unit: registry_item(tx, f.get("unit"))?,
        product: registry_item(tx, f.get("product"))?,
        started_at: f.get("started_at").and_then(Value::as_i64),
        finished_at: f.get("finished_at").and_then(Value::as_i64),
        answers,
        respondents,
        notes,
        evidence,
        post_submission_edits,
    })
}

/// Fields of a visit (and its questionnaires) written after it was submitted.
fn post_submission_edits(tx: &Transaction<'_>, visit: EntityId) -> Result<Vec<String>, FieldError> {
    let submitted: Option<(i64, i64)> = tx
        .query_row(
            "SELECT hlc_ms, hlc_c FROM ops WHERE entity = ?1 AND field = 'status' AND value = '\"submitted\"' ORDER BY hlc_ms, hlc_c LIMIT 1",
            [visit.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db)?;
    let Some((ms, c)) = submitted else { return Ok(Vec::new()) };
    let mut entities = vec![visit];
    entities.extend(children(tx, EntityKind::Respondent, visit)?);
    entities.extend(children(tx, EntityKind::Note, visit)?);
    entities.extend(children(tx, EntityKind::Evidence, visit)?);
    let mut out = BTreeSet::new();
    let mut stmt = tx
        .prepare_cached("SELECT kind, field FROM ops WHERE entity = ?1 AND (hlc_ms, hlc_c) > (?2, ?3)")
        .map_err(db)?;
    for e in entities {
        let rows = stmt
            .query_map(params![e.to_string(), ms, c], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db)?;
        for row in rows {
            let (kind, field) = row.map_err(db)?;
            out.insert(if kind == "visit" { field } else { format!("{kind} {}: {field}", short(e)) });
        }
    }
    Ok(out.into_iter().collect())
}

/// Per visit of this device: is every op of it held by the server, by the centre?
fn visit_acks(
    tx: &Transaction<'_>,
    origin: sidak_core::ids::OriginId,
    server: u64,
    upstream: Option<u64>,
) -> Result<Vec<VisitAck>, FieldError> {
    // The highest seq of this origin that touches each visit or a record citing it:
    // one pass over this origin's ops and one over the records that cite a visit.
    let mut by_entity: BTreeMap<String, i64> = BTreeMap::new();
    {
        let mut stmt = tx.prepare("SELECT entity, MAX(seq) FROM ops WHERE origin = ?1 GROUP BY entity").map_err(db)?;
        let rows =
            stmt.query_map([origin.to_string()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(db)?;
        for row in rows {
            let (entity, seq) = row.map_err(db)?;
            by_entity.insert(entity, seq);
        }
    }
    let mut per_visit: BTreeMap<String, i64> = BTreeMap::new();
    {
        let mut stmt =
            tx.prepare("SELECT entity FROM fields WHERE kind = 'visit' AND field = 'instrument'").map_err(db)?;
        for row in stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db)? {
            let v = row.map_err(db)?;
            if let Some(seq) = by_entity.get(&v) {
                per_visit.insert(v, *seq);
            }
        }
        let mut stmt = tx
            .prepare(
                "SELECT entity, json_extract(value, '$') FROM fields
                 WHERE field = 'visit' AND kind IN ('respondent', 'note', 'evidence')",
            )
            .map_err(db)?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(db)? {
            let (child, visit) = row.map_err(db)?;
            if let (Some(seq), Some(max)) = (by_entity.get(&child), per_visit.get_mut(&visit)) {
                *max = (*max).max(*seq);
            }
        }
    }
    let rows = per_visit.into_iter().map(Ok::<_, rusqlite::Error>);
    let mut out = Vec::new();
    for row in rows {
        let (id, max_seq) = row.map_err(db)?;
        let id = id.parse().map_err(|_| FieldError::Corrupt("bad visit id".into()))?;
        let max_seq = max_seq as u64;
        out.push(VisitAck { id, server: server >= max_seq, centre: upstream.is_some_and(|u| u >= max_seq) });
    }
    Ok(out)
}
