//! Bearer tokens: made once, shown once, stored only as their SHA-256; each bound to a
//! role and, for all but admins, a region (and an assessor for assessor tokens).
//! Their lifecycle: an optional expiry, revocation (at once, or at the end of a
//! rotation's grace period), rotation to a new secret of the same scope, and when each
//! was last used.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use sidak_core::sign::PublicKey;

use crate::db::DbError;
use crate::error::ApiError;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A field device: pushes its own origins, pulls its assignments and instruments.
    Assessor,
    /// A regional supervisor: sees and reviews one region.
    Supervisor,
    /// The central administrator: sees everything.
    Admin,
    /// A regional server at the centre: replicates one region.
    Peer,
}

impl Role {
    /// The name used on the command line and in `whoami`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Assessor => "assessor",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
            Role::Peer => "peer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "assessor" => Ok(Role::Assessor),
            "supervisor" => Ok(Role::Supervisor),
            "admin" => Ok(Role::Admin),
            "peer" => Ok(Role::Peer),
            other => Err(format!("unknown role `{other}` (assessor, supervisor, admin or peer)")),
        }
    }
}

/// The caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's id (not the secret).
    pub token_id: String,
    /// Its role.
    pub role: Role,
    /// Its region (all but admins).
    pub region: Option<String>,
    /// Its assessor (assessor tokens).
    pub assessor: Option<String>,
}

impl Principal {
    /// Refuses with 403 `role_forbidden` unless the role is one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
            Err(ApiError::role_forbidden(format!(
                "a {} token may not do this (needs: {})",
                self.role,
                names.join(", ")
            )))
        }
    }

    /// True when this caller may see records of `region`.
    pub fn sees_region(&self, region: Option<&str>) -> bool {
        match self.role {
            Role::Admin => true,
            _ => region.is_some() && self.region.as_deref() == region,
        }
    }
}

/// What `token create` needs.
#[derive(Clone, Debug)]
pub struct NewToken {
    /// The role.
    pub role: Role,
    /// The region (required for all but admins).
    pub region: Option<String>,
    /// The assessor (required for assessors).
    pub assessor: Option<String>,
    /// A label for people ("tablet 3, Semarang").
    pub label: Option<String>,
    /// The device keys an assessor token is issued for (`sidak-field init` shows a
    /// device's). With keys, the token binds only origins that register one of them;
    /// without, it trusts the first key each of its origins registers.
    pub device_keys: Vec<PublicKey>,
}

/// The most device keys one token may be issued for.
pub const MAX_DEVICE_KEYS: usize = 16;

/// Why a token could not be made, revoked or rotated.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Missing or extra scope, a bad lifetime, or a token that cannot be rotated.
    #[error("{0}")]
    Invalid(String),
    /// No token with that id.
    #[error("no token `{0}` here")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for TokenError {
    fn from(source: rusqlite::Error) -> TokenError {
        TokenError::Db(DbError { path: "tokens".into(), source })
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> ApiError {
        match e {
            TokenError::Invalid(m) => ApiError::invalid_body(m),
            TokenError::NotFound(_) => ApiError::not_found(e.to_string()),
            TokenError::Db(e) => ApiError::from(e),
        }
    }
}

/// SHA-256 of a token's secret, as stored.
pub fn token_hash(secret: &str) -> String {
    sidak_core::hash::sha256_hex(secret.as_bytes())
}

/// Makes a token that never expires and stores its hash; returns (id, secret). The
/// secret is never stored.
pub fn create_token(tx: &Transaction<'_>, new: &NewToken, now_ms: i64) -> Result<(String, String), TokenError> {
    create_token_until(tx, new, None, now_ms)
}

/// Makes a token valid until `expires_at` (ms since 1970; `None`: until revoked) and
/// stores its hash; returns (id, secret).
pub fn create_token_until(
    tx: &Transaction<'_>,
    new: &NewToken,
    expires_at: Option<i64>,
    now_ms: i64,
) -> Result<(String, String), TokenError> {
    if expires_at.is_some_and(|at| at <= now_ms) {
        return Err(TokenError::Invalid("a token's expiry must lie in the future".into()));
    }
    if new.label.as_ref().is_some_and(|l| l.len() > 200 || l.chars().any(char::is_control)) {
        return Err(TokenError::Invalid("a label is at most 200 bytes of text without control characters".into()));
    }
    let code_ok = |s: &Option<String>| s.as_deref().is_none_or(sidak_core::records::is_code);
    if !code_ok(&new.region) || !code_ok(&new.assessor) {
        return Err(TokenError::Invalid(
            "region and assessor are codes: lowercase letters, digits, `-`, `_`, `.`".into(),
        ));
    }
    match (new.role, &new.region, &new.assessor) {
        (Role::Admin, Some(_), _) | (Role::Admin, _, Some(_)) => {
            return Err(TokenError::Invalid("an admin token sees every region: give it no region or assessor".into()))
        }
        (Role::Assessor, Some(_), Some(_)) | (Role::Admin, None, None) => {}
        (Role::Assessor, _, _) => {
            return Err(TokenError::Invalid("an assessor token needs --region and --assessor".into()))
        }
        (Role::Supervisor | Role::Peer, Some(_), None) => {}
        (role, None, _) => return Err(TokenError::Invalid(format!("a {role} token needs --region"))),
        (role, _, Some(_)) => return Err(TokenError::Invalid(format!("a {role} token has no assessor"))),
    }
    if !new.device_keys.is_empty() && new.role != Role::Assessor {
        return Err(TokenError::Invalid(format!(
            "only assessor tokens are issued for device keys, not a {} token",
            new.role
        )));
    }
    if new.device_keys.len() > MAX_DEVICE_KEYS {
        return Err(TokenError::Invalid(format!("a token is issued for at most {MAX_DEVICE_KEYS} device keys")));
    }
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = format!("sdk_{}", hex::encode(bytes));
    let id = format!("tok_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let e = |source| DbError { path: "tokens".into(), source };
    tx.execute(
        "INSERT INTO tokens (id, hash, role, region, assessor, label, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![id, token_hash(&secret), new.role.name(), new.region, new.assessor, new.label, now_ms, expires_at],
    )
    .map_err(e)?;
    for key in &new.device_keys {
        tx.execute(
            "INSERT OR IGNORE INTO token_keys (token_id, public_key) VALUES (?1, ?2)",
            params![id, key.to_hex()],
        )
        .map_err(e)?;
    }
    Ok((id, secret))
}

/// Looks a bearer secret up, whatever its state: requests are authenticated with
/// [`check_token`], which also refuses revoked and expired tokens.
pub fn principal_for(tx: &Transaction<'_>, secret: &str) -> Result<Option<Principal>, rusqlite::Error> {
    tx.query_row("SELECT id, role, region, assessor FROM tokens WHERE hash = ?1", [token_hash(secret)], |r| {
        let role: String = r.get(1)?;
        Ok(Principal {
            token_id: r.get(0)?,
            role: role.parse().unwrap_or(Role::Assessor),
            region: r.get(2)?,
            assessor: r.get(3)?,
        })
    })
    .optional()
}

/// What a presented secret turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// A token in force, and when it was last recorded as used.
    Valid {
        /// The caller.
        principal: Principal,
        /// `last_used_at` as stored.
        last_used_at: Option<i64>,
    },
    /// No token has this secret.
    Unknown,
    /// Revoked at `at` (by `token revoke`, or at the end of a rotation's grace).
    Revoked {
        /// When.
        at: i64,
        /// The token that replaced it, when it was rotated.
        replaced_by: Option<String>,
    },
    /// Expired at `at`.
    Expired {
        /// When.
        at: i64,
    },
}

impl TokenCheck {
    /// The `401 unauthorized` message for a secret that is not in force.
    pub fn refusal(&self) -> Option<String> {
        match self {
            TokenCheck::Valid { .. } => None,
            TokenCheck::Unknown => {
                Some("unknown token: check that it was copied whole, or ask an administrator for one".into())
            }
            TokenCheck::Revoked { at, replaced_by: Some(new) } => Some(format!(
                "this token was revoked at {} (rotated: replaced by {new}); use the new token",
                crate::html::time(*at)
            )),
            TokenCheck::Revoked { at, replaced_by: None } => Some(format!(
                "this token was revoked at {}; ask an administrator for a new one",
                crate::html::time(*at)
            )),
            TokenCheck::Expired { at } => {
                Some(format!("this token expired at {}; ask an administrator for a new one", crate::html::time(*at)))
            }
        }
    }
}

/// Looks a bearer secret up and says whether it is in force at `now_ms`.
pub fn check_token(tx: &Transaction<'_>, secret: &str, now_ms: i64) -> Result<TokenCheck, rusqlite::Error> {
    // Every request runs this: the statement stays compiled in the connection's cache.
    let row = tx
        .prepare_cached(
            "SELECT id, role, region, assessor, expires_at, revoked_at, last_used_at, replaced_by
             FROM tokens WHERE hash = ?1",
        )?
        .query_row([token_hash(secret)], |r| {
            let role: String = r.get(1)?;
            let principal = Principal {
                token_id: r.get(0)?,
                role: role.parse().unwrap_or(Role::Assessor),
                region: r.get(2)?,
                assessor: r.get(3)?,
            };
            let times: (Option<i64>, Option<i64>, Option<i64>) = (r.get(4)?, r.get(5)?, r.get(6)?);
            Ok((principal, times, r.get::<_, Option<String>>(7)?))
        })
        .optional()?;
    Ok(match row {
        None => TokenCheck::Unknown,
        Some((_, (_, Some(at), _), replaced_by)) if at <= now_ms => TokenCheck::Revoked { at, replaced_by },
        Some((_, (Some(at), _, _), _)) if at <= now_ms => TokenCheck::Expired { at },
        Some((principal, (_, _, last_used_at), _)) => TokenCheck::Valid { principal, last_used_at },
    })
}

/// How stale `last_used_at` may be before a request records it again: at most one
/// write a minute per token.
pub const LAST_USED_EVERY_MS: i64 = 60_000;

/// Records that token `id` was used at `now_ms` (unless it was recorded within
/// [`LAST_USED_EVERY_MS`]).
pub fn touch_token(tx: &Transaction<'_>, id: &str, now_ms: i64) -> Result<(), rusqlite::Error> {
    tx.execute(
        "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2 - ?3)",
        params![id, now_ms, LAST_USED_EVERY_MS],
    )?;
    Ok(())
}

/// Where a token stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// In force.
    Active,
    /// Rotated: in force until `revoked_at`, the end of its grace period.
    Grace,
    /// Past its `expires_at`.
    Expired,
    /// Revoked: refused.
    Revoked,
}

/// A token as `token list` and `GET /v1/admin/tokens` show it: never its secret or
/// hash. Times are ms since 1970.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenView {
    /// The token's id.
    pub id: String,
    /// Its role.
    pub role: Role,
    /// Its region (all but admins).
    pub region: Option<String>,
    /// Its assessor (assessor tokens).
    pub assessor: Option<String>,
    /// Its label.
    pub label: Option<String>,
    /// When it was made.
    pub created_at: i64,
    /// When it expires (`null`: never).
    pub expires_at: Option<i64>,
    /// When it was last used, to the minute (`null`: never).
    pub last_used_at: Option<i64>,
    /// When it was (or, rotated, will be) revoked.
    pub revoked_at: Option<i64>,
    /// The token that replaced it by rotation.
    pub replaced_by: Option<String>,
    /// The token it replaced by rotation.
    pub replaces: Option<String>,
    /// The device keys it was issued for, sorted (empty: it trusts each origin's
    /// first key).
    pub device_keys: Vec<PublicKey>,
    /// Where it stands now.
    pub status: TokenStatus,
}

impl TokenView {
    /// One line for people.
    pub fn line(&self) -> String {
        let time = |t: Option<i64>| t.map(crate::html::time).unwrap_or_else(|| "-".into());
        let status = match self.status {
            TokenStatus::Active => "active".to_owned(),
            TokenStatus::Grace => format!("grace until {}", time(self.revoked_at)),
            TokenStatus::Expired => "expired".to_owned(),
            TokenStatus::Revoked => format!("revoked {}", time(self.revoked_at)),
        };
        format!(
            "{}  {:<10} {:<10} {:<12} created {}  expires {}  last used {}  {status}{}{}  {}",
            self.id,
            self.role.name(),
            self.region.as_deref().unwrap_or("-"),
            self.assessor.as_deref().unwrap_or("-"),
            time(Some(self.created_at)),
            time(self.expires_at),
            time(self.last_used_at),
            self.replaced_by.as_ref().map(|n| format!(" (replaced by {n})")).unwrap_or_default(),
            match self.device_keys.as_slice() {
                [] => String::new(),
                [one] => format!("  device key {}…", &one.to_hex()[..16]),
                many => format!("  {} device keys", many.len()),
            },
            self.label.as_deref().map(|l| format!("\"{l}\"")).unwrap_or_default(),
        )
    }
}

const TOKEN_COLUMNS: &str = "t.id, t.role, t.region, t.assessor, t.label, t.created_at, t.expires_at, t.last_used_at,
     t.revoked_at, t.replaced_by, (SELECT p.id FROM tokens p WHERE p.replaced_by = t.id),
     (SELECT group_concat(k.public_key, ',') FROM token_keys k WHERE k.token_id = t.id)";

fn token_row(r: &rusqlite::Row<'_>, now_ms: i64) -> rusqlite::Result<TokenView> {
    let role: String = r.get(1)?;
    let expires_at: Option<i64> = r.get(6)?;
    let revoked_at: Option<i64> = r.get(8)?;
    let status = match (revoked_at, expires_at) {
        (Some(at), _) if at <= now_ms => TokenStatus::Revoked,
        (_, Some(at)) if at <= now_ms => TokenStatus::Expired,
        (Some(_), _) => TokenStatus::Grace,
        _ => TokenStatus::Active,
    };
    Ok(TokenView {
        id: r.get(0)?,
        role: role.parse().unwrap_or(Role::Assessor),
        region: r.get(2)?,
        assessor: r.get(3)?,
        label: r.get(4)?,
        created_at: r.get(5)?,
        expires_at,
        last_used_at: r.get(7)?,
        revoked_at,
        replaced_by: r.get(9)?,
        replaces: r.get(10)?,
        device_keys: {
            let joined: Option<String> = r.get(11)?;
            let mut keys: Vec<PublicKey> =
                joined.iter().flat_map(|j| j.split(',')).filter_map(|k| k.parse().ok()).collect();
            keys.sort();
            keys
        },
        status,
    })
}

/// The device keys token `id` was issued for (empty: it trusts each origin's first key).
pub fn device_keys(tx: &Transaction<'_>, id: &str) -> Result<Vec<PublicKey>, rusqlite::Error> {
    let mut stmt = tx.prepare_cached("SELECT public_key FROM token_keys WHERE token_id = ?1 ORDER BY public_key")?;
    let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        if let Ok(key) = row?.parse() {
            out.push(key);
        }
    }
    Ok(out)
}

/// Every token, oldest first.
pub fn list_tokens(tx: &Transaction<'_>, now_ms: i64) -> Result<Vec<TokenView>, TokenError> {
    let mut stmt = tx.prepare(&format!("SELECT {TOKEN_COLUMNS} FROM tokens t ORDER BY t.created_at, t.id"))?;
    let rows = stmt.query_map([], |r| token_row(r, now_ms))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One token.
pub fn token(tx: &Transaction<'_>, id: &str, now_ms: i64) -> Result<TokenView, TokenError> {
    tx.query_row(&format!("SELECT {TOKEN_COLUMNS} FROM tokens t WHERE t.id = ?1"), [id], |r| token_row(r, now_ms))
        .optional()?
        .ok_or_else(|| TokenError::NotFound(id.to_owned()))
}

/// Revokes a token at once: every request with it is refused from now on. Revoking a
/// revoked token changes nothing; revoking a rotated one ends its grace now.
pub fn revoke_token(tx: &Transaction<'_>, id: &str, now_ms: i64) -> Result<TokenView, TokenError> {
    token(tx, id, now_ms)?;
    tx.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND (revoked_at IS NULL OR revoked_at > ?2)",
        params![id, now_ms],
    )?;
    token(tx, id, now_ms)
}

/// The longest grace period a rotation may give the old secret.
pub const MAX_GRACE_MS: i64 = 30 * 24 * 3_600_000;

/// A rotation: the new token (its secret shown once) and the old one as it now stands.
#[derive(Clone, Debug, Serialize)]
pub struct Rotated {
    /// The new token.
    pub token: TokenView,
    /// Its secret, shown once.
    pub secret: String,
    /// The token it replaces, revoked now or at the end of the grace period.
    pub replaced: TokenView,
}

/// Replaces token `id` by a new secret of the same role, scope and label, and revokes
/// the old one `grace_ms` from now (0: at once). The new token expires `expires_in_ms`
/// from now, or by default after as long a lifetime as the old one had (never, if it
/// had none). A revoked or already rotated token is not rotated; an expired one may be,
/// to renew it.
pub fn rotate_token(
    tx: &Transaction<'_>,
    id: &str,
    grace_ms: i64,
    expires_in_ms: Option<i64>,
    now_ms: i64,
) -> Result<Rotated, TokenError> {
    if !(0..=MAX_GRACE_MS).contains(&grace_ms) {
        return Err(TokenError::Invalid(format!("the grace period is 0 to {} seconds (30 days)", MAX_GRACE_MS / 1000)));
    }
    let old = token(tx, id, now_ms)?;
    match (&old.status, &old.replaced_by) {
        (_, Some(new)) => {
            return Err(TokenError::Invalid(format!("token {id} was already rotated: it is replaced by {new}")))
        }
        (TokenStatus::Revoked, None) => {
            return Err(TokenError::Invalid(format!("token {id} is revoked: create a new token instead")))
        }
        _ => {}
    }
    let lifetime = expires_in_ms.or(old.expires_at.map(|at| at - old.created_at));
    let new = NewToken {
        role: old.role,
        region: old.region,
        assessor: old.assessor,
        label: old.label,
        device_keys: old.device_keys,
    };
    let (new_id, secret) = create_token_until(tx, &new, lifetime.map(|ms| now_ms.saturating_add(ms)), now_ms)?;
    tx.execute(
        "UPDATE tokens SET replaced_by = ?2, revoked_at = ?3 WHERE id = ?1",
        params![id, new_id, now_ms.saturating_add(grace_ms)],
    )?;
    Ok(Rotated { token: token(tx, &new_id, now_ms)?, secret, replaced: token(tx, id, now_ms)? })
}

/// The longest lifetime a token may be given.
pub const MAX_LIFETIME_MS: i64 = 10 * 366 * 86_400_000;

/// Reads a lifetime such as `90d`, `12h`, `30m`, `45s` or `2w` into milliseconds.
pub fn parse_lifetime(text: &str) -> Result<i64, String> {
    let bad = || format!("`{text}` is not a lifetime: give a whole number and a unit, as in 90d, 12h, 30m, 45s or 2w");
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let unit_ms: i64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 && ms <= MAX_LIFETIME_MS => Ok(ms),
        Some(0) => Err(format!("`{text}`: a lifetime must be longer than nothing")),
        _ => Err(format!("`{text}`: a token lives at most ten years")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_lifetime;

    fn check(text: &str, expected: Result<i64, &str>) {
        match (parse_lifetime(text), expected) {
            (Ok(ms), Ok(want)) => assert_eq!(ms, want, "{text}"),
            (Err(e), Err(want)) => assert!(e.contains(want), "{text}: {e}"),
            (got, want) => panic!("{text}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn lifetimes() {
        check("90d", Ok(90 * 86_400_000));
        check("12h", Ok(12 * 3_600_000));
        check("30m", Ok(30 * 60_000));
        check("45s", Ok(45_000));
        check("2w", Ok(14 * 86_400_000));
        check(" 1d ", Ok(86_400_000));
        check("0d", Err("longer than nothing"));
        check("3661d", Err("at most ten years"));
        check("99999999999999999d", Err("at most ten years"));
        check("99999999999999999999d", Err("not a lifetime"));
        check("90", Err("not a lifetime"));
        check("d", Err("not a lifetime"));
        check("1.5d", Err("not a lifetime"));
        check("-1d", Err("not a lifetime"));
        check("1y", Err("not a lifetime"));
        check("", Err("not a lifetime"));
    }
}
