//! Cipher suites through the binary: `init --suite gm` makes a vault that
//! serves in 国密, and `keys rotate --suite gm`, `keys reseal` and `keys
//! retire` move a serving vault from `intl` to `gm`, its old codes
//! redeeming before, during and after.

use dzl_crypto::Suite;
use serde_json::json;

use crate::helpers::*;

/// `t` signing for a vault of `suite`.
fn signing_for(t: &Tenant, suite: Suite) -> Tenant {
    Tenant {
        id: t.id.clone(),
        signer: t.signer.clone().for_suite(suite),
    }
}

/// Two codes for `funder` on one deposit.
async fn two_codes(server: &Server, platform: &Tenant, funder: &Tenant, r: &str) -> [String; 2] {
    let d = server
        .deposit(platform, r, &[(funder, 3600), (funder, 3600)])
        .await;
    [0, 1].map(|i| d["codes"][i]["code"].as_str().unwrap().to_owned())
}

#[actix_web::test]
async fn init_suite_gm_makes_a_vault_that_serves_in_gm() {
    let v = Vault::new();
    let done = v.ok(&["init", "--suite", "gm"]);
    assert_eq!(done["suite"], "gm");
    let keys = v.ok(&["keys", "list"]);
    assert_eq!(keys["keys"][0]["suite"], "gm");
    let out = v.run(&["keys", "list"]);
    assert!(stdout(&out).contains("SUITE"), "{}", stdout(&out));
    let platform = signing_for(&v.tenant("platform", "Lending App"), Suite::Gm);
    let funder = signing_for(&v.tenant("funder", "City Bank"), Suite::Gm);
    let server = Server::start(&v.data(), v.root_key());
    let published = server.get("/v1/receipt-keys").await.json();
    assert_eq!(published["suite"], "gm");
    assert_eq!(published["keys"][0]["algorithm"], "SM2");
    let [first, _] = two_codes(&server, &platform, &funder, "GM-1").await;
    server.assert_redeems(&funder, &first).await;
    // A tenant signing as for an intl vault is refused as such.
    let intl = signing_for(&funder, Suite::Intl);
    let r = server
        .send(
            &intl,
            "POST",
            "/v1/redemptions",
            &json!({"code": first, "purpose": "credit_application"}),
        )
        .await;
    assert_problem(&r, 401, "unsupported_signature_algorithm");
    assert_eq!(v.ok(&["audit", "verify"])["intact"], true);

    let out = Vault::new().run(&["init", "--suite", "sm"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("expected intl or gm"),
        "{}",
        stderr(&out)
    );
}

#[actix_web::test]
async fn rotate_to_gm_reseal_and_retire_while_serving() {
    let v = Vault::initialised();
    let platform = v.tenant("platform", "Lending App");
    let funder = v.tenant("funder", "City Bank");
    let server = Server::start(&v.data(), v.root_key());
    let mut codes = Vec::new();
    for i in 0..6 {
        codes.push(two_codes(&server, &platform, &funder, &format!("MOVE-{i}")).await);
    }
    server.assert_redeems(&funder, &codes[0][0]).await;

    let rotated = v.ok_async(&["keys", "rotate", "--suite", "gm"]).await;
    assert_eq!(
        (
            &rotated["active_version"],
            &rotated["suite"],
            &rotated["previous_suite"]
        ),
        (&json!(2), &json!("gm"), &json!("intl"))
    );
    server.wait_reloaded().await;
    let r = server
        .send(&platform, "POST", "/v1/deposits", &json!({}))
        .await;
    assert_problem(&r, 401, "unsupported_signature_algorithm");
    let (platform, funder) = (
        signing_for(&platform, Suite::Gm),
        signing_for(&funder, Suite::Gm),
    );
    codes.push(two_codes(&server, &platform, &funder, "MOVE-GM").await);
    let suites: Vec<_> = v.ok(&["keys", "list"])["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["suite"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(suites, ["intl", "gm"]);

    // The reseal runs while the funder redeems the deposits' first codes.
    let (resealed, ()) = tokio::join!(
        v.json_async(&["keys", "reseal", "--batch-size", "1"]),
        async {
            for c in &codes[1..] {
                server.assert_redeems(&funder, &c[0]).await;
            }
        }
    );
    assert_eq!(resealed.0, 0, "{}", resealed.1);
    let resealed = resealed.1;
    assert_eq!(resealed["suite"], "gm");
    assert_eq!(resealed["deposits_found"], 6);
    assert_eq!(resealed["deposits_resealed"], 6);
    assert_eq!(resealed["deposits_remaining"], 0);
    // Two tenant secrets, the Ed25519 receipt key and the subject-index key.
    assert_eq!(resealed["secrets_rewrapped"], 4);
    let again = v.ok_async(&["keys", "reseal"]).await;
    assert_eq!(again["deposits_found"], 0);

    let retired = v.ok_async(&["keys", "retire", "1"]).await;
    assert_eq!(retired["changed"], true);
    assert_eq!(server.loaded_versions().await, [2]);
    for c in &codes {
        server.assert_redeems(&funder, &c[1]).await;
    }
    assert_eq!(v.ok(&["audit", "verify"])["intact"], true);
}
