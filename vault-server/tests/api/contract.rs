//! The served OpenAPI document and the router agree, and every route of the
//! document answers (not 404/405).

use crate::helpers::*;

#[actix_web::test]
async fn every_registered_route_is_in_the_openapi_document_and_back() {
    let mut registered: Vec<(String, String)> = dzl_vault_server::routes()
        .into_iter()
        .map(|(m, p, _)| (m.to_owned(), p.to_owned()))
        .collect();
    let mut documented = dzl_vault_server::openapi::operations();
    registered.sort();
    documented.sort();
    assert_eq!(registered, documented);

    let app = spawn_app().await;
    let r = app
        .anonymous()
        .send("GET", "/v1/openapi.json", b"")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let text = String::from_utf8_lossy(&r.body);
    let r405 = app
        .anonymous()
        .send("PUT", "/v1/deposits", b"")
        .await
        .unwrap();
    assert_problem(&r405, 405, "method_not_allowed");
    assert_eq!(r405.headers.get("allow").unwrap(), "POST");
    assert_problem(
        &app.anonymous()
            .send("GET", "/v2/nothing", b"")
            .await
            .unwrap(),
        404,
        "not_found",
    );
    assert!(
        !text.contains("applicant.schema.json\""),
        "group schemas are inlined when served"
    );
    for (method, path) in documented {
        let concrete = path
            .replace("{deposit_id}", "dep_00000000000000000000000000000000")
            .replace("{code_id}", "cod_00000000000000000000000000000000")
            .replace("{redemption_id}", "red_00000000000000000000000000000000");
        let r = app
            .client(&app.platform)
            .send(&method, &concrete, b"")
            .await
            .unwrap();
        let code = r.json()["code"].as_str().unwrap_or("").to_owned();
        assert!(
            code != "not_found" && code != "method_not_allowed",
            "{method} {path}: {code}"
        );
    }
}
