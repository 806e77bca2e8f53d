//! End-of-day reconciliation between tiers: this server's manifest, another tier's
//! manifest (a region's over HTTP, or a device's from `sidak-field manifest`), and
//! exactly what is missing or differs between them.

use std::time::Duration;

use sidak_core::manifest::{compare, ManifestDiff};
use sidak_core::wire::{Manifest, PROTOCOL_HEADER, PROTOCOL_VERSION};

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::state::AppState;

/// Everything this server holds, as its manifest (every chain verified).
pub fn local(state: &AppState, region: Option<&str>) -> Result<Manifest, ApiError> {
    let who = match region {
        Some(r) => {
            Principal { token_id: "cli".into(), role: Role::Supervisor, region: Some(r.to_owned()), assessor: None }
        }
        None => Principal { token_id: "cli".into(), role: Role::Admin, region: None, assessor: None },
    };
    let store = state.store();
    state.db().read_blocking(|tx| crate::sync_api::build_manifest(tx, &who, store))
}

/// An HTTP client to another tier: certificates always verified, against the public
/// roots and the authorities in `ca_file` (PEM) when given.
pub fn client(timeout: Duration, ca_file: Option<&std::path::Path>) -> Result<reqwest::blocking::Client, String> {
    let mut builder = reqwest::blocking::Client::builder().timeout(timeout).gzip(true);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in it", path.display()));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// Fetches another server's manifest with a token it issued.
pub fn fetch(url: &str, token: &str, ca_file: Option<&std::path::Path>) -> Result<Manifest, String> {
    let client = client(Duration::from_secs(300), ca_file)?;
    let response = client
        .get(format!("{}/v1/manifest", url.trim_end_matches('/')))
        .bearer_auth(token)
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
        .send()
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let text = response.text().map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{url}: not a manifest: {e}"))
}

/// Compares this server with the tier below. A device's manifest (its store is its
/// own origin) is compared for that device only; a region's for every origin of its
/// region, including those only this server still holds.
pub fn compare_below(state: &AppState, below: &Manifest, region: Option<&str>) -> Result<Vec<ManifestDiff>, ApiError> {
    let device = below.origins.len() == 1 && below.origins[0].origin.0 == below.store.0;
    let inferred = if device {
        None
    } else {
        region.map(str::to_owned).or_else(|| {
            let mut regions = below.origins.iter().filter_map(|e| e.region.clone());
            let first = regions.next()?;
            regions.all(|r| r == first).then_some(first)
        })
    };
    let here = local(state, None)?;
    Ok(compare(&here, below, inferred.as_deref()))
}
