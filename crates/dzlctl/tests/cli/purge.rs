//! `purge` on a clock moved forward (the server's injected clock for the
//! deposits, the tests-only `--now` for the CLI): it expires exactly the
//! codes past their deadline, crypto-shreds exactly the deposits past
//! retention, and `--dry-run` changes nothing.

use chrono::Duration;
use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn purge_removes_what_retention_says_and_nothing_else() {
    let v = Vault::initialised();
    let config = v.dir.path().join("dzl.toml");
    std::fs::write(&config, "[retention]\ndeposit_days = 10\n").unwrap();
    let config = config.to_str().unwrap();
    let platform = v.tenant("platform", "Lending App");
    let funder = v.tenant("funder", "City Bank");
    let server = Server::start(&v.data(), v.root_key());
    // Day 0: deposit A with a short and a long code.
    let a = server
        .deposit(&platform, "A", &[(&funder, 60), (&funder, 30 * 86_400)])
        .await;
    // Day 20: deposit B, the same.
    server.advance(Duration::days(20));
    let b = server
        .deposit(&platform, "B", &[(&funder, 60), (&funder, 30 * 86_400)])
        .await;
    let code = |d: &serde_json::Value, i: usize| d["codes"][i]["code"].as_str().unwrap().to_owned();
    let code_id =
        |d: &serde_json::Value, i: usize| d["codes"][i]["code_id"].as_str().unwrap().to_owned();
    // Two minutes later: both short codes are past their deadline; A is 20
    // days old (past 10 days' retention), B is not.
    let now = rfc3339(server.now() + Duration::seconds(120));
    let purge = |extra: &[&str]| {
        let mut args = vec!["--config", config, "--now", &now, "purge"];
        args.extend_from_slice(extra);
        v.ok(&args)
    };
    let expected = json!({"codes_expired": 2, "deposits_shredded": 1, "codes_revoked": 1});
    let counts = |doc: &serde_json::Value| {
        json!({
            "codes_expired": doc["codes_expired"],
            "deposits_shredded": doc["deposits_shredded"],
            "codes_revoked": doc["codes_revoked"],
        })
    };
    let data_keys = |v: &Vault| v.key_versions().iter().map(|k| k.2).sum::<u64>();

    let dry = purge(&["--dry-run"]);
    let dry_again = purge(&["--dry-run"]);
    let keys_after_dry = data_keys(&v);
    let a_long_after_dry = server
        .send(
            &platform,
            "GET",
            &format!("/v1/codes/{}", code_id(&a, 1)),
            &serde_json::Value::Null,
        )
        .await
        .json();

    assert_eq!(counts(&dry), expected);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["retention_days"], 10);
    assert_eq!(dry["now"], now);
    assert_eq!(counts(&dry_again), expected, "a dry run changes nothing");
    assert_eq!(keys_after_dry, 4);
    assert_eq!(a_long_after_dry["state"], "issued");

    let done = purge(&[]);
    let after = purge(&["--dry-run"]);

    assert_eq!(counts(&done), expected);
    assert_eq!(done["dry_run"], false);
    assert_eq!(
        counts(&after),
        json!({"codes_expired": 0, "deposits_shredded": 0, "codes_revoked": 0})
    );
    assert_eq!(data_keys(&v), 2, "only B's keys remain");
    // A's data is gone; its live code was revoked with it.
    assert_problem(
        &server.redeem(&funder, &code(&a, 1)).await,
        410,
        "code_revoked",
    );
    assert_problem(
        &server.redeem(&funder, &code(&a, 0)).await,
        410,
        "code_expired",
    );
    assert_problem(
        &server.redeem(&funder, &code(&b, 0)).await,
        410,
        "code_expired",
    );
    let status = server
        .send(
            &platform,
            "GET",
            &format!("/v1/codes/{}", code_id(&b, 0)),
            &serde_json::Value::Null,
        )
        .await
        .json();
    assert_eq!(status["state"], "expired");
    // B is untouched.
    server.assert_redeems(&funder, &code(&b, 1)).await;
    // Audited: one deposit.purge for A only, one codes.expire, one vault.purge.
    let export = stdout(&v.run(&["audit", "export"]));
    let a_id = a["deposit_id"].as_str().unwrap();
    let b_id = b["deposit_id"].as_str().unwrap();
    let purged: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["operation"] == "deposit.purge")
        .collect();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0]["deposit_id"], a_id);
    assert!(!purged.iter().any(|e| e["deposit_id"] == b_id));
    assert_eq!(export.matches("\"operation\":\"codes.expire\"").count(), 1);
    assert_eq!(
        export.matches("\"operation\":\"vault.purge\"").count(),
        1,
        "dry runs are not recorded"
    );
    assert_eq!(v.ok(&["audit", "verify"])["intact"], true);
}
