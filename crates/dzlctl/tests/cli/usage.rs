//! `usage` counts exactly the calls made, per tenant, operation and day;
//! filters by day and tenant; `--csv` parses as CSV.

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn usage_counts_the_calls_made() {
    let v = Vault::initialised();
    let platform = v.tenant("platform", "Lending App, Ltd");
    let funder = v.tenant("funder", "City Bank");
    let server = Server::start(&v.data(), v.root_key());
    let mut codes = Vec::new();
    for i in 0..3 {
        codes.push(
            server
                .deposit(&platform, &format!("U-{i}"), &[(&funder, 3600)])
                .await,
        );
    }
    let code_at = |i: usize| codes[i]["codes"][0]["code"].as_str().unwrap().to_owned();
    server.assert_redeems(&funder, &code_at(0)).await;
    server.assert_redeems(&funder, &code_at(1)).await;
    assert_problem(
        &server.redeem(&funder, &code_at(0)).await,
        409,
        "code_already_redeemed",
    );
    let id = codes[2]["codes"][0]["code_id"].as_str().unwrap();
    let status = server
        .send(&platform, "GET", &format!("/v1/codes/{id}"), &Value::Null)
        .await;
    assert_eq!(status.status, 200);
    let today = Utc::now().date_naive();
    let (yesterday, tomorrow) = (today - Duration::days(1), today + Duration::days(1));
    let day = today.to_string();

    let all = v.ok(&["usage"]);
    let funder_only = v.ok(&["usage", "--tenant", &funder.id]);
    let bounded = v.ok(&["usage", "--from", &day, "--to", &day]);
    let future = v.ok(&["usage", "--from", &tomorrow.to_string()]);
    let past = v.ok(&["usage", "--to", &yesterday.to_string()]);
    let csv_out = v.run(&["usage", "--csv"]);
    let both = v.run(&["--json", "usage", "--csv"]);
    let backwards = v.run(&["usage", "--from", &day, "--to", &yesterday.to_string()]);
    let text = stdout(&v.run(&["usage"]));

    let row = |tenant: &Tenant, name: &str, op: &str, ok: u64, refused: u64| {
        json!({"day": day, "tenant_id": tenant.id, "tenant_name": name, "operation": op,
               "calls": ok + refused, "ok": ok, "refused": refused})
    };
    let expected = {
        let mut rows = vec![
            row(&platform, "Lending App, Ltd", "code.status", 1, 0),
            row(&platform, "Lending App, Ltd", "deposit.create", 3, 0),
            row(&funder, "City Bank", "redemption.create", 2, 1),
        ];
        rows.sort_by_key(|r| (r["tenant_id"].to_string(), r["operation"].to_string()));
        rows
    };
    assert_eq!(all["rows"].as_array().unwrap(), &expected);
    assert_eq!(all["total_calls"], 7);
    assert_eq!(funder_only["rows"].as_array().unwrap().len(), 1);
    assert_eq!(funder_only["rows"][0]["operation"], "redemption.create");
    assert_eq!(funder_only["tenant_id"], funder.id);
    assert_eq!(bounded["rows"], all["rows"]);
    assert_eq!(future["rows"], json!([]));
    assert_eq!(past["rows"], json!([]));
    assert_eq!(code(&csv_out), 0, "{}", stderr(&csv_out));
    let mut reader = csv::Reader::from_reader(csv_out.stdout.as_slice());
    assert_eq!(
        reader.headers().unwrap(),
        vec![
            "day",
            "tenant_id",
            "tenant_name",
            "operation",
            "calls",
            "ok",
            "refused"
        ]
    );
    let records: Vec<Value> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let n = |i: usize| r[i].parse::<u64>().unwrap();
            json!({"day": &r[0], "tenant_id": &r[1], "tenant_name": &r[2], "operation": &r[3],
                   "calls": n(4), "ok": n(5), "refused": n(6)})
        })
        .collect();
    assert_eq!(
        records, expected,
        "the CSV has the JSON's rows, the comma in the name quoted"
    );
    assert_eq!(code(&both), 2);
    assert_eq!(code(&backwards), 2);
    assert!(text.contains("Total: 7 calls."), "{text}");
    // The audit trail records the reports, and holds no personal data.
    let export = stdout(&v.run(&["audit", "export"]));
    assert!(export.matches("\"operation\":\"usage.report\"").count() >= 6);
    for canary in [NAME, ID_NUMBER, PHONE] {
        assert!(
            !export.contains(canary),
            "{canary} leaked into the audit export"
        );
    }
}
