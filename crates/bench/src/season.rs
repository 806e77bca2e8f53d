//! A national assessment season, generated: institutions of the five types in their
//! real numbers (2024: 25 K, 14 L, 34 provinces, 98 cities, 416 regencies = 587), the
//! units assessed in each (domain.md §3.3), their products, service users, assessors
//! and the ops their devices write. Deterministic from a seed, and scalable, so the
//! same realistic data serves the benchmarks and a demo.

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

/// The 34 provinces of 2021–2024, as region codes.
pub const PROVINCES: [&str; 34] = [
    "aceh",
    "sumut",
    "sumbar",
    "riau",
    "jambi",
    "sumsel",
    "bengkulu",
    "lampung",
    "babel",
    "kepri",
    "dki",
    "jabar",
    "jateng",
    "diy",
    "jatim",
    "banten",
    "bali",
    "ntb",
    "ntt",
    "kalbar",
    "kalteng",
    "kalsel",
    "kaltim",
    "kaltara",
    "sulut",
    "sulteng",
    "sulsel",
    "sultra",
    "gorontalo",
    "sulbar",
    "maluku",
    "malut",
    "papua",
    "papbar",
];

/// Where ministries and agencies are assessed from.
pub const CENTRE_REGION: &str = "pusat";

/// The instrument the season is recorded with.
pub const INSTRUMENT: &str = "penilaian-2023@1";

/// A unit assessed, with its products.
#[derive(Clone, Debug)]
pub struct Unit {
    /// Code, unique in its institution.
    pub code: String,
    /// Name.
    pub name: String,
    /// Unit type (domain.md §3.3).
    pub unit_type: String,
    /// Product codes and names.
    pub products: Vec<(String, String)>,
}

/// An institution assessed.
#[derive(Clone, Debug)]
pub struct Institution {
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// kementerian, lembaga, provinsi, kota or kabupaten.
    pub kind: String,
    /// Region code.
    pub region: String,
    /// Units assessed.
    pub units: Vec<Unit>,
    /// Service users questioned (at least the instrument's 30).
    pub service_users: u32,
    /// The assessor who visits it.
    pub assessor: String,
    /// Around which answer (0–3) its observations fall.
    pub quality: i64,
}

/// A generated season.
#[derive(Clone, Debug)]
pub struct Season {
    /// Every institution.
    pub institutions: Vec<Institution>,
}

/// Products per unit type: sized so that a full season has about a million answers
/// (the figure). 2019 had 17,717 products over 2,366 units (7.5 a unit); a
/// DPMPTSP issues far more permits than the 40 taken here.
fn unit_catalogue(unit_type: &str) -> (&'static str, usize) {
    match unit_type {
        "disdukcapil" => ("Dinas Kependudukan dan Pencatatan Sipil", 12),
        "dpmptsp" => ("Dinas Penanaman Modal dan PTSP", 40),
        "dinkes" => ("Dinas Kesehatan", 8),
        "puskesmas" => ("UPT Puskesmas", 6),
        "disdik" => ("Dinas Pendidikan", 6),
        "dinsos" => ("Dinas Sosial", 6),
        "rsud" => ("Rumah Sakit Umum Daerah", 8),
        "kantah" => ("Kantor Pertanahan", 2),
        "polres" => ("Kepolisian Resor", 5),
        _ => ("Unit Layanan", 5),
    }
}

fn units_for(kind: &str, index: usize) -> Vec<(String, String)> {
    let plain = |types: &[&str]| types.iter().map(|t| (t.to_string(), t.to_string())).collect::<Vec<_>>();
    match kind {
        "kota" => {
            let mut u = plain(&["disdukcapil", "dpmptsp", "dinkes", "disdik", "dinsos"]);
            u.push(("puskesmas-1".into(), "puskesmas".into()));
            u.push(("puskesmas-2".into(), "puskesmas".into()));
            u
        }
        "kabupaten" => {
            let mut u = plain(&["disdukcapil", "dpmptsp", "dinkes", "disdik", "dinsos"]);
            u.push(("puskesmas-1".into(), "puskesmas".into()));
            u
        }
        "provinsi" => plain(&["dpmptsp", "rsud", "disdik", "dinsos"]),
        // Ministries and agencies: vertical offices where they have them (ATR/BPN's land
        // offices, the police's resorts), administrative service units otherwise.
        _ => {
            let t = match (kind, index) {
                ("kementerian", 0) => "kantah",
                ("lembaga", 0) => "polres",
                _ => "layanan-kl",
            };
            (1..=5).map(|i| (format!("{t}-{i}"), t.to_owned())).collect()
        }
    }
}

impl Season {
    /// The national season at `scale` (1.0: all 587 institutions; 0.05: 30), each type
    /// scaled alike; one assessor per `per_assessor` institutions of a region.
    pub fn national(scale: f64, per_assessor: usize, seed: u64) -> Season {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut institutions = Vec::new();
        let count = |n: usize| ((n as f64 * scale).round() as usize).max(1);
        for (kind, n) in [("kementerian", 25), ("lembaga", 14), ("provinsi", 34), ("kota", 98), ("kabupaten", 416)] {
            for i in 0..count(n) {
                let region = match kind {
                    "kementerian" | "lembaga" => CENTRE_REGION.to_owned(),
                    _ => PROVINCES[i % PROVINCES.len()].to_owned(),
                };
                let code = format!("{kind}-{:03}", i + 1);
                let units = units_for(kind, i)
                    .into_iter()
                    .map(|(code, unit_type)| {
                        let (name, products) = unit_catalogue(&unit_type);
                        Unit {
                            name: format!("{name} {code}"),
                            products: (1..=products)
                                .map(|p| (format!("{code}-layanan-{p}"), format!("Layanan {p} {name}")))
                                .collect(),
                            code,
                            unit_type,
                        }
                    })
                    .collect();
                institutions.push(Institution {
                    name: format!("{} {:03}", kind, i + 1),
                    kind: kind.to_owned(),
                    region,
                    units,
                    // 30 to 106, about 68 on average: ~40,000 over 587 institutions.
                    service_users: rng.gen_range(30..=106),
                    assessor: String::new(),
                    quality: rng.gen_range(0..=3),
                    code,
                });
            }
        }
        // Assessors: each takes up to `per_assessor` institutions of one region.
        let mut by_region: BTreeMap<String, usize> = BTreeMap::new();
        for inst in &mut institutions {
            let n = by_region.entry(inst.region.clone()).or_default();
            inst.assessor = format!("asesor-{}-{}", inst.region, *n / per_assessor.max(1) + 1);
            *n += 1;
        }
        Season { institutions }
    }

    /// Only the institutions of one region, up to `n` of them (a regional server).
    pub fn regional(n: usize, seed: u64) -> Season {
        let mut season = Season::national(1.0, 1, seed);
        season.institutions.retain(|i| i.kind == "kota" || i.kind == "kabupaten");
        season.institutions.truncate(n);
        for (k, inst) in season.institutions.iter_mut().enumerate() {
            inst.region = "jateng".into();
            inst.assessor = format!("asesor-jateng-{}", k + 1);
        }
        season
    }

    /// Counts: (institutions, units, products, service users).
    pub fn counts(&self) -> (usize, usize, usize, u64) {
        let units = self.institutions.iter().map(|i| i.units.len()).sum();
        let products = self.institutions.iter().flat_map(|i| &i.units).map(|u| u.products.len()).sum();
        let users = self.institutions.iter().map(|i| i.service_users as u64).sum();
        (self.institutions.len(), units, products, users)
    }

    /// The registry CSV (`sidak-server registry import`).
    pub fn registry_csv(&self) -> String {
        let mut csv = sidak_server::admin::REGISTRY_HEADER.to_owned() + "\n";
        for i in &self.institutions {
            for u in &i.units {
                for (code, name) in &u.products {
                    csv.push_str(&format!(
                        "{},{},{},{},{},{},{},{},{}\n",
                        i.code, i.name, i.kind, i.region, u.code, u.name, u.unit_type, code, name
                    ));
                }
            }
        }
        csv
    }

    /// One assignment per unit, every product, for the institution's assessor.
    pub fn assignments(&self) -> Vec<sidak_server::admin::NewAssignment> {
        self.institutions
            .iter()
            .flat_map(|i| {
                i.units.iter().map(|u| sidak_server::admin::NewAssignment {
                    assessor: i.assessor.clone(),
                    institution: i.code.clone(),
                    unit: u.code.clone(),
                    products: vec![],
                    instrument: INSTRUMENT.into(),
                    mode: "covert".into(),
                    due: None,
                })
            })
            .collect()
    }

    /// Assessors with their region and the institutions they visit (indices).
    pub fn assessors(&self) -> Vec<(String, String, Vec<usize>)> {
        let mut out: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
        for (k, i) in self.institutions.iter().enumerate() {
            out.entry(i.assessor.clone()).or_insert_with(|| (i.region.clone(), Vec::new())).1.push(k);
        }
        out.into_iter().map(|(a, (r, is))| (a, r, is)).collect()
    }
}

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
            "SELECT entity, kind, field, value FROM fields WHERE kind IN ('institution', 'unit', 'product', 'assignment')
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
