//! libFuzzer entry of the `deposit_json` target; the checks are [`dzl_vault_fuzz::deposit_json`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dzl_vault_fuzz::deposit_json(data));
