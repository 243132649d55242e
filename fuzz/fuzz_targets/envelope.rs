//! libFuzzer entry of the `envelope` target; the checks are [`dzl_vault_fuzz::envelope`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dzl_vault_fuzz::envelope(data));
