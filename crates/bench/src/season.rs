//! The ops a national season's devices write. The season itself (institutions, units,
//! products, service users, assessors) is the generator the demo shares,
//! `sidak_server::season`; here each device writes its visits' ops as
//! `sidak_field::Field` does, at the rate a benchmark needs.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sidak_core::hash::Sha256Digest;
use sidak_core::hlc::Hlc;
use sidak_core::ids::{EntityId, OriginId};
use sidak_core::instrument::{Instrument, Level, RespondentKind};
use sidak_core::op::Op;
use sidak_core::records::{EntityKind, EntityRef, ANSWER_PREFIX};

pub use sidak_server::season::{Institution, Season, Unit};

/// Registry record ids as a server assigned them, by codes.
#[derive(Clone, Debug, Default)]
pub struct RegistryIds {
    /// institution code → id.
    pub institutions: BTreeMap<String, String>,
    /// (institution id, unit code) → id.
    pub units: BTreeMap<(String, String), String>,
    /// (unit id, product code) → id.
    pub products: BTreeMap<(String, String), String>,
    /// unit id → assignment id.
    pub assignments: BTreeMap<String, String>,
}

impl RegistryIds {
    /// Reads them from a server's fields.
    pub fn read(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<RegistryIds> {
        let mut fields: BTreeMap<String, (String, BTreeMap<String, String>)> = BTreeMap::new();
        let mut stmt = tx.prepare(
            "SELECT entity, kind, field, value FROM fields WHERE kind IN ('institution', 'unit', 'product', 'assignment') AND field NOT GLOB 'answer.*'
             AND field IN ('code', 'institution', 'unit')",
        )?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?)))?;
        for row in rows {
            let (entity, kind, field, value): (String, String, String, String) = row?;
            let value = serde_json::from_str::<Value>(&value).ok().and_then(|v| v.as_str().map(str::to_owned));
            let e = fields.entry(entity).or_insert_with(|| (kind, BTreeMap::new()));
            e.1.insert(field, value.unwrap_or_default());
        }
        let mut ids = RegistryIds::default();
        for (entity, (kind, f)) in fields {
            let get = |k: &str| f.get(k).cloned().unwrap_or_default();
            match kind.as_str() {
                "institution" => {
                    ids.institutions.insert(get("code"), entity);
                }
                "unit" => {
                    ids.units.insert((get("institution"), get("code")), entity);
                }
                "product" => {
                    ids.products.insert((get("unit"), get("code")), entity);
                }
                _ => {
                    ids.assignments.insert(get("unit"), entity);
                }
            }
        }
        Ok(ids)
    }
}

/// A field device writing ops as `sidak_field::Field` does: its registration, then
/// per visit the fields `start_visit` writes, the answers, respondents with theirs,
/// and the two fields `finish` writes. Each op is chained and stamped.
pub struct DeviceOps {
    /// Its origin.
    pub origin: OriginId,
    seq: u64,
    prev: Sha256Digest,
    ms: u64,
    rng: StdRng,
}

impl DeviceOps {
    /// A device of `assessor` in `region`; its clock starts at `start_ms`.
    pub fn new(assessor: &str, region: &str, start_ms: u64, seed: u64) -> (DeviceOps, Vec<Op>) {
        let mut d = DeviceOps {
            origin: OriginId(uuid::Uuid::now_v7()),
            seq: 0,
            prev: Sha256Digest::ZERO,
            ms: start_ms,
            rng: StdRng::seed_from_u64(seed),
        };
        let me = EntityRef { kind: EntityKind::Device, id: EntityId(d.origin.0) };
        let ops = vec![
            d.write(me, "assessor", json!(assessor)),
            d.write(me, "region", json!(region)),
            d.write(me, "role", json!("device")),
        ];
        (d, ops)
    }

    fn write(&mut self, entity: EntityRef, field: &str, value: Value) -> Op {
        self.seq += 1;
        self.ms += 1;
        let op = Op::new(
            self.origin,
            self.seq,
            Hlc { ms: self.ms, c: 0 },
            self.ms as i64,
            entity,
            field,
            value,
            None,
            self.prev,
        );
        self.prev = op.hash;
        op
    }

    fn answer(&mut self, quality: i64) -> Value {
        json!((quality + self.rng.gen_range(-1i64..=1)).clamp(0, 3))
    }

    /// The ops of a complete submitted visit to one product (with the unit's
    /// questionnaires when `unit_answers`, and `service_users` questionnaires).
    #[allow(clippy::too_many_arguments)]
    pub fn visit(
        &mut self,
        instrument: &Instrument,
        ids: &RegistryIds,
        inst: &Institution,
        unit: &Unit,
        product: &str,
        unit_answers: bool,
        service_users: u32,
        out: &mut Vec<Op>,
    ) {
        let inst_id = &ids.institutions[&inst.code];
        let unit_id = &ids.units[&(inst_id.clone(), unit.code.clone())];
        let product_id = &ids.products[&(unit_id.clone(), product.to_owned())];
        let visit = EntityRef { kind: EntityKind::Visit, id: EntityId(uuid::Uuid::now_v7()) };
        let started = self.ms;
        let reference = serde_json::to_value(&instrument.reference).expect("serialises");
        for (field, value) in [
            ("instrument", reference),
            ("assignment", json!(ids.assignments.get(unit_id).cloned().unwrap_or_default())),
            ("institution", json!(inst_id)),
            ("unit", json!(unit_id)),
            ("product", json!(product_id)),
            ("mode", json!("covert")),
            ("location", json!(if unit.unit_type == "dpmptsp" { "mpp" } else { "own_office" })),
            ("started_at", json!(started)),
            ("status", json!("draft")),
        ] {
            out.push(self.write(visit, field, value));
        }
        let q = inst.quality;
        for ind in instrument.indicators() {
            let wanted = match ind.level {
                Level::Product => true,
                Level::Unit => unit_answers,
                Level::Institution => false,
            };
            if wanted && ind.source.respondent_kind().is_none() {
                let v = self.answer(q);
                out.push(self.write(visit, &format!("{ANSWER_PREFIX}{}", ind.id), v));
            }
        }
        let mut respondents = Vec::new();
        if unit_answers {
            for rule in instrument.respondents.iter().filter(|r| r.level == Level::Unit) {
                respondents.extend(std::iter::repeat_n(rule.kind, rule.min as usize));
            }
        }
        respondents.extend(std::iter::repeat_n(RespondentKind::ServiceUser, service_users as usize));
        for kind in respondents {
            let r = EntityRef { kind: EntityKind::Respondent, id: EntityId(uuid::Uuid::now_v7()) };
            out.push(self.write(r, "visit", json!(visit.id.to_string())));
            out.push(self.write(r, "kind", json!(kind.name())));
            for ind in instrument.indicators().filter(|i| i.source.respondent_kind() == Some(kind)) {
                let v = self.answer(q);
                out.push(self.write(r, &format!("{ANSWER_PREFIX}{}", ind.id), v));
            }
        }
        let finished = self.ms;
        out.push(self.write(visit, "finished_at", json!(finished)));
        out.push(self.write(visit, "status", json!("submitted")));
    }

    /// Every visit of an institution: each product once, the unit's questionnaires in
    /// its first product's visit, the service users in the institution's first visit.
    pub fn institution(&mut self, instrument: &Instrument, ids: &RegistryIds, inst: &Institution, out: &mut Vec<Op>) {
        let mut users = inst.service_users;
        for unit in &inst.units {
            for (p, (product, _)) in unit.products.iter().enumerate() {
                self.visit(instrument, ids, inst, unit, product, p == 0, std::mem::take(&mut users), out);
            }
        }
    }
}

/// Answers among ops.
pub fn answers_in(ops: &[Op]) -> usize {
    ops.iter().filter(|o| o.field.starts_with(ANSWER_PREFIX)).count()
}
