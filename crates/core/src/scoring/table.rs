//! A readable table of a season's results, for terminals.

use std::fmt::Write;

use super::result::*;

/// Renders the result tree: institutions, their units and products, with scores,
/// grades and zones; incomplete results show their provisional figure in brackets.
pub fn render_table(results: &SeasonResult, title: &str) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "INSTITUTION / UNIT / PRODUCT".into(),
        "TYPE".into(),
        "SCORE".into(),
        "GRADE".into(),
        "ZONE".into(),
        "STATUS".into(),
    ]];
    let mut notes: Vec<String> = Vec::new();
    for inst in &results.institutions {
        rows.push(row(&inst.name, &inst.kind, &inst.outcome));
        for unit in &inst.units {
            rows.push(row(&format!("  {}", unit.name), &unit.unit_type, &unit.outcome));
            for product in &unit.products {
                rows.push(row(&format!("    {}", product.name), product.location.name(), &product.outcome));
            }
        }
        let dims: Vec<String> = inst.dimensions.iter().map(|d| format!("{} {}", d.id, figure(&d.outcome))).collect();
        let mut note = format!("{} — rule: {}; dimensions: {}", inst.name, inst.rule, dims.join(" · "));
        if let Some(before) = inst.before_deductions {
            let _ = write!(note, "; before deductions {before}");
        }
        if !inst.missing.is_empty() {
            let shown: Vec<&str> = inst.missing.iter().take(5).map(String::as_str).collect();
            let _ = write!(note, "\n    missing ({}): {}", inst.missing.len(), shown.join("; "));
            if inst.missing.len() > 5 {
                note.push_str("; … (--json lists all)");
            }
        }
        notes.push(note);
    }
    let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    let _ = writeln!(out, "{title}\n");
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(
                |(c, cell)| {
                    if c == 2 {
                        format!("{cell:>w$}", w = widths[c])
                    } else {
                        format!("{cell:<w$}", w = widths[c])
                    }
                },
            )
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            let _ = writeln!(out, "{n}");
        }
    }
    out
}

fn figure(o: &Outcome) -> String {
    match (o.score, o.provisional) {
        (Some(s), _) => s.to_string(),
        (None, Some(p)) => format!("({p})"),
        (None, None) => "—".into(),
    }
}

fn row(name: &str, kind: &str, o: &Outcome) -> [String; 6] {
    let (grade, zone) = match &o.grading {
        Some(g) => (g.grade.clone(), g.zone.map(|z| z.name().to_owned()).unwrap_or_default()),
        None => (String::new(), String::new()),
    };
    let status = match o.status {
        Status::Complete => "complete",
        Status::Incomplete => "incomplete",
        Status::NotApplicable => "n/a",
    };
    [name.to_owned(), kind.to_owned(), figure(o), grade, zone, status.to_owned()]
}
