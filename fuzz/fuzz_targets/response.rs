//! Fuzz target `response`: a provider answer (text in the shape of an HTTP response, see `tokend::fuzzing::run_response`) through extraction, formatting, refresh planning and backoff.
//! A panic is a finding; docs/FUZZING.md says what to do with one.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokend::fuzzing::run_response(data));
