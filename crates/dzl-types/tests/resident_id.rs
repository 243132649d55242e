//! Property tests of the GB 11643-1999 resident id check
//! (`dzl_types::domain::check_resident_id`), against an independent
//! computation of the check character.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::NaiveDate;
use dzl_types::domain::{check_resident_id, today_in_china};
use proptest::prelude::*;

/// The province codes of `applicant.schema.json`'s description.
const PROVINCES: [&str; 36] = [
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41",
    "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71",
    "81", "82", "83", "91",
];

/// Every character a check position may hold.
const CHECK_CHARS: &str = "0123456789X";

fn earliest() -> NaiveDate {
    NaiveDate::from_ymd_opt(1900, 1, 1).unwrap()
}

/// The check character of a 17-digit body: sum of digit × weight, mod 11,
/// indexes "10X98765432".
fn check_char(body: &str) -> char {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    assert_eq!(body.len(), 17);
    let sum: u32 = body
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).unwrap() * w)
        .sum();
    "10X98765432".chars().nth((sum % 11) as usize).unwrap()
}

/// A 17-digit body: a listed province code, 4 free digits, a birth date
/// from 1900-01-01 to `today` inclusive, and 3 free digits.
fn body(today: NaiveDate) -> impl Strategy<Value = String> {
    let days = (today - earliest()).num_days();
    (
        proptest::sample::select(PROVINCES.as_slice()),
        0u32..10_000,
        0..=days,
        0u32..1_000,
    )
        .prop_map(|(province, area, offset, seq)| {
            let birth = earliest() + chrono::Duration::days(offset);
            format!("{province}{area:04}{}{seq:03}", birth.format("%Y%m%d"))
        })
}

#[test]
fn the_check_char_oracle_agrees_with_the_known_numbers() {
    assert_eq!(check_char("11010519491231002"), 'X');
    assert_eq!(check_char("44030119900101123"), '4');
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The computed check character always validates; each of the other ten
    /// digits-or-X never does.
    #[test]
    fn only_the_computed_check_char_validates(body in body(today_in_china())) {
        // The strategy was built with a `today` that can only be earlier than
        // this one (a test running across midnight), so every date stays valid.
        let today = today_in_china();
        let expected = check_char(&body);
        let id = format!("{body}{expected}");
        prop_assert!(check_resident_id(&id, today).is_ok(), "{id} must validate");
        for other in CHECK_CHARS.chars().filter(|c| *c != expected) {
            let id = format!("{body}{other}");
            prop_assert!(check_resident_id(&id, today).is_err(), "{id} must not validate");
        }
    }

    /// Nor does any other character at all in the check position (lower-case
    /// `x`, letters, punctuation, non-ASCII).
    #[test]
    fn no_other_check_char_validates(body in body(today_in_china()), other in any::<char>()) {
        let today = today_in_china();
        let expected = check_char(&body);
        prop_assume!(other != expected);
        let id = format!("{body}{other}");
        prop_assert!(check_resident_id(&id, today).is_err(), "{id:?} must not validate");
    }
}
