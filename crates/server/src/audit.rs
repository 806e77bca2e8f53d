//! The audit log: one entry per admin or supervisor action — who (token id, label and
//! role, or `cli` for the command line on the data directory), when, what (the
//! endpoint or command, and a summary) and the result. An action that succeeds is
//! written in the same transaction as its entry, so neither exists without the
//! other; one that is refused after its role check gets an entry of its own with the
//! refusal. The table is append-only: SQLite triggers refuse every UPDATE and DELETE
//! of it (migration 6).

use rusqlite::{params, Transaction};
use serde::Serialize;

use crate::admin::ImportReport;
use crate::auth::{Principal, Rotated, TokenView};
use crate::db::Db;
use crate::error::ApiError;
use crate::review::{CorrectionView, NewCorrection, Resolution, Resolved, Withdrawal, Written};
use crate::state::AppState;

/// How an action reached the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The HTTP API, with a token.
    Http,
    /// `sidak-server` on the data directory.
    Cli,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Cli => "cli",
        }
    }
}

/// Who acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The token's id, or `cli`.
    pub id: String,
    /// The token's role, or `cli`.
    pub role: String,
    /// A label: the token's (read from the store when the entry is written), or for
    /// the command line the operator's name.
    pub label: Option<String>,
    /// The token's region (supervisors).
    pub region: Option<String>,
    /// How.
    pub via: Via,
}

impl Actor {
    /// The caller of a request.
    pub fn token(who: &Principal) -> Actor {
        Actor {
            id: who.token_id.clone(),
            role: who.role.name().to_owned(),
            label: None,
            region: who.region.clone(),
            via: Via::Http,
        }
    }

    /// The command line acting on the data directory, as `label` (the operator).
    pub fn cli(label: Option<String>) -> Actor {
        Actor { id: "cli".into(), role: "cli".into(), label, region: None, via: Via::Cli }
    }
}

/// What kind of action an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A token made.
    TokenCreate,
    /// A token revoked.
    TokenRevoke,
    /// A token rotated.
    TokenRotate,
    /// An instrument published.
    InstrumentPublish,
    /// A registry CSV imported.
    RegistryImport,
    /// An assignment made.
    AssignmentCreate,
    /// Every result recomputed.
    Recompute,
    /// A correction made.
    CorrectionCreate,
    /// A correction withdrawn.
    CorrectionWithdraw,
    /// A conflict resolved with a correction.
    ConflictResolve,
    /// A backup of the store.
    Backup,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 11] = [
        Kind::TokenCreate,
        Kind::TokenRevoke,
        Kind::TokenRotate,
        Kind::InstrumentPublish,
        Kind::RegistryImport,
        Kind::AssignmentCreate,
        Kind::Recompute,
        Kind::CorrectionCreate,
        Kind::CorrectionWithdraw,
        Kind::ConflictResolve,
        Kind::Backup,
    ];

    /// The name stored and listed (`token.create`, …).
    pub fn name(self) -> &'static str {
        match self {
            Kind::TokenCreate => "token.create",
            Kind::TokenRevoke => "token.revoke",
            Kind::TokenRotate => "token.rotate",
            Kind::InstrumentPublish => "instrument.publish",
            Kind::RegistryImport => "registry.import",
            Kind::AssignmentCreate => "assignment.create",
            Kind::Recompute => "recompute",
            Kind::CorrectionCreate => "correction.create",
            Kind::CorrectionWithdraw => "correction.withdraw",
            Kind::ConflictResolve => "conflict.resolve",
            Kind::Backup => "backup",
        }
    }
}

/// An action about to run: its kind, the endpoint (`POST /v1/admin/tokens`) or
/// command (`sidak-server token create`), and what was asked, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// The kind.
    pub kind: Kind,
    /// The endpoint or command.
    pub what: String,
    /// What was asked (the summary of a refused action).
    pub asked: String,
}

impl Action {
    /// An action.
    pub fn new(kind: Kind, what: impl Into<String>, asked: impl Into<String>) -> Action {
        Action { kind, what: what.into(), asked: asked.into() }
    }
}

/// What an action did: a summary, and the region it concerned (`None`: every region,
/// or none in particular), which decides which supervisors see the entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    /// What was done, in words.
    pub summary: String,
    /// The region concerned.
    pub region: Option<String>,
}

impl Done {
    /// Done, concerning no region in particular.
    pub fn new(summary: impl Into<String>) -> Done {
        Done { summary: summary.into(), region: None }
    }

    /// Concerning `region`.
    pub fn in_region(self, region: Option<String>) -> Done {
        Done { region, ..self }
    }
}

/// The longest refusal message kept in an entry.
const MAX_MESSAGE: usize = 500;

/// Appends the entry of `action` by `actor` at `at_ms`: done, or refused with `error`.
/// Returns its id.
pub fn append(
    tx: &Transaction<'_>,
    actor: &Actor,
    action: &Action,
    at_ms: i64,
    outcome: Result<&Done, &ApiError>,
) -> Result<i64, ApiError> {
    let (summary, region, result) = match outcome {
        Ok(done) => (done.summary.clone(), done.region.clone().or(actor.region.clone()), "ok".to_owned()),
        Err(e) => {
            let mut message = e.message.clone();
            if message.len() > MAX_MESSAGE {
                let cut = (0..=MAX_MESSAGE).rev().find(|i| message.is_char_boundary(*i)).unwrap_or(0);
                message.truncate(cut);
                message.push('…');
            }
            (
                format!("{}: refused: {message}", action.asked),
                actor.region.clone(),
                format!("{} {}", e.status.as_u16(), e.code),
            )
        }
    };
    tx.prepare_cached(
        "INSERT INTO audit (at, actor, actor_role, actor_label, region, via, kind, action, summary, result)
         VALUES (?1, ?2, ?3, COALESCE(?4, (SELECT label FROM tokens WHERE id = ?2)), ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        at_ms,
        actor.id,
        actor.role,
        actor.label,
        region,
        actor.via.name(),
        action.kind.name(),
        action.what,
        summary,
        result
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Runs `f` in a write transaction together with the entry of what it did; when it
/// fails, records the refusal in a transaction of its own and returns the error.
pub async fn audited<T, F>(state: &AppState, actor: Actor, action: Action, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&Transaction<'_>) -> Result<(T, Done), ApiError> + Send + 'static,
    T: Send + 'static,
{
    let now = state.now();
    let (who, what) = (actor.clone(), action.clone());
    let result = state
        .db()
        .write(move |tx| {
            let (out, done) = f(tx)?;
            append(tx, &who, &what, now, Ok(&done))?;
            Ok::<_, ApiError>(out)
        })
        .await;
    if let Err(e) = &result {
        let refusal = e.clone();
        let written = state.db().write(move |tx| append(tx, &actor, &action, now, Err(&refusal))).await;
        if let Err(failed) = written {
            tracing::error!(error = %failed, "could not record a refused action in the audit log");
        }
    }
    result
}

/// [`audited`] on the calling thread (the command line).
pub fn audited_blocking<T>(
    db: &Db,
    actor: &Actor,
    action: &Action,
    now_ms: i64,
    f: impl FnOnce(&Transaction<'_>) -> Result<(T, Done), ApiError>,
) -> Result<T, ApiError> {
    let result = db.write_blocking(|tx| {
        let (out, done) = f(tx)?;
        append(tx, actor, action, now_ms, Ok(&done))?;
        Ok(out)
    });
    if let Err(e) = &result {
        record_blocking(db, actor, action, now_ms, Err(e))?;
    }
    result
}

/// Records an action that ran outside a store transaction (a backup).
pub fn record_blocking(
    db: &Db,
    actor: &Actor,
    action: &Action,
    now_ms: i64,
    outcome: Result<&Done, &ApiError>,
) -> Result<(), ApiError> {
    db.write_blocking(|tx| append(tx, actor, action, now_ms, outcome).map(|_| ()))
}

/// Who acted, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Who {
    /// The token's id, or `cli`.
    pub token: String,
    /// Its role, or `cli`.
    pub role: String,
    /// Its label (the operator's name for `cli`).
    pub label: Option<String>,
}

/// One entry of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Rising with every entry: `since` for the next page.
    pub id: i64,
    /// When (ms since 1970).
    pub at: i64,
    /// Who.
    pub who: Who,
    /// The region concerned (`null`: every region, or none in particular).
    pub region: Option<String>,
    /// `http` or `cli`.
    pub via: String,
    /// The kind of action (`token.create`, …).
    pub kind: String,
    /// The endpoint or command.
    pub action: String,
    /// What was asked and done, in words.
    pub summary: String,
    /// `ok`, or the refusal's status and code (`403 scope_forbidden`).
    pub result: String,
}

impl AuditEntry {
    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "#{} {} {} {}{} [{}] {} {} — {} — {}",
            self.id,
            crate::html::time(self.at),
            self.who.role,
            self.who.token,
            self.who.label.as_deref().map(|l| format!(" \"{l}\"")).unwrap_or_default(),
            self.region.as_deref().unwrap_or("-"),
            self.kind,
            self.action,
            self.summary,
            self.result
        )
    }
}

/// The most entries one listing returns.
pub const MAX_LIMIT: usize = 1_000;

/// Entries after `since`, oldest first, at most `limit`; only those concerning
/// `region` when one is given.
pub fn list(tx: &Transaction<'_>, region: Option<&str>, since: i64, limit: usize) -> Result<Vec<AuditEntry>, ApiError> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, at, actor, actor_role, actor_label, region, via, kind, action, summary, result FROM audit
         WHERE id > ?1 AND (?2 IS NULL OR region = ?2) ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![since, region, limit.min(MAX_LIMIT) as i64], |r| {
        Ok(AuditEntry {
            id: r.get(0)?,
            at: r.get(1)?,
            who: Who { token: r.get(2)?, role: r.get(3)?, label: r.get(4)? },
            region: r.get(5)?,
            via: r.get(6)?,
            kind: r.get(7)?,
            action: r.get(8)?,
            summary: r.get(9)?,
            result: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------------------------
// Summaries, shared by the HTTP API and the command line so both write the same.

fn token_scope(t: &TokenView) -> String {
    let mut out = t.role.name().to_owned();
    if let Some(r) = &t.region {
        out.push_str(&format!(", region {r}"));
    }
    if let Some(a) = &t.assessor {
        out.push_str(&format!(", assessor {a}"));
    }
    if let Some(l) = &t.label {
        out.push_str(&format!(", label \"{l}\""));
    }
    out
}

/// A token made.
pub fn token_created(t: &TokenView) -> Done {
    let expires = t.expires_at.map(|at| format!(", expires {}", crate::html::time(at))).unwrap_or_default();
    Done::new(format!("created {} ({}{expires})", t.id, token_scope(t))).in_region(t.region.clone())
}

/// A token revoked.
pub fn token_revoked(t: &TokenView) -> Done {
    Done::new(format!("revoked {} ({})", t.id, token_scope(t))).in_region(t.region.clone())
}

/// A token rotated.
pub fn token_rotated(r: &Rotated) -> Done {
    let until = r.replaced.revoked_at.map(crate::html::time).unwrap_or_default();
    Done::new(format!(
        "rotated {} to {} ({}); the old secret works until {until}",
        r.replaced.id,
        r.token.id,
        token_scope(&r.token)
    ))
    .in_region(r.token.region.clone())
}

/// An instrument published (or found published already).
pub fn published(reference: &impl std::fmt::Display, digest: &str, added: bool) -> Done {
    Done::new(if added {
        format!("published {reference} (digest {digest})")
    } else {
        format!("{reference} (digest {digest}) was already published: nothing written")
    })
}

/// A registry imported.
pub fn imported(r: &ImportReport) -> Done {
    Done::new(format!(
        "imported {} row(s): {} institution(s), {} unit(s), {} product(s) added, {} field(s) changed",
        r.rows, r.institutions_added, r.units_added, r.products_added, r.fields_changed
    ))
}

/// What an assignment request asked.
pub fn assignment_asked(new: &crate::admin::NewAssignment) -> String {
    format!(
        "assign {} / {} ({}) to assessor {}, {} {}",
        new.institution,
        new.unit,
        if new.products.is_empty() { "every product".to_owned() } else { new.products.join(", ") },
        new.assessor,
        new.instrument,
        new.mode
    )
}

/// An assignment made, concerning its institution's region.
pub fn assigned(tx: &Transaction<'_>, new: &crate::admin::NewAssignment, id: &str) -> Result<Done, ApiError> {
    let region = crate::ledger::entity_scope(tx, id)?.region;
    Ok(Done::new(format!("created assignment {id}: {}", assignment_asked(new))).in_region(region))
}

/// Every result recomputed.
pub fn recomputed(n: usize) -> Done {
    Done::new(format!("recomputed {n} institution(s) from scratch"))
}

fn correction_line(c: &CorrectionView) -> String {
    format!("{} `{}` = {} (reason: {})", c.target, c.field, c.value, c.reason)
}

/// A correction made.
pub fn corrected(w: &Written) -> Done {
    let c = &w.correction;
    Done::new(format!("correction {}: {}", c.id, correction_line(c))).in_region(c.region.clone())
}

/// A correction withdrawn.
pub fn withdrawn(w: &Written) -> Done {
    let c = &w.correction;
    let what = if w.ops.is_empty() { "was already withdrawn: nothing written" } else { "withdrawn" };
    Done::new(format!("correction {} {what}: {}", c.id, correction_line(c))).in_region(c.region.clone())
}

/// A conflict resolved.
pub fn resolved(r: &Resolved) -> Done {
    let c = &r.correction.correction;
    Done::new(format!("conflict resolved by correction {}: {}", c.id, correction_line(c))).in_region(c.region.clone())
}

/// What a correction request asked.
pub fn correction_asked(new: &NewCorrection) -> String {
    format!("correct {} `{}` to {} (reason: {})", new.target, new.field, new.value, new.reason)
}

/// What a withdrawal asked.
pub fn withdrawal_asked(id: &str, w: &Withdrawal) -> String {
    format!("withdraw correction {id} (reason: {})", w.reason)
}

/// What a conflict resolution asked.
pub fn resolution_asked(r: &Resolution) -> String {
    let how = match (&r.choose, &r.value) {
        (Some(op), _) => format!("choosing {op}"),
        (None, Some(v)) => format!("with the value {v}"),
        (None, None) => "without a version or a value".to_owned(),
    };
    format!("resolve the conflict on {} `{}` {how} (reason: {})", r.entity, r.field, r.reason)
}
