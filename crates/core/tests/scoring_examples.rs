//! The figures that docs/scoring.md and the built-in instruments publish, recomputed:
//! the worked example (§10) and its incomplete variant (§7), the IKM rounding pitfall
//! (§2 and `ikm-2017`'s `choices`). A scoring change that moves any of them fails here,
//! and so does a doc or instrument text that drifts from the program.

use std::collections::BTreeMap;

use serde_json::json;
use sidak_core::instrument::{builtin, Instrument};
use sidak_core::num::{Exact, Published};
use sidak_core::scoring::{render_table, score_season, SeasonInput, SeasonResult, Status};

const SCORING_MD: &str = include_str!("../../../docs/scoring.md");
const WORKED_EXAMPLE: &str = include_str!("../../../docs/examples/worked-example.json");

fn worked_example() -> SeasonInput {
    serde_json::from_str(WORKED_EXAMPLE).unwrap()
}

fn score(season: &SeasonInput) -> (Instrument, SeasonResult) {
    let instrument = builtin(season.instrument.as_deref().unwrap()).unwrap();
    let results = score_season(&instrument, season).unwrap_or_else(|e| panic!("{e}"));
    (instrument, results)
}

/// The title `sidak-field score` prints above the table.
fn title(instrument: &Instrument, season: &SeasonInput) -> String {
    format!("{} — {}, season {}", instrument.reference, instrument.title, season.season.as_deref().unwrap())
}

/// The fenced block of docs/scoring.md that follows `marker`, without the marker's
/// own `$ command` line.
fn doc_block(marker: &str) -> String {
    let after = &SCORING_MD[SCORING_MD.find(marker).unwrap_or_else(|| panic!("{marker:?} not in scoring.md"))..];
    let start = after.find("```\n").unwrap() + 4;
    let body = &after[start..];
    let body = &body[..body.find("```").unwrap()];
    body.lines().filter(|l| !l.starts_with("$ ")).map(|l| format!("{l}\n")).collect()
}

/// (id, status, figure, grade) of the institution and each of its units; an
/// incomplete figure is its provisional one in brackets.
fn outcomes(results: &SeasonResult) -> Vec<(String, Status, String, String)> {
    let row = |id: &str, o: &sidak_core::scoring::Outcome| {
        let figure = match (o.score, o.provisional) {
            (Some(s), _) => s.to_string(),
            (None, Some(p)) => format!("({p})"),
            (None, None) => String::new(),
        };
        (id.to_owned(), o.status, figure, o.grading.as_ref().map(|g| g.grade.clone()).unwrap_or_default())
    };
    let mut out = Vec::new();
    for inst in &results.institutions {
        out.push(row(&inst.id, &inst.outcome));
        out.extend(inst.units.iter().map(|u| row(&u.id, &u.outcome)));
    }
    out
}

fn check(results: &SeasonResult, expected: &[(&str, Status, &str, &str)]) {
    let expected: Vec<_> =
        expected.iter().map(|(id, s, f, g)| ((*id).to_owned(), *s, (*f).to_owned(), (*g).to_owned())).collect();
    assert_eq!(outcomes(results), expected);
}

#[test]
fn the_worked_example_scores_as_section_10_states() {
    let season = worked_example();
    let (instrument, results) = score(&season);
    check(
        &results,
        &[
            ("kota-contoh", Status::Complete, "77.60", "B"),
            ("kota-contoh.disdukcapil", Status::Complete, "66.88", "C"),
            ("kota-contoh.dpmptsp", Status::Complete, "88.33", "A"),
        ],
    );
    let inst = &results.institutions[0];
    assert_eq!(inst.rule, "mean");
    assert_eq!(inst.outcome.grading.as_ref().unwrap().zone, None, "the IKM has no zones");
    assert_eq!(
        inst.dimensions.iter().map(|d| (d.id.as_str(), d.outcome.score)).collect::<Vec<_>>(),
        [("ikm", Some("77.60".parse().unwrap()))]
    );

    // "The program agrees": the table in the doc is exactly what the program prints.
    let table = render_table(&results, &title(&instrument, &season));
    assert_eq!(table, doc_block("The program agrees:"));

    // "With `--json`, the DPMPTSP elements score 90.00, 87.50, …".
    let dpmptsp = inst.units.iter().find(|u| u.id == "kota-contoh.dpmptsp").unwrap();
    let elements: Vec<String> = dpmptsp.dimensions[0].children[0]
        .children
        .iter()
        .map(|n| n.outcome.score.map(|s| s.to_string()).unwrap_or_default())
        .collect();
    assert_eq!(elements, ["90.00", "87.50", "82.50", "85.00", "90.00", "92.50", "95.00", "85.00", "87.50"]);
    // "Disdukcapil's U4 node is {…}".
    let disdukcapil = inst.units.iter().find(|u| u.id == "kota-contoh.disdukcapil").unwrap();
    let u4 = disdukcapil.dimensions[0].children[0].children.iter().find(|n| n.id == "ikm.u4-biaya-tarif").unwrap();
    assert_eq!(
        serde_json::to_value(u4).unwrap(),
        json!({"id": "ikm.u4-biaya-tarif", "respondents": 0, "status": "not_applicable", "weight": "1/9"})
    );
}

/// Per unit and element, (how many answered 4, 3, 2, 1, N/A; the total of the answers).
fn tallies(season: &SeasonInput) -> BTreeMap<(String, String), ([u32; 5], i64)> {
    let mut out: BTreeMap<(String, String), ([u32; 5], i64)> = BTreeMap::new();
    for unit in &season.institutions[0].units {
        for r in &unit.respondents {
            for (element, answer) in &r.answers {
                let slot = out.entry((unit.id.clone(), element.clone())).or_default();
                match answer.value.as_i64() {
                    Some(v) => {
                        slot.0[(4 - v) as usize] += 1;
                        slot.1 += v;
                    }
                    None => {
                        assert_eq!(answer.value, json!({"na": true}));
                        slot.0[4] += 1;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn the_worked_example_file_holds_the_answers_of_the_table_in_section_10() {
    let season = worked_example();
    let tallies = tallies(&season);
    // (element, DPMPTSP 4s/3s/2s and total, Disdukcapil 4s/3s/2s/1s and total; None: N/A ×10)
    #[allow(clippy::type_complexity)]
    let table: [(&str, [u32; 3], i64, Option<([u32; 4], i64)>); 9] = [
        ("ikm.u1-persyaratan", [6, 4, 0], 36, Some(([1, 6, 3, 0], 28))),
        ("ikm.u2-prosedur", [5, 5, 0], 35, Some(([1, 5, 4, 0], 27))),
        ("ikm.u3-waktu", [4, 5, 1], 33, Some(([0, 6, 3, 1], 25))),
        ("ikm.u4-biaya-tarif", [4, 6, 0], 34, None),
        ("ikm.u5-produk", [6, 4, 0], 36, Some(([2, 5, 3, 0], 29))),
        ("ikm.u6-kompetensi", [7, 3, 0], 37, Some(([1, 6, 2, 1], 27))),
        ("ikm.u7-perilaku", [8, 2, 0], 38, Some(([1, 5, 3, 1], 26))),
        ("ikm.u8-sarana", [5, 4, 1], 34, Some(([0, 5, 4, 1], 24))),
        ("ikm.u9-pengaduan", [6, 3, 1], 35, Some(([2, 4, 4, 0], 28))),
    ];
    let key = |unit: &str, element: &str| (format!("kota-contoh.{unit}"), element.to_owned());
    for (element, counts, total, disdukcapil) in table {
        let [a, b, c] = counts;
        assert_eq!(tallies[&key("dpmptsp", element)], ([a, b, c, 0, 0], total), "DPMPTSP {element}");
        let expected = match disdukcapil {
            Some(([a, b, c, d], total)) => ([a, b, c, d, 0], total),
            None => ([0, 0, 0, 0, 10], 0),
        };
        assert_eq!(tallies[&key("disdukcapil", element)], expected, "Disdukcapil {element}");
    }
    let sum = |unit: &str| tallies.iter().filter(|((u, _), _)| u.ends_with(unit)).map(|(_, (_, t))| t).sum::<i64>();
    assert_eq!((sum(".dpmptsp"), sum(".disdukcapil")), (318, 214), "the Σ row");
}

#[test]
fn the_arithmetic_of_section_10_holds() {
    let instrument = builtin("ikm-2017").unwrap();
    let publish = |x: &Exact| x.publish().to_string();
    let grade = |x: &Exact| instrument.band_for(x.publish()).unwrap().grade.clone();
    let (scale_min, span) = (Exact::from_int(25), Exact::from_int(75));
    // Step 2: DPMPTSP U1 attains (6 × 1 + 4 × 2/3)/10 = 13/15 and scores 90.00.
    let u1 = (Exact::from_int(6) + Exact::from_int(4) * Exact::ratio(2, 3)) * Exact::ratio(1, 10);
    assert_eq!(u1, Exact::ratio(13, 15));
    assert_eq!(publish(&(&scale_min + &(&u1 * &span))), "90.00");
    // Steps 3 and 4: (31.8 − 9)/27 = 38/45; 25 + 38/45 × 75 = 265/3 → 88.33, A.
    let dpmptsp_attain = ("31.8".parse::<Exact>().unwrap() - Exact::from_int(9)) * Exact::ratio(1, 27);
    assert_eq!(dpmptsp_attain, Exact::ratio(38, 45));
    let dpmptsp = &scale_min + &(dpmptsp_attain * &span);
    assert_eq!(dpmptsp, Exact::ratio(265, 3));
    assert_eq!((publish(&dpmptsp), grade(&dpmptsp)), ("88.33".into(), "A".into()));
    // With 0.11 weights: 31.8 × 0.11 × 25 = 87.45, a B.
    let rounded = "31.8".parse::<Exact>().unwrap() * "0.11".parse::<Exact>().unwrap() * Exact::from_int(25);
    assert_eq!((publish(&rounded), grade(&rounded)), ("87.45".into(), "B".into()));
    // Step 5: (21.4 − 8)/24 = 67/120; 25 + 67/120 × 75 = 535/8 = 66.875 → 66.88, C.
    let disdukcapil_attain = ("21.4".parse::<Exact>().unwrap() - Exact::from_int(8)) * Exact::ratio(1, 24);
    assert_eq!(disdukcapil_attain, Exact::ratio(67, 120));
    let disdukcapil = &scale_min + &(disdukcapil_attain * &span);
    assert_eq!(disdukcapil, Exact::ratio(535, 8));
    assert_eq!((publish(&disdukcapil), grade(&disdukcapil)), ("66.88".into(), "C".into()));
    // Step 6: (265/3 + 535/8)/2 = 3725/48 → 77.60, B; the published units would give 77.61.
    let institution = (dpmptsp + disdukcapil) * Exact::ratio(1, 2);
    assert_eq!(institution, Exact::ratio(3725, 48));
    assert_eq!((publish(&institution), grade(&institution)), ("77.60".into(), "B".into()));
    let of_published = ("88.33".parse::<Exact>().unwrap() + "66.88".parse::<Exact>().unwrap()) * Exact::ratio(1, 2);
    assert_eq!((of_published.to_text(), publish(&of_published)), ("77.605".into(), "77.61".into()));
}

#[test]
fn the_incomplete_variant_of_section_7_prints_as_shown() {
    // "With one questionnaire removed from the worked example": DPMPTSP's last one.
    let mut season = worked_example();
    let dpmptsp = season.institutions[0].units.iter_mut().find(|u| u.id == "kota-contoh.dpmptsp").unwrap();
    let removed = dpmptsp.respondents.pop().unwrap();
    assert_eq!(removed.id, "dpmptsp-r10");
    let (instrument, results) = score(&season);
    check(
        &results,
        &[
            ("kota-contoh", Status::Incomplete, "(77.42)", ""),
            ("kota-contoh.disdukcapil", Status::Complete, "66.88", "C"),
            ("kota-contoh.dpmptsp", Status::Incomplete, "(87.96)", ""),
        ],
    );
    // The doc shows the table without its title and header.
    let table = render_table(&results, &title(&instrument, &season));
    let body: String = table.lines().skip(3).map(|l| format!("{l}\n")).collect();
    assert_eq!(body, doc_block("from the worked example (§10):"));
}

/// The IKM rounding pitfall: the exact 1/9 weights publish 91.48 on the regulation's
/// example [52]; 0.11 weights give 90.56 and 0.1111 weights (on means rounded to four
/// decimals) 91.47. The `ikm-2017` instrument and docs/scoring.md §2 quote these.
#[test]
fn the_rounding_figures_quoted_for_ikm_2017_are_the_computed_ones() {
    let totals = [105, 101, 100, 116, 102, 105, 106, 105, 115];
    let exact: Exact = totals.iter().map(|t| Exact::ratio(*t, 29 * 9)).sum::<Exact>() * Exact::from_int(25);
    let means_4dp: Vec<Exact> = totals
        .iter()
        .map(|t| {
            // Rounded to four decimals: publishing t × 100/29 rounds t/29 × 10⁴.
            Exact::ratio(Exact::ratio(*t * 100, 29).publish().hundredths(), 10_000)
        })
        .collect();
    let weighted = |w: &str, means: &[Exact]| {
        let w: Exact = w.parse().unwrap();
        means.iter().map(|m| m * &w).sum::<Exact>() * Exact::from_int(25)
    };
    let exact_means: Vec<Exact> = totals.iter().map(|t| Exact::ratio(*t, 29)).collect();
    let figures = [
        exact.publish(),
        weighted("0.11", &exact_means).publish(),
        weighted("0.11", &means_4dp).publish(),
        weighted("0.1111", &means_4dp).publish(),
    ];
    let expected: [Published; 4] = ["91.48", "90.56", "90.56", "91.47"].map(|s| s.parse().unwrap());
    assert_eq!(figures, expected);

    let instrument = builtin("ikm-2017").unwrap();
    let choice = &instrument.choices[0];
    for quoted in [
        "weights of 0.11 give 90.56 instead of the exact 91.48",
        "weights of 0.1111, with element means rounded to four decimals, would give 91.47",
    ] {
        assert!(choice.contains(quoted), "ikm-2017 choices[0] no longer says {quoted:?}: {choice}");
    }
    assert!(SCORING_MD.contains("rounds that weight to 0.11, which turns **91.48** into\n**90.56**"));
}
