//! The root key in a hardware module (SoftHSM2, set up by the test itself
//! in a temp dir): `init --root-key pkcs11:…`, every verb and the server
//! opening the vault through the module, wrong PINs and labels refused with
//! a clear message, and `root rekey` file → pkcs11 → pkcs11 → file.
//! Skipped, loudly, without SoftHSM2.

use std::process::Command;

use dzl_hsm::softhsm::SoftHsm;
use serde_json::Value;

use crate::helpers::{code, one_document, stderr, Server, Vault};

/// One SoftHSM2 for this test binary: the in-process server's module reads
/// SOFTHSM2_CONF once; the dzlctl processes are given the same one. Each
/// test has tokens of its own: SoftHSM2's file store does not take one
/// process writing a token while another logs in to it.
fn hsm(test: &str) -> Option<&'static SoftHsm> {
    dzl_hsm::softhsm::shared(&["dzl-cli", "dzl-cli-pin", "dzl-cli-a", "dzl-cli-b"], test)
}

/// These tests run one at a time: SoftHSM2's file store is one directory
/// for every token, and two processes opening it at once (a test's dzlctl
/// beside another test's) fail now and then with CKR_GENERAL_ERROR.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// dzlctl on the vault's data dir with the root key in the module at `uri`
/// (no key file).
fn with_pkcs11(v: &Vault, hsm: &SoftHsm, uri: &str) -> Command {
    let mut cmd = v.cmd();
    let (name, conf) = hsm.env();
    cmd.env_remove("DZL_ROOT_KEY_FILE")
        .env(name, conf)
        .env("DZL__ROOT_KEY__PKCS11", uri);
    cmd
}

fn json(mut cmd: Command, args: &[&str]) -> (i32, Value, String) {
    let out = cmd.arg("--json").args(args).output().unwrap();
    (code(&out), one_document(&out), stderr(&out))
}

#[actix_web::test]
async fn a_vault_made_with_its_root_key_in_the_module_serves_from_it() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(hsm) = hsm("a_vault_made_with_its_root_key_in_the_module_serves_from_it") else {
        return;
    };
    let v = Vault::new();
    let uri = hsm.uri("dzl-cli", "init-root");

    let mut init = v.cmd();
    init.env_remove("DZL_ROOT_KEY_FILE")
        .env(hsm.env().0, hsm.env().1);
    let (rc, made, err) = json(init, &["init", "--root-key", &uri]);
    assert_eq!(rc, 0, "{made} {err}");
    assert_eq!(made["root_key_created"], true);
    assert_eq!(
        made["root_key_pkcs11"],
        "token \"dzl-cli\", object \"init-root\""
    );
    assert_eq!(made["root_key_file"], Value::Null);
    assert!(!v.key_file().exists(), "no key file is written");

    // Every later verb opens the keyring through the module.
    let (rc, tenant, err) = json(
        with_pkcs11(&v, hsm, &uri),
        &["tenant", "add", "--kind", "platform", "--name", "P"],
    );
    assert_eq!(rc, 0, "{tenant} {err}");
    let (rc, keys, _) = json(with_pkcs11(&v, hsm, &uri), &["keys", "list"]);
    assert_eq!(rc, 0);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    // A second init changes nothing, and finds the key it made.
    let (rc, again, _) = json(with_pkcs11(&v, hsm, &uri), &["init"]);
    assert_eq!(
        (rc, again["code"].as_str()),
        (1, Some("already_initialised"))
    );

    // The server opens the vault with the key in the module, as
    // `dzl-vault serve` does with DZL__ROOT_KEY__PKCS11.
    let mut settings = dzl_vault_server::settings::Settings::default();
    settings.root_key.pkcs11 = Some(uri.clone());
    let root = dzl_hsm::Pkcs11Root::open(&dzl_hsm::Pkcs11Uri::parse(&uri).unwrap()).unwrap();
    let server = Server::start(&v.data(), root);
    let ready = server.get("/readyz").await;
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    let platform = v_tenant(&tenant);
    let funder_doc = json(
        with_pkcs11(&v, hsm, &uri),
        &["tenant", "add", "--kind", "funder", "--name", "F"],
    )
    .1;
    server.wait_reloaded().await;
    let funder = v_tenant(&funder_doc);
    let code = server.deposit_code(&platform, &funder, "HSM-1").await;
    server.assert_redeems(&funder, &code).await;
}

fn v_tenant(doc: &Value) -> crate::helpers::Tenant {
    crate::helpers::Tenant {
        id: doc["tenant_id"].as_str().unwrap().to_owned(),
        signer: dzl_sdk::Signer::new(
            doc["key_id"].as_str().unwrap(),
            doc["secret"].as_str().unwrap(),
        ),
    }
}

#[test]
fn a_wrong_pin_or_label_is_refused_with_a_clear_message() {
    let _alone = ONE_AT_A_TIME.blocking_lock();
    let Some(hsm) = hsm("a_wrong_pin_or_label_is_refused_with_a_clear_message") else {
        return;
    };
    let v = Vault::new();
    let uri = hsm.uri("dzl-cli-pin", "pin-root");
    let mut init = v.cmd();
    init.env_remove("DZL_ROOT_KEY_FILE")
        .env(hsm.env().0, hsm.env().1);
    assert_eq!(json(init, &["init", "--root-key", &uri]).0, 0);

    let wrong_pin = v.dir.path().join("wrong.pin");
    std::fs::write(&wrong_pin, "00000000\n").unwrap();
    let bad_pin = uri.replace(
        &format!("pin-source=file:{}", hsm.pin_file.display()),
        &format!("pin-source=file:{}", wrong_pin.display()),
    );
    let (rc, doc, _) = json(with_pkcs11(&v, hsm, &bad_pin), &["keys", "list"]);
    assert_eq!(rc, 3, "{doc}");
    assert_eq!(doc["code"], "root_key_unavailable");
    let msg = doc.to_string();
    assert!(msg.contains("refused the PIN"), "{msg}");
    assert!(!msg.contains("00000000"), "{msg}");

    let out = with_pkcs11(&v, hsm, &hsm.uri("dzl-cli-pin", "no-such-root"))
        .args(["keys", "list"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains(
            "no secret key labelled \"no-such-root\" in the PKCS#11 token \"dzl-cli-pin\""
        ),
        "{}",
        stderr(&out)
    );

    // A key file beside the pkcs11: URI is ambiguous: refused.
    let mut both = with_pkcs11(&v, hsm, &uri);
    both.env("DZL_ROOT_KEY_FILE", v.key_file());
    let (rc, doc, _) = json(both, &["keys", "list"]);
    assert_eq!(
        (rc, doc["code"].as_str()),
        (3, Some("root_key_unavailable"))
    );
}

/// file → pkcs11 → another pkcs11 key → file: after each step only the new
/// key opens the vault, and what was deposited before still redeems.
#[actix_web::test]
async fn root_rekey_moves_between_a_key_file_and_the_module() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(hsm) = hsm("root_rekey_moves_between_a_key_file_and_the_module") else {
        return;
    };
    let v = Vault::initialised();
    let platform = v.tenant("platform", "P");
    let funder = v.tenant("funder", "F");
    // This server keeps the data directory (one server per directory);
    // after the rekeys it can no longer open the keyring, and a copy of
    // the directory is served with the last key instead.
    let first = Server::start(&v.data(), v.root_key());
    let first_code = first.deposit_code(&platform, &funder, "BEFORE").await;
    let uri_a = hsm.uri("dzl-cli-a", "rekey-a");
    let uri_b = hsm.uri("dzl-cli-b", "rekey-b");

    // file → pkcs11
    let mut cmd = v.cmd();
    cmd.env(hsm.env().0, hsm.env().1);
    let (rc, to_a, err) = json(cmd, &["root", "rekey", "--new-root-key", &uri_a]);
    assert_eq!(rc, 0, "{to_a} {err}");
    assert_eq!(
        to_a["new_root_key_pkcs11"],
        "token \"dzl-cli-a\", object \"rekey-a\""
    );
    assert_eq!(to_a["new_root_key_file"], Value::Null);
    assert_eq!(v.json(&["keys", "list"]).1["code"], "wrong_root_key");
    assert_eq!(json(with_pkcs11(&v, hsm, &uri_a), &["keys", "list"]).0, 0);

    // pkcs11 → pkcs11 (another token), and not onto itself
    let (rc, same, _) = json(
        with_pkcs11(&v, hsm, &uri_a),
        &["root", "rekey", "--new-root-key", &uri_a],
    );
    assert_eq!((rc, same["code"].as_str()), (1, Some("new_root_key")));
    let (rc, to_b, err) = json(
        with_pkcs11(&v, hsm, &uri_a),
        &["root", "rekey", "--new-root-key", &uri_b],
    );
    assert_eq!(rc, 0, "{to_b} {err}");
    assert_eq!(
        to_b["previous_root_key_fingerprint"],
        to_a["root_key_fingerprint"]
    );
    assert_eq!(
        json(with_pkcs11(&v, hsm, &uri_a), &["keys", "list"]).1["code"],
        "wrong_root_key"
    );

    // pkcs11 → file
    let back_file = v.dir.path().join("root-back.key");
    let (rc, back, err) = json(
        with_pkcs11(&v, hsm, &uri_b),
        &[
            "root",
            "rekey",
            "--new-root-key-file",
            back_file.to_str().unwrap(),
        ],
    );
    assert_eq!(rc, 0, "{back} {err}");
    assert_eq!(
        json(with_pkcs11(&v, hsm, &uri_b), &["keys", "list"]).1["code"],
        "wrong_root_key"
    );
    let out = v
        .cmd()
        .env("DZL_ROOT_KEY_FILE", &back_file)
        .args(["--json", "audit", "verify"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(one_document(&out)["intact"], true);

    // What was deposited under the first key file still redeems.
    let copy = v.dir.path().join("data-copy");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(v.data()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    let root =
        dzl_crypto::RootKey::from_base64(&std::fs::read_to_string(&back_file).unwrap()).unwrap();
    let server = Server::start(&copy, root);
    server.assert_redeems(&funder, &first_code).await;
}
