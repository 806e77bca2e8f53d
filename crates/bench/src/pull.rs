//! Pull: ops served over the real HTTP API (pages of 1000, a regional peer's scope) to
//! one client and to 64 at once, against plain serde_json serialisation of the same
//! pages.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use sidak_core::wire::{PullResponse, CURSOR_HEADER, MORE_HEADER, PROTOCOL_HEADER};
use sidak_server::auth::Role;

use crate::report::{per_sec, rate, ratio, Row};
use crate::server::BenchServer;

/// Ops per page (the protocol's most).
pub const PAGE: usize = 1000;

/// Rounds of measurement; each figure is the best of its rounds.
const ROUNDS: usize = 5;

/// What a client reads of a page: the ops left unparsed, the cursor and whether more wait.
#[derive(serde::Deserialize)]
struct Page {
    ops: Vec<serde::de::IgnoredAny>,
    cursor: String,
    more: bool,
}

/// One client pulling everything from the start; returns the ops received. With `ahead`,
/// it asks for the next page as soon as a page's headers name its cursor (§5.4), so the
/// server writes that page while the client reads this one, as `sidak-field` does.
async fn pull_everything(client: &reqwest::Client, url: &str, token: &str, ahead: bool) -> Result<usize> {
    let request = |cursor: Option<&str>| {
        let path = match cursor {
            Some(c) => format!("{url}/v1/ops/pull?cursor={c}&limit={PAGE}"),
            None => format!("{url}/v1/ops/pull?limit={PAGE}"),
        };
        tokio::spawn(client.get(path).bearer_auth(token).header(PROTOCOL_HEADER, "1").send())
    };
    let mut next = Some(request(None));
    let mut n = 0;
    while let Some(pending) = next.take() {
        let response = pending.await??;
        let status = response.status();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (cursor, more) = (header(CURSOR_HEADER), header(MORE_HEADER));
        if ahead && status.is_success() && more.as_deref() == Some("true") {
            let Some(c) = &cursor else { bail!("a pull page with more to come named no cursor in its headers") };
            next = Some(request(Some(c)));
        }
        let bytes = response.bytes().await?;
        if !status.is_success() {
            bail!("pull answered {status}: {}", String::from_utf8_lossy(&bytes));
        }
        let page: Page = serde_json::from_slice(&bytes)?;
        if cursor.as_deref() != Some(page.cursor.as_str())
            || more.as_deref() != Some(if page.more { "true" } else { "false" })
        {
            bail!(
                "a pull page's headers ({cursor:?}, {more:?}) disagree with its body ({}, {})",
                page.cursor,
                page.more
            );
        }
        n += page.ops.len();
        if page.more && !ahead {
            next = Some(request(Some(&page.cursor)));
        }
    }
    Ok(n)
}

/// `clients` clients each pulling everything at once; returns ops served and wall time.
pub fn pull_clients(url: &str, token: &str, clients: usize, gzip: bool, ahead: bool) -> Result<(usize, Duration)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let client = reqwest::Client::builder().gzip(gzip).pool_max_idle_per_host(clients).build()?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (client, url, token) = (client.clone(), url.to_owned(), token.to_owned());
            tasks.push(tokio::spawn(async move { pull_everything(&client, &url, &token, ahead).await }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await??;
        }
        Ok((n, started.elapsed()))
    })
}

/// Every page, parsed (for the baseline).
fn all_pages(url: &str, token: &str) -> Result<Vec<PullResponse>> {
    let client = reqwest::blocking::Client::builder().gzip(false).build()?;
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{url}/v1/ops/pull?cursor={c}&limit={PAGE}"),
            None => format!("{url}/v1/ops/pull?limit={PAGE}"),
        };
        let page: PullResponse =
            client.get(path).bearer_auth(token).header(PROTOCOL_HEADER, "1").send()?.error_for_status()?.json()?;
        let more = page.more;
        cursor = Some(page.cursor.to_string());
        pages.push(page);
        if !more {
            return Ok(pages);
        }
    }
}

/// The pull benchmark on a server that holds `expected` ops of region `jateng`.
pub fn run(server: &BenchServer, expected: usize, many: usize) -> Result<Vec<Row>> {
    let token = server.token(Role::Peer, Some("jateng"), None)?;
    let url = server.url();
    let pages = all_pages(&url, &token)?;
    let ops: usize = pages.iter().map(|p| p.ops.len()).sum();
    if ops < expected {
        bail!("the peer pulled {ops} ops, fewer than the {expected} pushed");
    }
    // Baseline: serialising the same pages. It is timed in the same rounds as the pulls
    // below, one of each per round, best of each: one pass of a small store takes tens of
    // milliseconds, where a neighbour's burst on this shared machine shows, and measured
    // side by side a burst lands on both rather than on one alone.
    let serialise = || -> Result<Duration> {
        let started = Instant::now();
        for p in &pages {
            std::hint::black_box(serde_json::to_vec(p)?);
        }
        Ok(started.elapsed())
    };
    // (clients, gzip, next page asked ahead)
    let configs = [(1usize, false, false), (1, false, true), (1, true, true), (many, true, true)];
    let mut best = Duration::MAX;
    let mut pulled = configs.map(|_| (0usize, Duration::MAX));
    for _ in 0..ROUNDS {
        best = best.min(serialise()?);
        for (&(clients, gzip, ahead), fastest) in configs.iter().zip(&mut pulled) {
            let (served, t) = pull_clients(&url, &token, clients, gzip, ahead)?;
            if t < fastest.1 {
                *fastest = (served, t);
            }
        }
    }
    let baseline = per_sec(ops, best);
    // The pages as a client receives them, for their size, gzip and the client's read.
    let bodies = pages.iter().map(serde_json::to_vec).collect::<Result<Vec<_>, _>>()?;
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "pull: {ops} ops in {} pages ({bytes} bytes of JSON); serde_json serialises them at {}",
        pages.len(),
        rate(baseline)
    );
    // Where a page's time goes: the handler's query and writing each row's JSON,
    // in-process, best of the rounds; and what a client spends reading the pages back.
    let (mut decode, mut read) = (Duration::MAX, 0);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        read = server
            .state
            .db()
            .read_blocking(|tx| {
                let sql = format!("SELECT server_seq, received_at, quarantined, {} FROM ops WHERE server_seq > ?1 AND region = ?2 ORDER BY server_seq", sidak_server::ledger::OP_COLUMNS);
                let mut stmt = tx.prepare(&sql)?;
                let (mut n, mut body) = (0usize, Vec::new());
                let mut rows = stmt.query(rusqlite::params![0i64, "jateng"])?;
                while let Some(r) = rows.next()? {
                    sidak_server::ledger::write_pulled_op(r, &mut body)?;
                    n += 1;
                }
                std::hint::black_box(body);
                Ok::<_, sidak_server::error::ApiError>(n)
            })
            .map_err(|e| anyhow::anyhow!("read: {e}"))?;
        decode = decode.min(started.elapsed());
    }
    let mut parse = Duration::MAX;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for b in &bodies {
            std::hint::black_box(serde_json::from_slice::<Page>(b)?);
        }
        parse = parse.min(started.elapsed());
    }
    // gzip at the level the server answers with (1: tower-http's `Fastest`) and beside it.
    let mut levels =
        [(1u32, Duration::ZERO, 0usize), (2, Duration::ZERO, 0), (3, Duration::ZERO, 0), (6, Duration::ZERO, 0)];
    for b in &bodies {
        use std::io::Write as _;
        for (level, took, size) in &mut levels {
            let t = Instant::now();
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(*level));
            enc.write_all(b)?;
            *size += enc.finish()?.len();
            *took += t.elapsed();
        }
    }
    let gzip = levels
        .iter()
        .map(|(level, took, size)| {
            format!(
                "level {level} {:.2} µs/op ({:.1}× smaller)",
                took.as_secs_f64() * 1e6 / ops as f64,
                bytes as f64 / *size as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "pull breakdown, in-process: SELECT + ledger::write_pulled_op of {read} ops {} ({:.2} µs/op); a client reading the pages {:.2} µs/op; serde_json {:.2} µs/op; gzip {gzip}",
        crate::report::time(decode),
        decode.as_secs_f64() * 1e6 / read as f64,
        parse.as_secs_f64() * 1e6 / ops as f64,
        best.as_secs_f64() * 1e6 / ops as f64,
    );
    let mut rows = Vec::new();
    for (&(clients, gzip, ahead), &(n, took)) in configs.iter().zip(&pulled) {
        let ours = per_sec(n, took);
        let how = match (gzip, ahead) {
            (false, false) => "identity, a page at a time",
            (false, true) => "identity",
            (true, _) => "gzip",
        };
        println!("pull, {clients} client(s), {how}: {n} ops in {:.2} s = {}", took.as_secs_f64(), rate(ours));
        let row =
            Row::info(format!("pull, {clients} client(s), {how}"), rate(ours), rate(baseline), ratio(ours / baseline));
        rows.push(if clients == 1 && ahead { row.target("≥ 0.5× serde_json", ours >= baseline / 2.0) } else { row });
    }
    Ok(rows)
}
