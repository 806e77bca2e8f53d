//! Router tests (no socket) for the report card, the CSV exports and the dashboard:
//! shapes, scope (a supervisor of another region gets 403 `scope_forbidden`, assessors
//! and peers 403 `role_forbidden`), CSV headers and rows, the login flow, and HTML
//! escaping of hostile names.

mod common;

const UNITS_HEADER_NAMES: [&str; 12] = [
    "institution",
    "code",
    "name",
    "type",
    "region",
    "instrument",
    "status",
    "score",
    "provisional",
    "grade",
    "zone",
    "completeness",
];

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use serde_json::json;
use sidak_core::hash::Sha256Digest;
use sidak_core::ids::EntityId;
use sidak_core::records::{EntityKind, EntityRef};
use sidak_server::admin;
use tower::ServiceExt;

/// A raw answer: status, headers and body text.
async fn get(h: &Harness, path: &str, auth: Auth<'_>) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::builder().uri(path);
    match auth {
        Auth::Bearer(t) => req = req.header("authorization", format!("Bearer {t}")),
        Auth::Cookie(t) => req = req.header("cookie", format!("other=1; sidak_token={t}")),
        Auth::None => {}
    }
    send(h, req.body(Body::empty()).unwrap()).await
}

async fn send(h: &Harness, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = h.router.clone().oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    Bearer(&'a str),
    Cookie(&'a str),
    None,
}

async fn upload(h: &Harness, bytes: &[u8], media: &str) -> String {
    let sha = Sha256Digest::of(bytes).to_hex();
    let (s, _) = h
        .call(
            "POST",
            &format!("/v1/evidence/{sha}"),
            Some(&h.assessor),
            Some(json!({"size": bytes.len(), "media_type": media})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let req = Request::builder()
        .method("PUT")
        .uri(format!("/v1/evidence/{sha}?offset=0"))
        .header("authorization", format!("Bearer {}", h.assessor))
        .header("content-type", "application/octet-stream")
        .body(Body::from(bytes.to_vec()))
        .unwrap();
    let (s, st) = h.send(req).await;
    assert_eq!((s, st["complete"].as_bool()), (StatusCode::OK, Some(true)), "{st}");
    sha
}

/// A season in jateng: one Disdukcapil visit answered 0 throughout, with photos for
/// `persyaratan` (failed) and `moto` (corrected to 1 by the supervisor: weak), a note,
/// and a hostile institution name in sulbar.
struct Season {
    h: Harness,
    visit: EntityRef,
    photo: String,
    device: Device,
}

async fn season() -> Season {
    let h = Harness::new();
    let mut dev = Device::new(80, "a1", "jateng");
    let visit = dev.visit(&h, "kota-sukamaju", "disdukcapil", "ktp-el", 0);
    let photo = upload(&h, b"\x89PNG a photo of the requirements board", "image/png").await;
    let scan = upload(&h, b"%PDF a scan of the motto", "application/pdf").await;
    for (sha, indicator, media) in
        [(&photo, "proses.persyaratan", "image/png"), (&scan, "proses.moto", "application/pdf")]
    {
        let e = EntityRef { kind: EntityKind::Evidence, id: EntityId(uuid::Uuid::now_v7()) };
        dev.write(e, "visit", json!(visit.id.to_string()), None);
        dev.write(e, "indicator", json!(indicator), None);
        dev.write(e, "sha256", json!(sha), None);
        dev.write(e, "media_type", json!(media), None);
        dev.write(e, "size", json!(20), None);
        dev.write(e, "captured_at", json!(T0 + 5_000), None);
    }
    let note = EntityRef { kind: EntityKind::Note, id: EntityId(uuid::Uuid::now_v7()) };
    dev.write(note, "visit", json!(visit.id.to_string()), None);
    dev.write(note, "indicator", json!("proses.persyaratan"), None);
    dev.write(note, "text", json!("Papan persyaratan <kosong> & tidak terbaca"), None);
    let (s, r) = h.call("POST", "/v1/ops/push", Some(&h.assessor), Some(dev.batch(0))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(r["origins"][0]["quarantined"].is_null(), "{r}");
    let correction = json!({"target": {"kind": "visit", "id": visit.id}, "field": "answer.proses.moto", "value": 1, "reason": "the photo shows a motto"});
    let (s, r) = h.call("POST", "/v1/review/corrections", Some(&h.supervisor), Some(correction)).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");

    // A hostile name in sulbar, with a visit so it has a result.
    let hostile = "institution_code,institution_name,institution_type,region,unit_code,unit_name,unit_type,product_code,product_name\n\
        kab-mamuju,\"Kab <script>alert('x')</script> & \"\"Co\"\", Ltd\",kabupaten,sulbar,disdukcapil,\"Dinas \"\"A\"\", B\",disdukcapil,ktp-el,KTP elektronik\n";
    let rows = admin::parse_registry(hostile).unwrap();
    let instruments = h.state.instruments();
    h.state
        .db()
        .write_blocking(|tx| {
            let (_, dirty) = admin::import_registry(tx, &instruments, &rows, T0)?;
            for i in &dirty {
                sidak_server::results::recompute(tx, &instruments, i)?;
            }
            Ok::<_, sidak_server::error::ApiError>(())
        })
        .unwrap();
    Season { h, visit, photo, device: dev }
}

#[tokio::test]
async fn the_rapor_lists_failed_and_weak_indicators_with_evidence_notes_and_corrections() {
    let Season { h, visit, photo, .. } = season().await;
    let (s, r) = h.call("GET", "/v1/results/institutions/kota-sukamaju/rapor", Some(&h.supervisor), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["format"], "sidak-rapor/1");
    assert_eq!(
        (r["institution"]["code"].as_str(), r["institution"]["type"].as_str(), r["institution"]["region"].as_str()),
        (Some("kota-sukamaju"), Some("kota"), Some("jateng"))
    );
    assert_eq!(
        (r["instrument"]["id"].as_str(), r["instrument"]["year"].as_u64()),
        (Some("penilaian-2023"), Some(2023))
    );
    // Questionnaires are missing: incomplete, a provisional figure, no grade.
    assert_eq!(r["status"], "incomplete");
    assert!(r["grade"].is_null() && r["score"].is_null() && r["zone"].is_null(), "{r}");
    assert!(r["provisional"].is_string());
    assert!(!r["missing"].as_array().unwrap().is_empty());
    assert_eq!(r["weak_below"], "0.5");
    let dims: Vec<&str> = r["dimensions"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(dims, ["input", "proses", "output", "pengaduan"]);
    assert_eq!(r["units"][0]["code"], "disdukcapil");
    assert_eq!(r["units"][0]["products"][0]["code"], "akta-lahir");

    let findings = r["findings"].as_array().unwrap();
    let by = |id: &str| findings.iter().find(|f| f["indicator"] == id).unwrap_or_else(|| panic!("{id} in {r}")).clone();
    let failed = by("proses.persyaratan");
    assert_eq!(
        (failed["verdict"].as_str(), failed["level"].as_str(), failed["unit"].as_str(), failed["product"].as_str()),
        (Some("failed"), Some("product"), Some("disdukcapil"), Some("ktp-el"))
    );
    assert_eq!(
        (failed["score"].as_str(), failed["max"].as_str(), failed["answer"].clone()),
        (Some("0.00"), Some("100.00"), json!(0))
    );
    assert_eq!(failed["evidence"].as_array().unwrap().len(), 1);
    let e = &failed["evidence"][0];
    assert_eq!(
        (e["sha256"].as_str(), e["media_type"].as_str(), e["captured_at"].as_i64(), e["complete"].as_bool()),
        (Some(photo.as_str()), Some("image/png"), Some(T0 + 5_000), Some(true))
    );
    assert_eq!(e["href"], format!("/v1/evidence/{photo}"));
    assert_eq!(e["visit"], json!(visit.id.to_string()));
    assert_eq!(failed["notes"][0]["text"], "Papan persyaratan <kosong> & tidak terbaca");
    let weak = by("proses.moto");
    assert_eq!((weak["verdict"].as_str(), weak["score"].as_str()), (Some("weak"), Some("33.33")));
    assert_eq!(
        (weak["answer"].clone(), weak["field_value"].clone()),
        (json!(1), json!(0)),
        "the correction beside the field value"
    );
    assert!(findings.iter().all(|f| f["indicator"] != "proses.prosedur"), "no evidence: incomplete, not a finding");
    assert_eq!(
        r["corrections"],
        json!([{"unit": "disdukcapil", "product": "ktp-el", "visit": visit.id.to_string(), "respondent": null, "indicator": "proses.moto", "field_value": 0, "value": 1}])
    );
    assert_eq!(r["comparison"], json!({"previous": null, "change": null, "note": "no earlier season"}));
    assert_eq!(r["seasons"].as_array().unwrap().len(), 1);

    // The same card as HTML: failed indicators with evidence links, thumbnails only
    // for images, the correction beside the recorded value, escaped notes.
    let (s, headers, page) =
        get(&h, "/v1/results/institutions/kota-sukamaju/rapor.html", Auth::Bearer(&h.supervisor)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(page.contains(r#"data-verdict="failed" data-indicator="proses.persyaratan""#), "{page}");
    assert!(page.contains(&format!(r#"href="/v1/evidence/{photo}""#)));
    assert_eq!(page.matches(r#"<img class="thumb""#).count(), 1, "a thumbnail for the photo, not for the PDF");
    assert!(page.contains("recorded in the field: 0"));
    assert!(page.contains("Papan persyaratan &lt;kosong&gt; &amp; tidak terbaca"));
    assert!(page.contains(r#"id="status""#) && !page.contains(r#"id="grade""#), "incomplete: no grade");
    assert!(page.contains("no earlier season"));
    assert!(page.contains("@media print") && !page.contains("<script"), "prints, runs nothing");

    // By record id too; an unknown season or institution is 404; a bad one 400.
    let id = h.id_of("institution", "kota-sukamaju");
    assert_eq!(
        h.call("GET", &format!("/v1/results/institutions/{id}/rapor"), Some(&h.admin), None).await.0,
        StatusCode::OK
    );
    let (s, e) =
        h.call("GET", "/v1/results/institutions/kota-sukamaju/rapor?instrument=ikm-2017@1", Some(&h.admin), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (s, e) = h.call("GET", "/v1/results/institutions/kota-x/rapor", Some(&h.admin), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (s, e) =
        h.call("GET", "/v1/results/institutions/kota-sukamaju/rapor?instrument=nope", Some(&h.admin), None).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_query")));
}

#[tokio::test]
async fn reports_are_scoped_like_results() {
    let Season { h, photo, .. } = season().await;
    let before = h.fingerprint();
    for path in [
        "/v1/results/institutions/kota-sukamaju/rapor",
        "/v1/results/institutions/kota-sukamaju/rapor.html",
        "/v1/results/units.csv?region=jateng",
        "/v1/exports/answers.csv?region=jateng",
    ] {
        let (s, e) = h.call("GET", path, Some(&h.other_supervisor), None).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("scope_forbidden")), "{path}");
        for token in [&h.assessor, &h.peer] {
            let (s, e) = h.call("GET", path, Some(token), None).await;
            assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("role_forbidden")), "{path}");
        }
        assert_eq!(h.call("GET", path, None, None).await.0, StatusCode::UNAUTHORIZED, "{path}");
    }
    // Without a region, a supervisor's exports hold its own region only.
    let (_, _, units) = get(&h, "/v1/results/units.csv", Auth::Bearer(&h.other_supervisor)).await;
    assert!(units.contains("kab-mamuju") && !units.contains("kota-sukamaju"), "{units}");
    let (_, _, answers) = get(&h, "/v1/exports/answers.csv", Auth::Bearer(&h.other_supervisor)).await;
    assert_eq!(answers.lines().count(), 1, "sulbar has no visits: the header only");

    // Dashboard pages: the same scope, as pages.
    for path in [
        "/dashboard/institutions/kota-sukamaju",
        "/dashboard/institutions/kota-sukamaju/units/disdukcapil",
        "/dashboard/institutions/kota-sukamaju/units/disdukcapil/products/ktp-el",
        "/dashboard/institutions/kota-sukamaju/units/disdukcapil/products/ktp-el/indicators/proses.persyaratan",
        "/dashboard/institutions/kota-sukamaju/rapor",
        "/dashboard/regions/jateng",
        "/dashboard/sync?region=jateng",
        &format!("/dashboard/evidence/{photo}"),
        &format!("/dashboard/evidence/{photo}/file"),
    ] {
        let (s, _, page) = get(&h, path, Auth::Bearer(&h.other_supervisor)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        assert!(page.contains(r#"data-code="scope_forbidden""#), "{path}: {page}");
        let (s, _, page) = get(&h, path, Auth::Bearer(&h.peer)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        assert!(page.contains(r#"data-code="role_forbidden""#), "{path}");
        let (s, _, _) = get(&h, path, Auth::Bearer(&h.supervisor)).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    let (s, _, page) = get(&h, "/dashboard", Auth::Bearer(&h.assessor)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(page.contains(r#"data-code="role_forbidden""#));
    assert_eq!(h.fingerprint(), before, "reading changes nothing");
}

#[tokio::test]
async fn exports_have_headers_rows_and_rfc4180_quoting() {
    let Season { h, visit, device, .. } = season().await;
    let (s, headers, units) = get(&h, "/v1/results/units.csv", Auth::Bearer(&h.admin)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let mut reader = csv::Reader::from_reader(units.as_bytes());
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), sidak_server::exports::UNITS_HEADER.to_vec());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let sukamaju = rows.iter().find(|r| &r[0] == "kota-sukamaju" && &r[1] == "disdukcapil").expect("a unit row");
    assert_eq!((&sukamaju[4], &sukamaju[5], &sukamaju[6]), ("jateng", "penilaian-2023@1", "incomplete"));
    assert!(sukamaju[7].is_empty() && !sukamaju[8].is_empty(), "incomplete: provisional only");
    assert_eq!(&UNITS_HEADER_NAMES[..], sidak_server::exports::UNITS_HEADER);
    assert!(sukamaju[11].parse::<sidak_core::num::Published>().is_ok(), "completeness: {:?}", &sukamaju[11]);
    let mamuju = rows.iter().find(|r| &r[0] == "kab-mamuju").unwrap();
    assert_eq!(&mamuju[2], "Dinas \"A\", B", "quotes and commas survive");
    assert!(units.contains("\"Dinas \"\"A\"\", B\""), "RFC 4180 quoting: {units}");
    // One row per unit result.
    let expected = h.state.db().read_blocking(|tx| sidak_server::results::rows(tx, "unit", None, -1, None)).unwrap();
    assert_eq!(rows.len(), expected.len());
    let (_, _, only) = get(&h, "/v1/results/units.csv?institution=kab-mamuju", Auth::Bearer(&h.admin)).await;
    assert_eq!(only.lines().count(), 2);

    let (s, _, answers) =
        get(&h, "/v1/exports/answers.csv?instrument=penilaian-2023@1", Auth::Bearer(&h.supervisor)).await;
    assert_eq!(s, StatusCode::OK);
    let mut reader = csv::Reader::from_reader(answers.as_bytes());
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), sidak_server::exports::ANSWERS_HEADER.to_vec());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 13, "12 proses answers and 1 pengaduan answer of the one visit");
    let moto = rows.iter().find(|r| &r[9] == "proses.moto").unwrap();
    let finished = device.ops.iter().find(|o| o.field == "finished_at").unwrap().value.as_i64().unwrap();
    let finished =
        chrono::DateTime::from_timestamp_millis(finished).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    assert_eq!(
        moto.iter().collect::<Vec<_>>(),
        [
            "jateng",
            "kota-sukamaju",
            "disdukcapil",
            "ktp-el",
            visit.id.to_string().as_str(),
            "a1",
            "covert",
            "mpp",
            "penilaian-2023@1",
            "proses.moto",
            "",
            "",
            "0",
            "1",
            finished.as_str()
        ]
    );
    assert!(rows.iter().filter(|r| &r[9] != "proses.moto").all(|r| r[13].is_empty()), "no other corrections");
    for (query, code) in [("instrument=nope", "bad_query"), ("colour=red", "bad_query")] {
        let (s, e) = h.call("GET", &format!("/v1/exports/answers.csv?{query}"), Some(&h.admin), None).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{query}");
    }
}

#[tokio::test]
async fn the_dashboard_escapes_every_name() {
    let Season { h, .. } = season().await;
    for path in ["/dashboard", "/dashboard/rankings", "/dashboard/regions/sulbar", "/dashboard/institutions/kab-mamuju"]
    {
        let (s, headers, page) = get(&h, path, Auth::Bearer(&h.admin)).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(!page.contains("<script"), "{path}: a raw script tag");
        assert!(
            page.contains("Kab &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;Co&quot;, Ltd"),
            "{path}: {page}"
        );
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "no script may run: {csp}");
    }
    let (_, _, page) = get(&h, "/dashboard/institutions/kab-mamuju/units/disdukcapil", Auth::Bearer(&h.admin)).await;
    assert!(page.contains("Dinas &quot;A&quot;, B") && !page.contains("Dinas \"A\""));
    let (_, _, card) = get(&h, "/v1/results/institutions/kab-mamuju/rapor.html", Auth::Bearer(&h.admin)).await;
    assert!(!card.contains("<script") && card.contains("<title>Rapor — Kab &lt;script&gt;"));
}

#[tokio::test]
async fn browsers_log_in_with_a_cookie_or_a_token_query() {
    let Season { h, .. } = season().await;
    // No credentials: to the login page, remembering where to go.
    let (s, headers, _) = get(&h, "/dashboard/rankings?instrument=penilaian-2023%401", Auth::None).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        "/dashboard/login?next=%2Fdashboard%2Frankings%3Finstrument%3Dpenilaian-2023%25401"
    );
    let (s, _, form) = get(&h, "/dashboard/login?next=%2Fdashboard%2Frankings", Auth::None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(form.contains(r#"<form class="login" id="login" method="post" action="/dashboard/login">"#));
    assert!(form.contains(r#"name="next" value="/dashboard/rankings""#));

    let post = |body: String| {
        Request::builder()
            .method("POST")
            .uri("/dashboard/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    let (s, headers, _) = send(&h, post(format!("token={}&next=%2Fdashboard%2Frankings", h.supervisor))).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dashboard/rankings");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert_eq!(cookie, format!("sidak_token={}; Path=/dashboard; HttpOnly; SameSite=Strict", h.supervisor));
    let (s, _, page) = get(&h, "/dashboard/rankings", Auth::Cookie(&h.supervisor)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("supervisor · jateng"));
    // Elsewhere than the dashboard is never a destination.
    let (_, headers, _) = send(&h, post(format!("token={}&next=https%3A%2F%2Fevil.example%2F", h.admin))).await;
    assert_eq!(headers[header::LOCATION], "/dashboard");
    // Wrong tokens and roles.
    let (s, _, page) = send(&h, post("token=sdk_nope&next=%2Fdashboard".into())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(page.contains("unknown token"), "the page says why");
    let (s, headers, page) = send(&h, post(format!("token={}", h.assessor))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(page.contains("role_forbidden") && !headers.contains_key(header::SET_COOKIE));
    // A cookie that no longer works is cleared.
    let (s, headers, _) = get(&h, "/dashboard", Auth::Cookie("sdk_revoked")).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));

    // `?token=` logs in and shows the same address without it.
    let (s, headers, _) =
        get(&h, &format!("/dashboard/regions/jateng?token={}&instrument=penilaian-2023%401", h.supervisor), Auth::None)
            .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dashboard/regions/jateng?instrument=penilaian-2023%401");
    assert!(headers[header::SET_COOKIE].to_str().unwrap().starts_with(&format!("sidak_token={};", h.supervisor)));
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    let (s, _, _) = get(&h, "/dashboard/regions/jateng?token=sdk_nope", Auth::None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Logging out clears the cookie.
    let req = Request::builder().method("POST").uri("/dashboard/logout").body(Body::empty()).unwrap();
    let (s, headers, _) = send(&h, req).await;
    assert_eq!((s, headers[header::LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/dashboard/login"));
    assert!(headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn the_drill_down_and_sync_health_pages() {
    let Season { h, photo, device, .. } = season().await;
    let (_, _, overview) = get(&h, "/dashboard", Auth::Bearer(&h.supervisor)).await;
    assert!(
        overview.contains(r#"<tr data-institution="kota-sukamaju" data-region="jateng" data-type="kota">"#),
        "{overview}"
    );
    assert!(!overview.contains("kab-mamuju"), "a supervisor sees its region only");
    assert!(overview.contains(r#"href="/dashboard/institutions/kota-sukamaju?instrument=penilaian-2023%401""#));
    let (_, _, inst) = get(&h, "/dashboard/institutions/kota-sukamaju", Auth::Bearer(&h.supervisor)).await;
    assert!(inst
        .contains(r#"href="/dashboard/institutions/kota-sukamaju/units/disdukcapil?instrument=penilaian-2023%401""#));
    assert!(inst.contains(r#"id="status""#) && inst.contains(r#"id="missing""#));
    let (_, _, unit) =
        get(&h, "/dashboard/institutions/kota-sukamaju/units/disdukcapil", Auth::Bearer(&h.supervisor)).await;
    assert!(unit.contains("/units/disdukcapil/products/ktp-el?instrument="), "{unit}");
    let (_, _, product) =
        get(&h, "/dashboard/institutions/kota-sukamaju/units/disdukcapil/products/ktp-el", Auth::Bearer(&h.supervisor))
            .await;
    assert!(product.contains("/products/ktp-el/indicators/proses.persyaratan?instrument="));
    assert!(product.contains(r#"data-node="proses.moto" data-verdict="weak""#), "{product}");
    let (_, _, indicator) = get(
        &h,
        "/dashboard/institutions/kota-sukamaju/units/disdukcapil/products/ktp-el/indicators/proses.moto",
        Auth::Bearer(&h.supervisor),
    )
    .await;
    assert!(indicator.contains(r#"<td class="field-value">0</td><td class="corrected">1</td>"#), "{indicator}");
    let (_, _, failed) = get(
        &h,
        "/dashboard/institutions/kota-sukamaju/units/disdukcapil/products/ktp-el/indicators/proses.persyaratan",
        Auth::Bearer(&h.supervisor),
    )
    .await;
    assert!(failed.contains(&format!(r#"href="/dashboard/evidence/{photo}""#)), "{failed}");
    assert!(failed.contains(&format!(r#"src="/dashboard/evidence/{photo}/file""#)));
    let (s, _, evidence) = get(&h, &format!("/dashboard/evidence/{photo}"), Auth::Bearer(&h.supervisor)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(evidence.contains("image/png") && evidence.contains("proses.persyaratan"));
    let (s, headers, bytes) = get(&h, &format!("/dashboard/evidence/{photo}/file"), Auth::Bearer(&h.supervisor)).await;
    assert_eq!((s, headers[header::CONTENT_TYPE].to_str().unwrap()), (StatusCode::OK, "image/png"));
    assert!(headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().starts_with("sandbox"));
    assert!(bytes.contains("a photo of the requirements board"));
    assert_eq!(get(&h, "/dashboard/evidence/ABC/file", Auth::Bearer(&h.admin)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&h, &format!("/dashboard/evidence/{}", "0".repeat(64)), Auth::Bearer(&h.admin)).await.0,
        StatusCode::NOT_FOUND
    );

    // The device reports a backlog; sync health shows it with its last push.
    let (s, _) = h
        .call(
            "POST",
            "/v1/origins/status",
            Some(&h.assessor),
            Some(json!({"origins": [device.origin], "pending": {"ops": 7, "files": 2}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, health) = get(&h, "/dashboard/sync", Auth::Bearer(&h.supervisor)).await;
    assert_eq!(s, StatusCode::OK);
    let row = format!(r#"<tr data-origin="{}" data-assessor="a1" data-unsent="true">"#, device.origin);
    assert!(health.contains(&row), "{health}");
    assert!(health.contains("7 ops, 2 files (reported"));
    assert!(health.contains(r#"<tr data-region="jateng">"#));
    assert!(!health.contains("never"), "the device has pushed: {health}");
}
