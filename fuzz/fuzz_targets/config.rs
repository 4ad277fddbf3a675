//! Fuzz target `config`: a config file through `tokend::settings::load`, error formatting and, when it loads, the account's timing and backoff (`tokend::fuzzing::run_config`).
//! A panic is a finding; docs/FUZZING.md says what to do with one.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokend::fuzzing::run_config(data));
