//! `tenant rotate-secret`: the new secret works at once, the old one keeps
//! working for the configured overlap (through a key rotation, rewrap and
//! retirement), and is refused after it.

use chrono::Duration;

use crate::helpers::*;

#[actix_web::test]
async fn the_old_secret_works_during_the_overlap_only() {
    let v = Vault::initialised();
    let platform = v.tenant("platform", "Lending App");
    let funder = v.tenant("funder", "City Bank");
    let server = Server::start(&v.data(), v.root_key());
    server.deposit_code(&platform, &funder, "BEFORE").await;

    let rotated = v.ok_async(&["tenant", "rotate-secret", &platform.id]).await;
    server.wait_reloaded().await;
    let new = Tenant {
        id: platform.id.clone(),
        signer: dzl_sdk::Signer::new(
            rotated["key_id"].as_str().unwrap(),
            rotated["secret"].as_str().unwrap(),
        ),
    };

    assert_eq!(
        keys(&rotated),
        [
            "key_id",
            "previous_secret_valid_until",
            "secret",
            "tenant_id"
        ]
    );
    assert_eq!(rotated["tenant_id"], platform.id);
    let until = chrono::DateTime::parse_from_rfc3339(
        rotated["previous_secret_valid_until"].as_str().unwrap(),
    )
    .unwrap();
    let overlap = until.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        (Duration::seconds(86_390)..=Duration::seconds(86_400)).contains(&overlap),
        "{overlap}"
    );
    server.deposit_code(&platform, &funder, "OLD-DURING").await;
    server.deposit_code(&new, &funder, "NEW-DURING").await;

    // A key rotation, rewrap and retirement carry the previous secret along.
    v.ok_async(&["keys", "rotate"]).await;
    let rewrap = v.ok_async(&["keys", "rewrap"]).await;
    v.ok_async(&["keys", "retire", "1"]).await;
    assert_eq!(server.loaded_versions().await, [2]);
    // Platform (current and previous), funder, two vault secrets.
    assert_eq!(rewrap["secrets_rewrapped"], 5);
    server
        .deposit_code(&platform, &funder, "OLD-AFTER-RETIRE")
        .await;

    server.advance(Duration::seconds(86_401));
    let old_after = server
        .send(
            &platform,
            "POST",
            "/v1/deposits/dep_x/codes",
            &serde_json::json!({}),
        )
        .await;

    assert_problem(&old_after, 401, "invalid_signature");
    server.deposit_code(&new, &funder, "NEW-AFTER").await;
    let unknown = v.json(&[
        "tenant",
        "rotate-secret",
        "ten_0123456789abcdef0123456789abcdef",
    ]);
    assert_eq!(unknown.0, 1);
    assert_eq!(unknown.1["code"], "tenant_not_found");
    let short = v
        .cmd()
        .env("DZL__TENANTS__SECRET_OVERLAP_SECONDS", "60")
        .args(["--json", "tenant", "rotate-secret", &funder.id])
        .output()
        .unwrap();
    assert_eq!(code(&short), 0, "{}", stderr(&short));
    let short_until = chrono::DateTime::parse_from_rfc3339(
        one_document(&short)["previous_secret_valid_until"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(short_until.with_timezone(&chrono::Utc) - chrono::Utc::now() <= Duration::seconds(60));
}
