//! Bearer tokens: made once, shown once, stored only as their SHA-256; each bound to a
//! role and, for all but admins, a region (and an assessor for assessor tokens).

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

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
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Missing or extra scope.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// SHA-256 of a token's secret, as stored.
pub fn token_hash(secret: &str) -> String {
    sidak_core::hash::sha256_hex(secret.as_bytes())
}

/// Makes a token and stores its hash; returns (id, secret). The secret is never stored.
pub fn create_token(tx: &Transaction<'_>, new: &NewToken, now_ms: i64) -> Result<(String, String), TokenError> {
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
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = format!("sdk_{}", hex::encode(bytes));
    let id = format!("tok_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let e = |source| DbError { path: "tokens".into(), source };
    tx.execute(
        "INSERT INTO tokens (id, hash, role, region, assessor, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, token_hash(&secret), new.role.name(), new.region, new.assessor, new.label, now_ms],
    )
    .map_err(e)?;
    Ok((id, secret))
}

/// Looks a bearer secret up.
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
