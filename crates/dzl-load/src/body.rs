//! The deposit bodies the load generator sends: all three groups, one grant,
//! about 1.5 KB, with a distinct `external_ref`, id number and phone for
//! every request so that the vault does real work for each (no duplicate
//! refusals, many distinct subjects).

use chrono::{Duration, NaiveDate, Utc};

/// Builds deposit bodies for one run.
#[derive(Debug, Clone)]
pub struct DepositBodies {
    run_id: String,
    funder_id: String,
    grant_scopes: String,
    granted_at: String,
    expires_at: String,
}

impl DepositBodies {
    /// Bodies granting `funder_id` the groups in `grant_scopes` (JSON array
    /// items, e.g. `"applicant","risk"`); `run_id` keeps external refs of
    /// different runs against one vault apart.
    pub fn new(run_id: &str, funder_id: &str, grant_scopes: &[&str]) -> Self {
        let now = Utc::now();
        let ts = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        DepositBodies {
            run_id: run_id.to_owned(),
            funder_id: funder_id.to_owned(),
            grant_scopes: grant_scopes
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(","),
            granted_at: ts(now - Duration::hours(1)),
            expires_at: ts(now + Duration::days(365)),
        }
    }

    /// The body of deposit number `seq`.
    pub fn body(&self, seq: u64) -> String {
        let id_number = resident_id(seq);
        let phone = 13_900_000_000u64 + seq % 100_000_000;
        format!(
            concat!(
                r#"{{"external_ref":"LOAD-{run}-{seq:010}","purpose":"credit_application","#,
                r#""consent":{{"consent_id":"CNS-{run}-{seq:010}","granted_at":"{granted}","expires_at":"{expires}","#,
                r#""scopes":["applicant","device","risk"],"evidence_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}},"#,
                r#""applicant":{{"name":"欧阳金丝雀","id_type":"resident_id","id_number":"{id}","phone":"{phone}","#,
                r#""id_address":"北京市朝阳区建国路八十八号院三号楼二单元一五零二室","#,
                r#""residence_address":"上海市浦东新区世纪大道一百号环球金融中心七十二层","#,
                r#""gender":"female","education":"bachelor","marital_status":"married","#,
                r#""employer":"北京金丝雀数据科技有限公司","monthly_income_fen":2350000}},"#,
                r#""device":{{"device_id":"dev-{seq:016x}-7f3a9c2e","os":"android","ip":"203.0.113.7","os_version":"14","#,
                r#""model":"Xiaomi 14 Pro","app_version":"8.12.3","network":"wifi","#,
                r#""user_agent":"Mozilla/5.0 (Linux; Android 14; 23116PN5BC Build/UKQ1.230804.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.193 Mobile Safari/537.36 LoanApp/8.12.3"}},"#,
                r#""risk":{{"score":712,"grade":"B+","tags":["thin_file","new_device","night_application"],"#,
                r#""features":{{"income_ratio":0.42,"age_months":17,"multi_loan_count_90d":3,"overdue_days_max":0,"#,
                r#""device_risk":0.07,"address_stability_months":26,"query_count_30d":5,"credit_utilisation":0.61}},"#,
                r#""model_version":"risk-v3.2.1"}},"#,
                r#""grants":[{{"funder_id":"{funder}","scopes":[{scopes}],"ttl_seconds":3600}}]}}"#,
            ),
            run = self.run_id,
            seq = seq,
            granted = self.granted_at,
            expires = self.expires_at,
            id = id_number,
            phone = phone,
            funder = self.funder_id,
            scopes = self.grant_scopes,
        )
    }
}

/// The redemption body for `code`.
pub fn redemption_body(code: &str) -> String {
    format!(r#"{{"code":"{code}","purpose":"credit_application"}}"#)
}

/// A valid resident id number (GB 11643) distinct for each `seq` below
/// about 14.6 million: district 110105, a birth date in 1960–1999, a
/// sequence number, and the mod-11 check character.
pub fn resident_id(seq: u64) -> String {
    let days = (seq / 1000) % 14_600;
    let base = NaiveDate::from_ymd_opt(1960, 1, 1).unwrap_or(NaiveDate::MIN);
    let birth = base + Duration::days(days as i64);
    let first17 = format!("110105{}{:03}", birth.format("%Y%m%d"), seq % 1000);
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .bytes()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{first17}{check}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use dzl_types::wire::{DepositRequest, RedemptionRequest};

    #[test]
    fn check_digit_matches_a_known_number() {
        // 11010519491231002X is the classic GB 11643 example.
        let first17 = "11010519491231002";
        let sum: u32 = first17
            .bytes()
            .zip([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
            .map(|(d, w)| u32::from(d - b'0') * w)
            .sum();
        assert_eq!(b"10X98765432"[(sum % 11) as usize], b'X');
        let today = chrono::Utc::now().date_naive();
        for seq in [0, 1, 999, 1000, 14_599_999, 10_000_000, 123_456_789] {
            dzl_types::domain::check_resident_id(&resident_id(seq), today).unwrap();
        }
        assert_ne!(resident_id(1), resident_id(2));
        assert_ne!(resident_id(1), resident_id(1001));
    }

    #[test]
    fn bodies_are_valid_deposits_of_about_one_and_a_half_kb() {
        let b = DepositBodies::new(
            "ab12cd34",
            "ten_0123456789abcdef0123456789abcdef",
            &["applicant", "risk"],
        );
        for seq in [0, 7, 9_999_999] {
            let body = b.body(seq);
            assert!(
                (1400..=1700).contains(&body.len()),
                "body is {} bytes",
                body.len()
            );
            let d: DepositRequest = serde_json::from_str(&body).unwrap();
            assert_eq!(d.groups().names(), vec!["applicant", "device", "risk"]);
            assert_eq!(d.grants.len(), 1);
            assert_eq!(d.grants[0].scopes.names(), vec!["applicant", "risk"]);
        }
        assert_ne!(b.body(1), b.body(2));
    }

    #[test]
    fn redemption_body_parses() {
        let r: RedemptionRequest = serde_json::from_str(&redemption_body("ac_x")).unwrap();
        assert_eq!(r.code, "ac_x");
    }
}
