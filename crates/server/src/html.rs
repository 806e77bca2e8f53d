//! Server-rendered HTML for people: escaping, the page shell with its inline style
//! sheet (screen and print; no scripts, no external assets, so pages work on an
//! office LAN without internet and print cleanly to PDF), and small formatting helpers
//! shared by the dashboard and the report card.

use std::fmt::Write as _;

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one path segment or query value (everything but `A-Z a-z 0-9 - _ . ~`).
pub fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space); `None` when the
/// result is not UTF-8.
pub fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3).and_then(hex_byte) {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

/// The `name=value` pairs of a query string or form body, decoded.
pub fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((form_decode(k)?, form_decode(v)?))
        })
        .collect()
}

/// A time for people: RFC 3339 in UTC, to the second.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// The Indonesian name of a zone, as the assessment publishes it.
pub fn zone_name(zone: &str) -> &str {
    match zone {
        "green" => "hijau",
        "yellow" => "kuning",
        "red" => "merah",
        other => other,
    }
}

/// A `<td>` for a zone: `class="zone"`, `data-zone` the document's name, the colour
/// from the style sheet and the Indonesian name as text (empty without a zone).
pub fn zone_cell(zone: Option<&str>) -> String {
    match zone {
        Some(z) => format!(r#"<td class="zone zone-{0}" data-zone="{0}">{1}</td>"#, esc(z), esc(zone_name(z))),
        None => r#"<td class="zone" data-zone="">—</td>"#.to_owned(),
    }
}

/// A score for a table: the published figure, or the provisional one in brackets
/// (never graded), or a dash.
pub fn score_text(score: Option<&str>, provisional: Option<&str>) -> String {
    match (score, provisional) {
        (Some(s), _) => s.to_owned(),
        (None, Some(p)) => format!("({p})"),
        (None, None) => "—".to_owned(),
    }
}

const STYLE: &str = r#"
:root { --green: #1e8e3e; --yellow: #f2c500; --red: #d93025; --ink: #1f1f1f; --muted: #5f6368; --line: #dadce0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; color: var(--ink); margin: 0; }
header.top { background: #12355b; color: #fff; padding: 8px 20px; display: flex; gap: 18px; align-items: baseline; flex-wrap: wrap; }
header.top a { color: #fff; text-decoration: none; }
header.top nav a { margin-right: 14px; }
header.top .brand { font-weight: 700; font-size: 16px; }
header.top form { margin: 0 0 0 auto; }
header.top button { background: none; border: 1px solid #fff; color: #fff; border-radius: 3px; cursor: pointer; }
main { padding: 16px 20px 40px; max-width: 1200px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 22px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 3px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p.meta, .muted { color: var(--muted); }
table { border-collapse: collapse; margin: 6px 0 12px; min-width: 50%; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f1f3f4; font-weight: 600; }
td.num, th.num, td.score, td.rank { text-align: right; font-variant-numeric: tabular-nums; }
td.zone { font-weight: 600; }
.zone-green { background: var(--green); color: #fff; }
.zone-yellow { background: var(--yellow); color: #000; }
.zone-red { background: var(--red); color: #fff; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 3px; font-weight: 700; }
.status-incomplete { color: #b06000; font-weight: 600; }
.verdict-failed { color: var(--red); font-weight: 700; }
.verdict-weak { color: #b06000; font-weight: 700; }
.corrected { color: #8430ce; }
.headline { display: flex; gap: 24px; align-items: center; flex-wrap: wrap; margin: 10px 0; }
.headline .figure { font-size: 34px; font-weight: 700; }
.headline .grade { font-size: 34px; font-weight: 700; }
img.thumb { max-width: 160px; max-height: 120px; border: 1px solid var(--line); display: block; margin: 4px 0; }
img.full { max-width: 100%; border: 1px solid var(--line); }
ul.missing li, ul.evidence li { margin: 2px 0; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12px; word-break: break-all; }
p.error { background: #fce8e6; border: 1px solid var(--red); padding: 8px 12px; }
form.login input[type=password] { width: 32em; max-width: 100%; padding: 6px; }
nav.seasons a, nav.crumbs a { margin-right: 10px; }
@media print {
  header.top, nav, .noprint, form { display: none !important; }
  main { padding: 0; max-width: none; }
  body { font-size: 11pt; }
  a { color: inherit; text-decoration: none; }
  table { width: 100%; }
  tr, img, li { page-break-inside: avoid; break-inside: avoid; }
  h2 { page-break-after: avoid; break-after: avoid; }
  .zone-green, .zone-yellow, .zone-red, th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  @page { size: A4; margin: 14mm; }
}
"#;

/// A whole page: `title` (escaped here), an optional top bar of dashboard links, and
/// `body` (already HTML).
pub fn page(title: &str, top_bar: Option<&str>, body: &str) -> String {
    let bar = top_bar.unwrap_or("");
    format!(
        "<!DOCTYPE html>\n<html lang=\"id\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{bar}<main>\n{body}\n</main>\n</body>\n</html>\n",
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralises_markup_in_text_and_attributes() {
        let check = |input: &str, expected: &str| assert_eq!(esc(input), expected, "{input}");
        check("Kota <script>alert(1)</script>", "Kota &lt;script&gt;alert(1)&lt;/script&gt;");
        check(r#"" onmouseover="x"#, "&quot; onmouseover=&quot;x");
        check("O'Brien & Sons", "O&#39;Brien &amp; Sons");
        check("Dinas Kependudukan — ✓", "Dinas Kependudukan — ✓");
        check("", "");
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(seg("kota-x.unit_1~"), "kota-x.unit_1~");
        assert_eq!(seg("a/b?c=d&e f"), "a%2Fb%3Fc%3Dd%26e%20f");
        assert_eq!(seg("<x>"), "%3Cx%3E");
    }

    #[test]
    fn forms_decode() {
        assert_eq!(form_decode("a+b%20c%2Fd"), Some("a b c/d".to_owned()));
        assert_eq!(form_decode("100%"), Some("100%".to_owned()));
        assert_eq!(form_decode("%zz"), Some("%zz".to_owned()));
        assert_eq!(form_decode("%ff"), None, "not UTF-8");
        assert_eq!(
            form_pairs("token=sdk_1&next=%2Fdashboard%3Fx%3D1&&flag"),
            vec![
                ("token".to_owned(), "sdk_1".to_owned()),
                ("next".to_owned(), "/dashboard?x=1".to_owned()),
                ("flag".to_owned(), String::new())
            ]
        );
    }
}
