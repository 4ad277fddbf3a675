//! Fuzz target `state`: a state file (and sink-status file after a NUL byte) through `StateStore::peek`/`load` and what a restart does with it (`tokend::fuzzing::run_state`).
//! A panic is a finding; docs/FUZZING.md says what to do with one.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tokend::fuzzing::run_state(data));
