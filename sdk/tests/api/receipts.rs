//! Receipt verification: genuine receipts verify, online and offline, and
//! every kind of tampering is refused.

use dzl_sdk::types::Purpose;
use dzl_sdk::{verify_receipt, Error, ReceiptError, Redemption};
use serde_json::Value;

use crate::helpers::*;

async fn redeemed(v: &TestVault) -> Redemption {
    let created = v
        .platform()
        .deposit(&v.deposit(applicant_and_risk(), 3600))
        .await
        .unwrap();
    v.funder()
        .redeem(&created.codes[0].code, Purpose::CreditApplication)
        .await
        .unwrap()
}

/// `r` with its JSON changed by `edit`.
fn tampered(r: &Redemption, edit: impl FnOnce(&mut Value)) -> Redemption {
    let mut json: Value = serde_json::from_str(&r.to_json()).unwrap();
    edit(&mut json);
    Redemption::from_json(json.to_string().as_bytes()).unwrap()
}

fn refused(result: Result<dzl_sdk::VerifiedReceipt, Error>) -> ReceiptError {
    match result {
        Err(Error::Receipt(e)) => e,
        other => panic!("expected a refused receipt, got {other:?}"),
    }
}

#[tokio::test]
async fn archived_redemptions_verify_offline() {
    let v = start();
    let r = redeemed(&v).await;
    let keys = v.funder().receipt_keys().await.unwrap();

    let archived = r.to_json();
    let back = Redemption::from_json(archived.as_bytes()).unwrap();
    let verified = verify_receipt(&keys, &back).unwrap();
    assert_eq!(&verified.body.redemption_id, r.redemption_id());
    assert_eq!(verified.body.scopes, r.scopes());
    // serde round trip too.
    let via_serde: Redemption = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    verify_receipt(&keys, &via_serde).unwrap();
}

#[tokio::test]
async fn tampered_receipts_are_refused() {
    let v = start();
    let funder = v.funder();
    let r = redeemed(&v).await;
    funder.verify_receipt(&r).await.unwrap();

    // The released data changed after the vault signed for it.
    let richer = tampered(&r, |j| j["risk"]["score"] = Value::from(999));
    assert_eq!(
        refused(funder.verify_receipt(&richer).await),
        ReceiptError::GroupsMismatch
    );
    let renamed = tampered(&r, |j| j["applicant"]["name"] = Value::from("李四"));
    assert_eq!(
        refused(funder.verify_receipt(&renamed).await),
        ReceiptError::GroupsMismatch
    );
    // A group that was not released slipped in.
    let more =
        tampered(
            &r,
            |j| {
                j["device"] =
                    serde_json::json!({"device_id": "d-9", "os": "ios", "ip": "192.0.2.1"})
            },
        );
    assert_eq!(
        refused(funder.verify_receipt(&more).await),
        ReceiptError::GroupsMismatch
    );

    // The signed text changed: one more scope claimed.
    let claimed = tampered(&r, |j| {
        let signed = j["receipt"]["signed"].as_str().unwrap().to_owned();
        j["receipt"]["signed"] = Value::from(signed.replace(
            "\"scopes\":[\"applicant\",\"risk\"]",
            "\"scopes\":[\"applicant\",\"device\",\"risk\"]",
        ));
        assert_ne!(j["receipt"]["signed"].as_str().unwrap(), signed);
    });
    assert_eq!(
        refused(funder.verify_receipt(&claimed).await),
        ReceiptError::BadSignature
    );

    // The signature changed.
    let forged = tampered(&r, |j| {
        let sig = j["receipt"]["signature"].as_str().unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        j["receipt"]["signature"] = Value::from(format!("{flipped}{}", &sig[1..]));
    });
    assert_eq!(
        refused(funder.verify_receipt(&forged).await),
        ReceiptError::BadSignature
    );

    // A key the vault never published.
    let unknown = tampered(&r, |j| {
        j["receipt"]["key_id"] = Value::from("rk_0000000000000000")
    });
    assert_eq!(
        refused(funder.verify_receipt(&unknown).await),
        ReceiptError::UnknownKey {
            key_id: "rk_0000000000000000".into()
        }
    );
}

#[tokio::test]
async fn a_genuine_receipt_of_another_redemption_is_refused() {
    // Two redemptions of identical data: the same groups hash, so only the
    // ids tell the receipts apart.
    let v = start();
    let a = redeemed(&v).await;
    let b = redeemed(&v).await;
    let swapped = tampered(&a, |j| {
        j["receipt"] = serde_json::to_value(b.receipt()).unwrap();
    });
    assert_eq!(
        refused(v.funder().verify_receipt(&swapped).await),
        ReceiptError::Mismatch {
            field: "redemption_id"
        }
    );
}

/// A `gm` vault's receipt: the same redemption, its receipt signed with an
/// SM2 key, verifies against that key published as `SM2`, and not as
/// another algorithm, nor once a byte of the signature changes.
#[tokio::test]
async fn sm2_receipts_verify_against_keys_published_as_sm2() {
    use dzl_sdk::dzl_types::wire::ReceiptKey;
    use dzl_sdk::Suite;

    let v = start();
    let r = redeemed(&v).await;
    let pkcs8 =
        dzl_crypto::ReceiptSigner::generate_pkcs8_for(Suite::Gm, &dzl_crypto::SystemRandom::new())
            .unwrap();
    let sm2 = dzl_crypto::ReceiptSigner::from_pkcs8_derived_id(&pkcs8).unwrap();
    let signature = sm2.sign_b64url(r.receipt().signed.as_bytes());
    let gm = tampered(&r, |j| {
        j["receipt"]["key_id"] = Value::from(sm2.key_id());
        j["receipt"]["signature"] = Value::from(signature.clone());
    });
    let key = |algorithm: &str| ReceiptKey {
        key_id: sm2.key_id().to_owned(),
        algorithm: algorithm.to_owned(),
        public_key: sm2.public_key_b64url(),
    };

    let verified = verify_receipt(&[key("SM2")], &gm).unwrap();
    assert_eq!(verified.key_id, sm2.key_id());
    assert_eq!(&verified.body.redemption_id, r.redemption_id());

    for other in ["Ed25519", "sm2", "RSA"] {
        assert!(
            matches!(
                verify_receipt(&[key(other)], &gm),
                Err(ReceiptError::BadKey { .. })
            ),
            "{other}"
        );
    }
    let mut flipped = signature.into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let forged = tampered(&gm, |j| {
        j["receipt"]["signature"] = Value::from(String::from_utf8(flipped).unwrap())
    });
    assert!(matches!(
        verify_receipt(&[key("SM2")], &forged),
        Err(ReceiptError::BadSignature)
    ));
}

/// A vault that names no suite in `GET /v1/receipt-keys` is `intl`; a
/// client told its suite does not ask.
#[tokio::test]
async fn the_suite_is_learned_from_the_receipt_keys_or_told() {
    let v = start();
    let learned = dzl_sdk::Vault::new(&v.url).unwrap();
    assert_eq!(learned.suite().await.unwrap(), dzl_sdk::Suite::Intl);
    let told = dzl_sdk::Vault::builder("http://127.0.0.1:9")
        .suite(dzl_sdk::Suite::Gm)
        .build()
        .unwrap();
    assert_eq!(told.suite().await.unwrap(), dzl_sdk::Suite::Gm);
}
