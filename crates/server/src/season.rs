//! The season generator that the demo and the benchmarks share: institutions of the five
//! types in their real numbers (2024: 25 K, 14 L, 34 provinces, 98 cities, 416 regencies
//! = 587), the units assessed in each (domain.md §3.3), their service products, how many
//! service users each questions, how well each serves, and which assessor visits it.
//! Deterministic from a seed, and scalable: `sidak-bench season` takes the whole of it
//! or a fraction, `sidak-server demo` takes a handful of its institutions
//! ([`Season::sample`]), so both work on the same data.
//!
//! What is generated here is the registry and the plan of the fieldwork. How the visits
//! are then recorded is each user's own: the demo records through the real field
//! library (with photos and the troubles of real fieldwork), the benchmarks write the
//! same ops directly at a rate a national season needs.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::admin::{NewAssignment, REGISTRY_HEADER};

/// The instrument a generated season is recorded with.
pub const INSTRUMENT: &str = "penilaian-2023@1";

/// Where ministries and agencies are assessed from.
pub const CENTRE_REGION: &str = "pusat";

/// A province of 2021–2024: its region code, its name, one of its cities (code, name;
/// West Sulawesi has none) and one of its regencies. The first city and regency of a
/// province in a generated season take these names; further ones are numbered.
type Province = (&'static str, &'static str, Option<(&'static str, &'static str)>, (&'static str, &'static str));

/// The 34 provinces of 2021–2024.
pub const PROVINCES: [Province; 34] = [
    ("aceh", "Aceh", Some(("kota-banda-aceh", "Kota Banda Aceh")), ("kab-aceh-besar", "Kabupaten Aceh Besar")),
    ("sumut", "Sumatera Utara", Some(("kota-medan", "Kota Medan")), ("kab-deli-serdang", "Kabupaten Deli Serdang")),
    ("sumbar", "Sumatera Barat", Some(("kota-padang", "Kota Padang")), ("kab-agam", "Kabupaten Agam")),
    ("riau", "Riau", Some(("kota-pekanbaru", "Kota Pekanbaru")), ("kab-kampar", "Kabupaten Kampar")),
    ("jambi", "Jambi", Some(("kota-jambi", "Kota Jambi")), ("kab-muaro-jambi", "Kabupaten Muaro Jambi")),
    (
        "sumsel",
        "Sumatera Selatan",
        Some(("kota-palembang", "Kota Palembang")),
        ("kab-ogan-ilir", "Kabupaten Ogan Ilir"),
    ),
    (
        "bengkulu",
        "Bengkulu",
        Some(("kota-bengkulu", "Kota Bengkulu")),
        ("kab-rejang-lebong", "Kabupaten Rejang Lebong"),
    ),
    (
        "lampung",
        "Lampung",
        Some(("kota-bandar-lampung", "Kota Bandar Lampung")),
        ("kab-lampung-selatan", "Kabupaten Lampung Selatan"),
    ),
    (
        "babel",
        "Kepulauan Bangka Belitung",
        Some(("kota-pangkalpinang", "Kota Pangkalpinang")),
        ("kab-bangka", "Kabupaten Bangka"),
    ),
    ("kepri", "Kepulauan Riau", Some(("kota-batam", "Kota Batam")), ("kab-bintan", "Kabupaten Bintan")),
    (
        "dki",
        "DKI Jakarta",
        Some(("kota-jakarta-selatan", "Kota Administrasi Jakarta Selatan")),
        ("kab-kepulauan-seribu", "Kabupaten Administrasi Kepulauan Seribu"),
    ),
    ("jabar", "Jawa Barat", Some(("kota-bandung", "Kota Bandung")), ("kab-bogor", "Kabupaten Bogor")),
    ("jateng", "Jawa Tengah", Some(("kota-magelang", "Kota Magelang")), ("kab-kendal", "Kabupaten Kendal")),
    ("diy", "DI Yogyakarta", Some(("kota-yogyakarta", "Kota Yogyakarta")), ("kab-sleman", "Kabupaten Sleman")),
    ("jatim", "Jawa Timur", Some(("kota-surabaya", "Kota Surabaya")), ("kab-sidoarjo", "Kabupaten Sidoarjo")),
    ("banten", "Banten", Some(("kota-serang", "Kota Serang")), ("kab-tangerang", "Kabupaten Tangerang")),
    ("bali", "Bali", Some(("kota-denpasar", "Kota Denpasar")), ("kab-badung", "Kabupaten Badung")),
    (
        "ntb",
        "Nusa Tenggara Barat",
        Some(("kota-mataram", "Kota Mataram")),
        ("kab-lombok-barat", "Kabupaten Lombok Barat"),
    ),
    ("ntt", "Nusa Tenggara Timur", Some(("kota-kupang", "Kota Kupang")), ("kab-sikka", "Kabupaten Sikka")),
    (
        "kalbar",
        "Kalimantan Barat",
        Some(("kota-pontianak", "Kota Pontianak")),
        ("kab-kubu-raya", "Kabupaten Kubu Raya"),
    ),
    (
        "kalteng",
        "Kalimantan Tengah",
        Some(("kota-palangka-raya", "Kota Palangka Raya")),
        ("kab-kotawaringin-barat", "Kabupaten Kotawaringin Barat"),
    ),
    (
        "kalsel",
        "Kalimantan Selatan",
        Some(("kota-banjarmasin", "Kota Banjarmasin")),
        ("kab-banjar", "Kabupaten Banjar"),
    ),
    (
        "kaltim",
        "Kalimantan Timur",
        Some(("kota-samarinda", "Kota Samarinda")),
        ("kab-kutai-kartanegara", "Kabupaten Kutai Kartanegara"),
    ),
    ("kaltara", "Kalimantan Utara", Some(("kota-tarakan", "Kota Tarakan")), ("kab-bulungan", "Kabupaten Bulungan")),
    ("sulut", "Sulawesi Utara", Some(("kota-manado", "Kota Manado")), ("kab-minahasa", "Kabupaten Minahasa")),
    ("sulteng", "Sulawesi Tengah", Some(("kota-palu", "Kota Palu")), ("kab-donggala", "Kabupaten Donggala")),
    ("sulsel", "Sulawesi Selatan", Some(("kota-makassar", "Kota Makassar")), ("kab-maros", "Kabupaten Maros")),
    ("sultra", "Sulawesi Tenggara", Some(("kota-kendari", "Kota Kendari")), ("kab-konawe", "Kabupaten Konawe")),
    ("gorontalo", "Gorontalo", Some(("kota-gorontalo", "Kota Gorontalo")), ("kab-gorontalo", "Kabupaten Gorontalo")),
    ("sulbar", "Sulawesi Barat", None, ("kab-mamuju", "Kabupaten Mamuju")),
    ("maluku", "Maluku", Some(("kota-ambon", "Kota Ambon")), ("kab-maluku-tengah", "Kabupaten Maluku Tengah")),
    (
        "malut",
        "Maluku Utara",
        Some(("kota-ternate", "Kota Ternate")),
        ("kab-halmahera-utara", "Kabupaten Halmahera Utara"),
    ),
    ("papua", "Papua", Some(("kota-jayapura", "Kota Jayapura")), ("kab-jayapura", "Kabupaten Jayapura")),
    ("papbar", "Papua Barat", Some(("kota-sorong", "Kota Sorong")), ("kab-manokwari", "Kabupaten Manokwari")),
];

/// Ministries and agencies with a name of their own (code, name); the others are
/// numbered.
const NAMED_CENTRE: [(&str, usize, &str, &str); 2] = [
    ("kementerian", 0, "kementerian-atr-bpn", "Kementerian Agraria dan Tata Ruang/Badan Pertanahan Nasional"),
    ("lembaga", 0, "badan-pom", "Badan Pengawas Obat dan Makanan"),
];

/// A unit assessed, with its products.
#[derive(Clone, Debug)]
pub struct Unit {
    /// Code, unique in its institution.
    pub code: String,
    /// Name.
    pub name: String,
    /// Unit type (domain.md §3.3).
    pub unit_type: String,
    /// Product codes and names, codes unique in the unit.
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

impl Institution {
    /// The assignment of one of its units to `assessor`, every product, with the
    /// season's instrument: announced at a ministry, covert elsewhere.
    pub fn assignment(&self, unit: &str, assessor: &str) -> NewAssignment {
        NewAssignment {
            assessor: assessor.to_owned(),
            institution: self.code.clone(),
            unit: unit.to_owned(),
            products: vec![],
            instrument: INSTRUMENT.into(),
            mode: if self.kind == "kementerian" { "announced".into() } else { "covert".into() },
            due: None,
        }
    }
}

/// A generated season.
#[derive(Clone, Debug)]
pub struct Season {
    /// Every institution.
    pub institutions: Vec<Institution>,
}

/// A unit type's name, how many products a unit of it offers, and the first of them by
/// name (code, name); the rest are numbered. Sized so that a full season has about a
/// million answers (the figure). 2019 had 17,717 products over 2,366 units (7.5
/// a unit); a DPMPTSP issues far more permits than the 40 taken here.
fn unit_catalogue(unit_type: &str) -> (&'static str, usize, &'static [(&'static str, &'static str)]) {
    match unit_type {
        "disdukcapil" => (
            "Dinas Kependudukan dan Pencatatan Sipil",
            12,
            &[("ktp-el", "KTP elektronik"), ("akta-lahir", "Akta kelahiran")],
        ),
        "dpmptsp" => (
            "Dinas Penanaman Modal dan PTSP",
            40,
            &[("pbg", "Persetujuan Bangunan Gedung"), ("nib", "Nomor Induk Berusaha")],
        ),
        "dinkes" => (
            "Dinas Kesehatan",
            8,
            &[
                ("sip", "Surat Izin Praktik tenaga kesehatan"),
                ("pirt", "Sertifikat Produksi Pangan Industri Rumah Tangga"),
            ],
        ),
        "puskesmas" => (
            "UPT Puskesmas",
            6,
            &[
                ("rawat-jalan", "Pelayanan rawat jalan"),
                ("imunisasi", "Imunisasi dasar"),
                ("kia", "Kesehatan ibu dan anak"),
            ],
        ),
        "disdik" => (
            "Dinas Pendidikan",
            6,
            &[("legalisir-ijazah", "Legalisir ijazah"), ("mutasi-siswa", "Mutasi peserta didik")],
        ),
        "dinsos" => {
            ("Dinas Sosial", 6, &[("dtks", "Pendaftaran DTKS"), ("rekomendasi-bansos", "Rekomendasi bantuan sosial")])
        }
        "rsud" => (
            "Rumah Sakit Umum Daerah",
            8,
            &[("rawat-jalan", "Pelayanan rawat jalan"), ("igd", "Instalasi gawat darurat")],
        ),
        "kantah" => (
            "Kantor Pertanahan",
            2,
            &[("sertifikat", "Pendaftaran tanah pertama kali"), ("roya", "Roya hak tanggungan")],
        ),
        "polres" => {
            ("Kepolisian Resor", 5, &[("skck", "Surat Keterangan Catatan Kepolisian"), ("sim", "Surat Izin Mengemudi")])
        }
        "bpom" => (
            "Balai Pengawas Obat dan Makanan",
            2,
            &[("izin-edar", "Registrasi izin edar"), ("ski", "Surat keterangan impor")],
        ),
        _ => ("Unit Layanan", 5, &[]),
    }
}

/// The units assessed in an institution of `kind` (the `index`-th of its kind):
/// (code, unit type).
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
        // offices, the police's resorts, Badan POM's offices), administrative service
        // units otherwise.
        _ => {
            let t = match (kind, index) {
                ("kementerian", 0) => "kantah",
                ("lembaga", 0) => "bpom",
                ("lembaga", 1) => "polres",
                _ => "layanan-kl",
            };
            (1..=5).map(|i| (format!("{t}-{i}"), t.to_owned())).collect()
        }
    }
}

/// A unit of type `unit_type` coded `code`, with its products.
fn unit(code: String, unit_type: String) -> Unit {
    let (name, products, named) = unit_catalogue(&unit_type);
    Unit {
        name: format!("{name} {code}"),
        products: (1..=products)
            .map(|p| match named.get(p - 1) {
                Some((code, name)) => ((*code).to_owned(), (*name).to_owned()),
                None => (format!("layanan-{p}"), format!("Layanan {p} {name}")),
            })
            .collect(),
        code,
        unit_type,
    }
}

/// The code and name of the `index`-th institution of `kind`, and its region.
fn identity(kind: &str, index: usize) -> (String, String, String) {
    let numbered = |label: &str| (format!("{kind}-{:03}", index + 1), format!("{label} {:03}", index + 1));
    if kind == "kementerian" || kind == "lembaga" {
        let (code, name) = match NAMED_CENTRE.iter().find(|(k, i, _, _)| *k == kind && *i == index) {
            Some((_, _, code, name)) => ((*code).to_owned(), (*name).to_owned()),
            None => numbered(if kind == "kementerian" { "Kementerian" } else { "Lembaga" }),
        };
        return (code, name, CENTRE_REGION.to_owned());
    }
    let (region, province, city, regency) = PROVINCES[index % PROVINCES.len()];
    let first = index < PROVINCES.len();
    let (code, name) = match (kind, first, city) {
        ("provinsi", _, _) => (format!("prov-{region}"), format!("Pemerintah Provinsi {province}")),
        ("kota", true, Some((code, name))) => (code.to_owned(), format!("Pemerintah {name}")),
        ("kabupaten", true, _) => (regency.0.to_owned(), format!("Pemerintah {}", regency.1)),
        ("kota", _, _) => numbered(&format!("Pemerintah Kota ({province})")),
        _ => numbered(&format!("Pemerintah Kabupaten ({province})")),
    };
    (code, name, region.to_owned())
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
                let (code, name, region) = identity(kind, i);
                institutions.push(Institution {
                    code,
                    name,
                    kind: kind.to_owned(),
                    region,
                    units: units_for(kind, i).into_iter().map(|(code, unit_type)| unit(code, unit_type)).collect(),
                    // 30 to 106, about 68 on average: ~40,000 over 587 institutions.
                    service_users: rng.gen_range(30..=106),
                    assessor: String::new(),
                    quality: rng.gen_range(0..=3),
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

    /// A few of the season's institutions, by code and in that order, with the first
    /// `products` products of each unit and `service_users` service users each (a
    /// season small enough to record through the field library in seconds). A handful
    /// drawn at random may all serve alike, so the sample's qualities are set from
    /// `qualities` in turn, to show every grade band. `None`: a code not in the season.
    pub fn sample(
        &self,
        codes: &[&str],
        products: usize,
        service_users: u32,
        qualities: &[i64],
    ) -> Result<Season, String> {
        let mut institutions = Vec::new();
        for (k, code) in codes.iter().enumerate() {
            let mut inst = self
                .institutions
                .iter()
                .find(|i| i.code == *code)
                .cloned()
                .ok_or_else(|| format!("no institution `{code}` in the season"))?;
            for u in &mut inst.units {
                u.products.truncate(products);
            }
            inst.service_users = service_users;
            if !qualities.is_empty() {
                inst.quality = qualities[k % qualities.len()];
            }
            institutions.push(inst);
        }
        Ok(Season { institutions })
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
        let mut csv = REGISTRY_HEADER.to_owned() + "\n";
        for i in &self.institutions {
            for u in &i.units {
                for (code, name) in &u.products {
                    csv.push_str(&format!(
                        "{},\"{}\",{},{},{},\"{}\",{},{},\"{}\"\n",
                        i.code, i.name, i.kind, i.region, u.code, u.name, u.unit_type, code, name
                    ));
                }
            }
        }
        csv
    }

    /// One assignment per unit, every product, for the institution's assessor.
    pub fn assignments(&self) -> Vec<NewAssignment> {
        self.institutions.iter().flat_map(|i| i.units.iter().map(|u| i.assignment(&u.code, &i.assessor))).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_national_season_has_the_real_numbers_and_unique_codes() {
        let season = Season::national(1.0, 4, 2024);
        let (institutions, units, products, users) = season.counts();
        assert_eq!(institutions, 587);
        assert_eq!(units, 3513);
        assert!((40_000..50_000).contains(&products), "{products} products");
        assert!((30 * 587..=106 * 587).contains(&(users as usize)));
        let mut codes = std::collections::BTreeSet::new();
        for i in &season.institutions {
            assert!(codes.insert(i.code.as_str()), "institution code {} twice", i.code);
            let unit_codes: std::collections::BTreeSet<_> = i.units.iter().map(|u| &u.code).collect();
            assert_eq!(unit_codes.len(), i.units.len(), "{}", i.code);
            for u in &i.units {
                let p: std::collections::BTreeSet<_> = u.products.iter().map(|p| &p.0).collect();
                assert_eq!(p.len(), u.products.len(), "{}/{}", i.code, u.code);
            }
        }
        assert_eq!(season.institutions.iter().filter(|i| i.region == CENTRE_REGION).count(), 39);
        // The registry it writes imports.
        crate::admin::parse_registry(&season.registry_csv()).expect("the generated registry parses");
    }

    #[test]
    fn institutions_sharing_unit_and_product_codes_import_as_distinct_records() {
        // Every city has a `dpmptsp` offering `pbg` and `nib`: the import must tell them
        // apart by their parent, and find each again on a second import.
        let season = Season::national(1.0, 4, 2024)
            .sample(&["kota-magelang", "kota-makassar", "kab-maros"], 2, 30, &[])
            .unwrap();
        let rows = crate::admin::parse_registry(&season.registry_csv()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let state = crate::state::AppState::open(dir.path(), crate::state::system_clock()).unwrap();
        let instruments = state.instruments();
        let import = || {
            state
                .db()
                .write_blocking(|tx| crate::admin::import_registry(tx, &instruments, &rows, 1_700_000_000_000))
                .unwrap()
                .0
        };
        let (_, units, products, _) = season.counts();
        let first = import();
        assert_eq!((first.institutions_added, first.units_added, first.products_added), (3, units, products));
        let again = import();
        assert_eq!(
            (again.institutions_added, again.units_added, again.products_added, again.fields_changed),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn a_sample_is_the_national_season_cut_down() {
        let national = Season::national(1.0, 4, 2024);
        let sample = national.sample(&["kota-magelang", "badan-pom"], 2, 30, &[0, 3]).unwrap();
        let magelang = national.institutions.iter().find(|i| i.code == "kota-magelang").unwrap();
        let s = &sample.institutions[0];
        assert_eq!((s.name.as_str(), s.region.as_str(), s.units.len()), (magelang.name.as_str(), "jateng", 7));
        for (cut, whole) in s.units.iter().zip(&magelang.units) {
            assert_eq!(cut.products[..], whole.products[..2]);
        }
        assert_eq!((s.quality, sample.institutions[1].quality, s.service_users), (0, 3, 30));
        assert!(national.sample(&["kota-atlantis"], 2, 30, &[]).is_err());
    }
}
