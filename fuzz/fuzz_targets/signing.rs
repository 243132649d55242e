//! libFuzzer entry of the `signing` target; the checks are [`dzl_vault_fuzz::signing`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dzl_vault_fuzz::signing(data));
