//! The key lifecycle through the binary, with the real server serving the
//! same data directory: rotate → rewrap → retire keeps records of every age
//! redeemable; retire is refused while a version is needed and for the
//! active one; a rewrap during a storm of deposits and redemptions loses
//! nothing; after `root rekey` only the new root key opens the vault.

use crate::helpers::*;

#[actix_web::test]
async fn rotate_rewrap_retire_while_serving_keeps_records_of_every_age_redeemable() {
    let v = Vault::initialised();
    let platform = v.tenant("platform", "Lending App");
    let funder = v.tenant("funder", "City Bank");
    let server = Server::start(&v.data(), v.root_key());
    let mut codes = vec![server.deposit_code(&platform, &funder, "AGE-1").await];

    for version in [2u64, 3] {
        let rotated = v.ok_async(&["keys", "rotate"]).await;
        assert_eq!(rotated["active_version"], version);
        // The running server encrypts new deposits under it without restart.
        let loaded = server.loaded_versions().await;
        assert_eq!(*loaded.last().unwrap() as u64, version, "{loaded:?}");
        codes.push(
            server
                .deposit_code(&platform, &funder, &format!("AGE-{version}"))
                .await,
        );
    }
    let before = v.key_versions();
    let rewrapped = v.ok_async(&["keys", "rewrap"]).await;
    let retire1 = v.ok_async(&["keys", "retire", "1"]).await;
    let retire2 = v.ok_async(&["keys", "retire", "2"]).await;
    let after = v.key_versions();
    let loaded = server.loaded_versions().await;

    assert_eq!(
        before,
        [
            (1, "decrypt_only".into(), 2),
            (2, "decrypt_only".into(), 2),
            (3, "active".into(), 2)
        ]
    );
    assert_eq!(rewrapped["active_version"], 3);
    assert_eq!(rewrapped["data_keys_found"], 4);
    assert_eq!(rewrapped["data_keys_rewrapped"], 4);
    assert_eq!(rewrapped["data_keys_remaining"], 0);
    // Two tenant secrets and two vault secrets, all sealed under version 1.
    assert_eq!(rewrapped["secrets_rewrapped"], 4);
    assert_eq!(
        retire1,
        serde_json::json!({"version": 1, "state": "retired", "changed": true})
    );
    assert_eq!(retire2["changed"], true);
    assert_eq!(
        after,
        [
            (1, "retired".into(), 0),
            (2, "retired".into(), 0),
            (3, "active".into(), 6)
        ]
    );
    assert_eq!(loaded, [3], "the server dropped the retired versions");
    for code in &codes {
        server.assert_redeems(&funder, code).await;
    }
    let newest = server.deposit_code(&platform, &funder, "AGE-4").await;
    server.assert_redeems(&funder, &newest).await;
    assert_eq!(v.ok(&["keys", "retire", "1"])["changed"], false);
    assert_eq!(v.ok(&["audit", "verify"])["intact"], true);
}

#[actix_web::test]
async fn retire_is_refused_while_anything_needs_the_version_and_always_for_the_active_one() {
    let v = Vault::initialised();
    let platform = v.tenant("platform", "Lending App");
    let funder = v.tenant("funder", "City Bank");
    let server = Server::start(&v.data(), v.root_key());
    let code = server.deposit_code(&platform, &funder, "OLD-1").await;
    v.ok_async(&["keys", "rotate"]).await;

    let (in_use, in_use_doc) = v.json_async(&["keys", "retire", "1"]).await;
    let text = v.run(&["keys", "retire", "1"]);
    let (active, active_doc) = v.json_async(&["keys", "retire", "2"]).await;
    let (unknown, unknown_doc) = v.json_async(&["keys", "retire", "7"]).await;
    let malformed = v.run(&["keys", "retire", "zero"]);
    let listed = v.key_versions();

    assert_eq!(in_use, 1);
    assert_eq!(in_use_doc["code"], "key_in_use");
    let message = in_use_doc["error"].as_str().unwrap();
    for part in [
        "version 1",
        "1 data key",
        "1 identity key",
        "2 tenant secrets",
        "2 vault secrets",
        "keys rewrap",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert_eq!(code_of(&text), 1);
    assert!(
        stderr(&text).starts_with("error: refused: version 1 still protects"),
        "{}",
        stderr(&text)
    );
    assert_eq!(active, 1);
    assert_eq!(active_doc["code"], "key_active");
    assert!(active_doc["error"].as_str().unwrap().contains("active key"));
    assert_eq!(unknown, 1);
    assert_eq!(unknown_doc["code"], "key_version_not_found");
    assert_eq!(code_of(&malformed), 2);
    assert_eq!(
        listed,
        [(1, "decrypt_only".into(), 2), (2, "active".into(), 0)],
        "nothing changed"
    );
    // The refusals are in the audit trail too.
    let export = stdout(&v.run(&["audit", "export"]));
    assert_eq!(export.matches("\"operation\":\"keys.retire\"").count(), 4);
    assert!(export.contains("\"result\":\"key_in_use\""));

    // Once rewrapped, version 1 goes, and the old record still redeems.
    v.ok_async(&["keys", "rewrap"]).await;
    v.ok_async(&["keys", "retire", "1"]).await;
    assert_eq!(server.loaded_versions().await, [2]);
    server.assert_redeems(&funder, &code).await;
}

fn code_of(out: &std::process::Output) -> i32 {
    code(out)
}

#[actix_web::test]
async fn a_rewrap_during_a_deposit_and_redemption_storm_loses_nothing() {
    let v = Vault::initialised();
    let platform = v.tenant("platform", "Lending App");
    let funder = v.tenant("funder", "City Bank");
    let server = std::rc::Rc::new(Server::start(&v.data(), v.root_key()));
    const OLD: usize = 120;
    const TASKS: usize = 4;
    const ROUNDS: usize = 20;
    let mut old = Vec::new();
    for i in 0..OLD {
        old.push(
            server
                .deposit_code(&platform, &funder, &format!("OLD-{i}"))
                .await,
        );
    }
    v.ok_async(&["keys", "rotate"]).await;
    server.loaded_versions().await;

    // The storm: each task deposits, redeems at once, keeps a second code
    // for later, and redeems old records while they are being rewrapped.
    let mut storm = Vec::new();
    for t in 0..TASKS {
        let (server, platform, funder) = (server.clone(), platform.clone(), funder.clone());
        let mine: Vec<String> = old.iter().skip(t).step_by(2 * TASKS).cloned().collect();
        storm.push(actix_web::rt::spawn(async move {
            let mut kept = Vec::new();
            for r in 0..ROUNDS {
                let now = server
                    .deposit_code(&platform, &funder, &format!("S{t}-{r}-A"))
                    .await;
                server.assert_redeems(&funder, &now).await;
                kept.push(
                    server
                        .deposit_code(&platform, &funder, &format!("S{t}-{r}-B"))
                        .await,
                );
                if let Some(code) = mine.get(r) {
                    server.assert_redeems(&funder, code).await;
                }
            }
            (kept, mine)
        }));
    }
    let rewrap = v.ok_async(&["keys", "rewrap", "--batch-size", "16"]).await;
    let mut kept = Vec::new();
    let mut redeemed_old = std::collections::HashSet::new();
    for task in storm {
        let (k, mine) = task.await.unwrap();
        kept.extend(k);
        redeemed_old.extend(mine.into_iter().take(ROUNDS));
    }

    assert_eq!(rewrap["data_keys_found"], 2 * OLD as u64);
    assert_eq!(rewrap["data_keys_rewrapped"], 2 * OLD as u64);
    assert_eq!(rewrap["data_keys_remaining"], 0);
    let versions = v.key_versions();
    assert_eq!(versions[0].2, 0, "{versions:?}");
    assert_eq!(
        versions[1].2,
        2 * (OLD + 2 * TASKS * ROUNDS) as u64,
        "{versions:?}"
    );
    v.ok_async(&["keys", "retire", "1"]).await;
    assert_eq!(server.loaded_versions().await, [2]);
    for code in old
        .iter()
        .filter(|c| !redeemed_old.contains(*c))
        .chain(&kept)
    {
        server.assert_redeems(&funder, code).await;
    }
    assert_eq!(v.ok(&["audit", "verify"])["intact"], true);
}

#[actix_web::test]
async fn after_root_rekey_only_the_new_root_key_opens_the_vault() {
    let v = Vault::initialised();
    let platform = v.tenant("platform", "Lending App");
    let funder = v.tenant("funder", "City Bank");
    v.ok(&["keys", "rotate"]);
    let old_key = std::fs::read_to_string(v.key_file()).unwrap();
    let new_file = v.dir.path().join("root-2.key");
    let new_path = new_file.to_str().unwrap();

    let rekeyed = v.ok(&["root", "rekey", "--new-root-key-file", new_path]);
    let again = v
        .cmd()
        .env("DZL_ROOT_KEY_FILE", &new_file)
        .args(["--json", "root", "rekey", "--new-root-key-file", new_path])
        .output()
        .unwrap();
    let again = (code(&again), one_document(&again));
    let new_key = std::fs::read_to_string(&new_file).unwrap();
    let with_old = v.json(&["tenant", "list"]);
    let with_new = v
        .cmd()
        .env("DZL_ROOT_KEY_FILE", &new_file)
        .args(["--json", "keys", "list"])
        .output()
        .unwrap();

    assert_eq!(mode(&new_file), 0o600);
    assert_eq!(rekeyed["versions"], serde_json::json!([1, 2]));
    assert_ne!(
        rekeyed["root_key_fingerprint"],
        rekeyed["previous_root_key_fingerprint"]
    );
    assert!(!rekeyed.to_string().contains(new_key.trim()));
    assert_eq!(again.0, 1);
    assert_eq!(again.1["code"], "file_exists");
    assert_eq!(
        std::fs::read_to_string(&new_file).unwrap(),
        new_key,
        "never overwritten"
    );
    assert_eq!(with_old.0, 3);
    assert_eq!(with_old.1["code"], "wrong_root_key");
    assert_eq!(code(&with_new), 0, "{}", stderr(&with_new));
    assert_eq!(one_document(&with_new)["keys"].as_array().unwrap().len(), 2);

    // A server restarted with the new key serves; with the old one it is
    // never ready. (One server per data directory: the old-key server runs
    // on a copy.)
    let copy = v.dir.path().join("data-copy");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(v.data()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    let new_server = Server::start(&v.data(), RootKey::from_base64(&new_key).unwrap());
    let old_server = Server::start(&copy, RootKey::from_base64(&old_key).unwrap());

    let ready = new_server.get("/readyz").await;
    let not_ready = old_server.get("/readyz").await;

    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    assert_problem(&not_ready, 503, "not_ready");
    let code = new_server
        .deposit_code(&platform, &funder, "AFTER-REKEY")
        .await;
    new_server.assert_redeems(&funder, &code).await;
    let audit = v
        .cmd()
        .env("DZL_ROOT_KEY_FILE", &new_file)
        .args(["--json", "audit", "verify"])
        .output()
        .unwrap();
    assert_eq!(code_of(&audit), 0, "{}", stderr(&audit));
}

use dzl_crypto::RootKey;
