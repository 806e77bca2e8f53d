//! One table for every benchmark: Sidak's figure, the raw baseline measured in the
//! same run, the ratio, the target and whether it is met.

use std::time::Duration;

/// One line of the table.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Sidak's figure.
    pub sidak: String,
    /// The raw baseline's figure (empty where there is none).
    pub baseline: String,
    /// Sidak ÷ baseline, in the sense that says how far Sidak is from the baseline.
    pub ratio: String,
    /// The target.
    pub target: String,
    /// Whether the target is met (None: no target).
    pub met: Option<bool>,
}

impl Row {
    /// A row without a target.
    pub fn info(name: impl Into<String>, sidak: impl Into<String>, baseline: impl Into<String>, ratio: String) -> Row {
        Row {
            name: name.into(),
            sidak: sidak.into(),
            baseline: baseline.into(),
            ratio,
            target: String::new(),
            met: None,
        }
    }

    /// Adds a target and whether it is met.
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

/// Per second.
pub fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// `123.4k ops/s`.
pub fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M ops/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k ops/s", r / 1e3)
    } else {
        format!("{r:.0} ops/s")
    }
}

/// `1.23 s`, `4.56 ms`, `789 µs`.
pub fn time(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// `12.3 MB`.
pub fn bytes(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else {
        format!("{:.1} kB", n as f64 / 1e3)
    }
}

/// `0.42×`.
pub fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

/// Prints the table as Markdown.
pub fn print(title: &str, rows: &[Row]) {
    println!("\n### {title}\n");
    println!("| measurement | Sidak | raw baseline | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!("| {} | {} | {} | {} | {} | {met} |", r.name, r.sidak, r.baseline, r.ratio, r.target);
    }
}

/// Median and 99th percentile.
pub fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}
