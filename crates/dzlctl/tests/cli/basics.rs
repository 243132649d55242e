//! The first verbs: init, tenants, configuration, errors and help.

use crate::helpers::*;
use serde_json::Value;

#[test]
fn init_writes_a_0600_root_key_prints_its_fingerprint_and_refuses_a_second_init() {
    let v = Vault::new();

    let out = v.run(&["init"]);

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(mode(&v.key_file()), 0o600);
    let key = std::fs::read_to_string(v.key_file()).unwrap();
    let text = stdout(&out);
    assert!(text.contains("root key fingerprint"), "{text}");
    assert!(text.contains(&v.data().display().to_string()), "{text}");
    assert!(
        !text.contains(key.trim()),
        "the root key must never be printed"
    );
    assert!(!stderr(&out).contains(key.trim()));

    let again = v.run(&["init"]);

    assert_eq!(code(&again), 1);
    assert!(
        stderr(&again).starts_with("error: ") && stderr(&again).contains("already initialised"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(v.key_file()).unwrap(), key);
}

#[test]
fn init_with_json_reports_the_fingerprint_and_the_existing_key_is_reused() {
    let first = Vault::initialised();
    let key = std::fs::read_to_string(first.key_file()).unwrap();
    // A second vault initialised with the first one's (existing) key file.
    let v = Vault::new();
    std::fs::write(v.key_file(), &key).unwrap();

    let (code, doc) = v.json(&["init"]);

    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        keys(&doc),
        [
            "data_dir",
            "kek_version",
            "root_key_created",
            "root_key_file",
            "root_key_fingerprint",
            "root_key_pkcs11",
            "suite"
        ]
    );
    assert_eq!(doc["suite"], "intl", "the default suite");
    assert_eq!(doc["root_key_created"], false);
    assert_eq!(doc["root_key_pkcs11"], serde_json::Value::Null);
    assert_eq!(doc["kek_version"], 1);
    assert_eq!(doc["root_key_fingerprint"].as_str().unwrap().len(), 16);
    assert_eq!(std::fs::read_to_string(v.key_file()).unwrap(), key);
    assert!(!doc.to_string().contains(key.trim()));
}

#[test]
fn init_without_any_root_key_fails_locked_and_creates_nothing() {
    let v = Vault::new();

    let out = v
        .cmd()
        .env_remove("DZL_ROOT_KEY_FILE")
        .arg("init")
        .output()
        .unwrap();

    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("DZL_ROOT_KEY"), "{}", stderr(&out));
    assert!(!v.data().exists(), "nothing is created without a root key");
}

#[test]
fn tenants_of_each_kind_are_added_and_listed_without_secrets() {
    let v = Vault::initialised();

    let platform = v.add(&["--kind", "platform", "--name", "Lending App Ltd"]);
    let funder = v.add(&[
        "--kind",
        "funder",
        "--name",
        "城市银行",
        "--scopes",
        "risk,applicant",
        "--purposes",
        "drawdown",
        "--rate-limit",
        "200",
    ]);
    let operator = v.add(&["--kind", "operator", "--name", "Compliance desk"]);

    let fields = [
        "cert_pin",
        "key_id",
        "kind",
        "name",
        "purposes",
        "rate_limit",
        "scopes",
        "secret",
        "tenant_id",
    ];
    for added in [&platform, &funder, &operator] {
        assert_eq!(keys(added), fields);
        assert!(added["tenant_id"].as_str().unwrap().starts_with("ten_"));
        assert!(added["secret"].as_str().unwrap().len() >= 43);
    }
    assert_eq!(platform["kind"], "platform");
    assert_eq!(platform["scopes"], Value::Null);
    assert_eq!(platform["rate_limit"], 1000);
    assert_eq!(funder["scopes"], serde_json::json!(["applicant", "risk"]));
    assert_eq!(funder["purposes"], serde_json::json!(["drawdown"]));
    assert_eq!(funder["rate_limit"], 200);
    assert_eq!(operator["kind"], "operator");

    let listed = v.tenants();
    let list_text = stdout(&v.run(&["tenant", "list"]));

    assert_eq!(listed.len(), 3);
    for added in [&platform, &funder, &operator] {
        let row = listed
            .iter()
            .find(|r| r["tenant_id"] == added["tenant_id"])
            .expect("every added tenant is listed");
        assert_eq!(
            keys(row),
            [
                "cert_pin",
                "created_at",
                "key_id",
                "kind",
                "name",
                "purposes",
                "rate_limit",
                "scopes",
                "state",
                "tenant_id"
            ]
        );
        for field in [
            "tenant_id",
            "kind",
            "name",
            "key_id",
            "scopes",
            "purposes",
            "rate_limit",
        ] {
            assert_eq!(row[field], added[field], "{field}");
        }
        assert_eq!(row["state"], "active");
        let secret = added["secret"].as_str().unwrap();
        assert!(!row.to_string().contains(secret));
        assert!(!list_text.contains(secret));
        assert!(list_text.contains(added["tenant_id"].as_str().unwrap()));
    }
    assert!(list_text.starts_with("ID "), "{list_text}");
}

#[test]
fn suspend_and_resume_round_trip_and_repeats_change_nothing() {
    let v = Vault::initialised();
    let funder = v.add(&["--kind", "funder", "--name", "Bank"]);
    let id = funder["tenant_id"].as_str().unwrap();

    let (c1, suspended) = v.json(&["tenant", "suspend", id]);
    let (c2, again) = v.json(&["tenant", "suspend", id]);
    let state_after_suspend = v.tenants()[0]["state"].clone();
    let (c3, resumed) = v.json(&["tenant", "resume", id]);
    let (c4, resumed_again) = v.json(&["tenant", "resume", id]);

    assert_eq!([c1, c2, c3, c4], [0; 4]);
    assert_eq!(
        suspended,
        serde_json::json!({"tenant_id": id, "state": "suspended", "changed": true})
    );
    assert_eq!(again["changed"], false);
    assert_eq!(again["state"], "suspended");
    assert_eq!(state_after_suspend, "suspended");
    assert_eq!(
        resumed,
        serde_json::json!({"tenant_id": id, "state": "active", "changed": true})
    );
    assert_eq!(resumed_again["changed"], false);
    assert_eq!(v.tenants()[0]["state"], "active");

    let text = stdout(&v.run(&["tenant", "resume", id]));
    assert!(text.contains("already active"), "{text}");
}

#[test]
fn pin_and_unpin_a_tenant_to_its_client_certificate() {
    let v = Vault::initialised();
    let platform = v.add(&["--kind", "platform", "--name", "P"]);
    let id = platform["tenant_id"].as_str().unwrap();
    assert_eq!(platform["cert_pin"], Value::Null);
    // A certificate as a platform would send it (PEM).
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "platform-a");
    let cert = params
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let pem = v.data().with_file_name("platform-a.pem");
    std::fs::write(&pem, cert.pem()).unwrap();
    let pem = pem.to_str().unwrap();
    let fingerprint = dzl_crypto::CertIdentity::from_der(cert.der()).sha256_hex();

    let (c1, pinned) = v.json(&["tenant", "pin", id, "--cert-file", pem]);
    let (c2, again) = v.json(&["tenant", "pin", id, "--cert-file", pem]);
    let (c3, by_subject) = v.json(&["tenant", "pin", id, "--cert-file", pem, "--by", "subject"]);
    let colons = fingerprint
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let (c4, by_hex) = v.json(&["tenant", "pin", id, "--cert-sha256", &colons]);
    assert_eq!([c1, c2, c3, c4], [0; 4]);
    assert_eq!(
        pinned,
        serde_json::json!({"tenant_id": id, "cert_pin": format!("sha256:{fingerprint}"), "changed": true})
    );
    assert_eq!(again["changed"], false);
    assert_eq!(by_subject["cert_pin"], "subject:CN=platform-a");
    assert_eq!(by_hex["cert_pin"], format!("sha256:{fingerprint}"));
    assert_eq!(by_hex["changed"], true);
    assert_eq!(v.tenants()[0]["cert_pin"], format!("sha256:{fingerprint}"));
    let list = stdout(&v.run(&["tenant", "list"]));
    assert!(
        list.contains("CERT PIN") && list.contains(&fingerprint),
        "{list}"
    );

    // Refused before anything is opened or changed: exit 2.
    for bad in [
        &["tenant", "pin", id][..],
        &["tenant", "pin", id, "--cert-sha256", "abcd"],
        &["tenant", "pin", id, "--cert-subject", ""],
        &["tenant", "pin", id, "--by", "subject"],
        &[
            "tenant",
            "pin",
            id,
            "--cert-subject",
            "CN=a",
            "--cert-file",
            pem,
        ],
        &["tenant", "pin", id, "--cert-file", "/nonexistent/cert.pem"],
    ] {
        let (code, doc) = v.json(bad);
        assert_eq!(code, 2, "{bad:?}: {doc}");
    }
    assert_eq!(v.tenants()[0]["cert_pin"], format!("sha256:{fingerprint}"));

    let (c5, unpinned) = v.json(&["tenant", "unpin", id]);
    let (c6, unpinned_again) = v.json(&["tenant", "unpin", id]);
    assert_eq!([c5, c6], [0, 0]);
    assert_eq!(
        unpinned,
        serde_json::json!({"tenant_id": id, "cert_pin": null, "changed": true})
    );
    assert_eq!(unpinned_again["changed"], false);
    assert_eq!(v.tenants()[0]["cert_pin"], Value::Null);

    // Pinned from the start.
    let funder = v.add(&[
        "--kind",
        "funder",
        "--name",
        "Bank",
        "--cert-subject",
        "CN=bank",
    ]);
    assert_eq!(funder["cert_pin"], "subject:CN=bank");
    assert_eq!(v.tenants()[1]["cert_pin"], "subject:CN=bank");

    // Every change audited: the 3 pins that changed something, the unpin;
    // the funder's pin is in its tenant.add entry.
    let export = stdout(&v.run(&["audit", "export"]));
    assert_eq!(export.matches("\"tenant.pin\"").count(), 3, "{export}");
    assert_eq!(export.matches("\"tenant.unpin\"").count(), 1, "{export}");
    assert!(export.contains("client certificate pinned to subject:CN=bank"));
}

#[test]
fn an_unknown_tenant_id_fails_with_a_clear_message() {
    let v = Vault::initialised();
    let unknown = "ten_0123456789abcdef0123456789abcdef";

    let out = v.run(&["tenant", "suspend", unknown]);
    let (json_code, doc) = v.json(&["tenant", "resume", unknown]);
    let malformed = v.run(&["tenant", "suspend", "ten_nope"]);

    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out).trim_end(),
        format!("error: no tenant {unknown} in this vault (see `dzlctl tenant list`)")
    );
    assert!(stdout(&out).is_empty());
    assert_eq!(json_code, 1);
    assert_eq!(keys(&doc), ["code", "error"]);
    assert_eq!(doc["code"], "tenant_not_found");
    assert!(doc["error"].as_str().unwrap().contains(unknown));
    assert_eq!(code(&malformed), 2, "a malformed id is a usage error");
    assert!(stderr(&malformed).contains("TENANT_ID"));
}

#[test]
fn a_wrong_root_key_is_refused_with_exit_3_and_changes_nothing() {
    let v = Vault::initialised();
    let other = Vault::initialised();
    let other_key = std::fs::read_to_string(other.key_file()).unwrap();

    let out = v
        .cmd()
        .env_remove("DZL_ROOT_KEY_FILE")
        .env("DZL_ROOT_KEY", other_key.trim())
        .args(["tenant", "add", "--kind", "platform", "--name", "X"])
        .output()
        .unwrap();
    let json = v
        .cmd()
        .env_remove("DZL_ROOT_KEY_FILE")
        .env("DZL_ROOT_KEY", other_key.trim())
        .args(["--json", "tenant", "list"])
        .output()
        .unwrap();

    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).starts_with("error: the root key does not open this vault's keyring"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(other_key.trim()));
    assert_eq!(code(&json), 3);
    assert_eq!(one_document(&json)["code"], "wrong_root_key");
    assert!(v.tenants().is_empty(), "nothing was added");
}

#[test]
fn a_data_dir_without_a_vault_is_not_initialised_and_is_not_created() {
    let v = Vault::new();

    let out = v.run(&["tenant", "list"]);
    let (json_code, doc) = v.json(&["tenant", "list"]);

    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("dzlctl init"), "{}", stderr(&out));
    assert_eq!(json_code, 3);
    assert_eq!(doc["code"], "not_initialised");
    assert!(!v.data().exists());
}

#[test]
fn the_data_dir_comes_from_the_flag_else_the_environment_else_the_config_file() {
    let v = Vault::new();
    let config = v.dir.path().join("dzl.toml");
    std::fs::write(
        &config,
        "[store]\ndata_dir = \"from-config\"\n\n[server]\nbind = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let via_config = v
        .bare()
        .args(["--config", config, "init"])
        .output()
        .unwrap();
    let via_env = v
        .bare()
        .env("DZL__STORE__DATA_DIR", "from-env")
        .args(["--config", config, "--json", "tenant", "list"])
        .output()
        .unwrap();
    let via_flag = v
        .bare()
        .env("DZL__STORE__DATA_DIR", "from-env")
        .args(["--config", config, "--data-dir", "from-config"])
        .args(["tenant", "list", "--json"])
        .output()
        .unwrap();
    let default = v.bare().args(["tenant", "list"]).output().unwrap();

    assert_eq!(code(&via_config), 0, "{}", stderr(&via_config));
    assert!(v.dir.path().join("from-config/vault.db").is_file());
    assert_eq!(code(&via_env), 3, "the env names an empty dir");
    assert!(stderr(&via_env).contains("from-env"));
    assert_eq!(code(&via_flag), 0, "{}", stderr(&via_flag));
    assert_eq!(one_document(&via_flag), serde_json::json!({"tenants": []}));
    assert_eq!(code(&default), 3);
    assert!(
        stderr(&default).contains("dzl-data"),
        "{}",
        stderr(&default)
    );
}

#[test]
fn usage_errors_exit_2_and_with_json_print_one_error_document() {
    let v = Vault::initialised();

    let unknown_flag = v
        .cmd()
        .args(["--json", "tenant", "list", "--bogus"])
        .output()
        .unwrap();
    let bad_scope = v.run(&[
        "tenant", "add", "--kind", "funder", "--name", "B", "--scopes", "x",
    ]);
    let zero_rate = v.run(&[
        "tenant",
        "add",
        "--kind",
        "funder",
        "--name",
        "B",
        "--rate-limit",
        "0",
    ]);
    let (scoped_platform, doc) = v.json(&[
        "tenant", "add", "--kind", "platform", "--name", "P", "--scopes", "risk",
    ]);

    assert_eq!(code(&unknown_flag), 2);
    let err = one_document(&unknown_flag);
    assert_eq!(err["code"], "usage");
    assert!(err["error"].as_str().unwrap().contains("--bogus"));
    assert!(stderr(&unknown_flag).starts_with("error: "));
    assert_eq!(code(&bad_scope), 2);
    assert!(stderr(&bad_scope).contains("unknown group"));
    assert_eq!(code(&zero_rate), 2);
    assert_eq!(scoped_platform, 2);
    assert_eq!(doc["code"], "invalid_argument");
    assert!(v.tenants().is_empty());
}

#[test]
fn help_reads_like_a_manual_page() {
    let v = Vault::new();
    let help = |args: &[&str]| {
        let out = v.bare().args(args).output().unwrap();
        assert_eq!(code(&out), 0);
        stdout(&out)
    };

    let top = help(&["--help"]);
    let add = help(&["tenant", "add", "--help"]);
    let init = help(&["init", "--help"]);
    let suspend = help(&["tenant", "suspend", "--help"]);

    for section in [
        "Examples:",
        "Root key:",
        "Exit status:",
        "DZL__STORE__DATA_DIR",
    ] {
        assert!(top.contains(section), "{section}: {top}");
    }
    assert!(
        add.contains("Changes:") && add.contains("Examples:"),
        "{add}"
    );
    assert!(
        init.contains("mode 0600") && init.contains("Examples:") && init.contains("--suite"),
        "{init}"
    );
    assert!(
        suspend.contains("Changes:") && suspend.contains("Example:"),
        "{suspend}"
    );
}

#[test]
fn every_lifecycle_verb_has_a_manual_page_and_the_test_clock_is_hidden() {
    let v = Vault::new();
    let help = |args: &[&str]| {
        let out = v.bare().args(args).arg("--help").output().unwrap();
        assert_eq!(code(&out), 0, "{args:?}");
        stdout(&out)
    };
    for verb in [
        &["keys", "list"][..],
        &["keys", "rotate"],
        &["keys", "rewrap"],
        &["keys", "reseal"],
        &["keys", "retire"],
        &["root", "rekey"],
        &["audit", "verify"],
        &["audit", "export"],
        &["purge"],
        &["usage"],
        &["tenant", "rotate-secret"],
        &["tenant", "pin"],
        &["tenant", "unpin"],
    ] {
        let text = help(verb);
        assert!(text.contains("Changes"), "{verb:?}: {text}");
        assert!(text.contains("Example"), "{verb:?}: {text}");
        assert!(!text.contains("--now"), "{verb:?}: {text}");
    }
    let top = help(&[]);
    for verb in [
        "keys",
        "root",
        "audit",
        "purge",
        "usage",
        "[retention]",
        "[tenants]",
    ] {
        assert!(top.contains(verb), "{verb}: {top}");
    }
    assert!(!top.contains("--now"));
    assert!(help(&["keys", "retire"]).contains("Refused"));
    assert!(help(&["root", "rekey"]).contains("0600"));
}
