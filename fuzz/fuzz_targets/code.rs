//! libFuzzer entry of the `code` target; the checks are [`dzl_vault_fuzz::code`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dzl_vault_fuzz::code(data));
