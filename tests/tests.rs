//! The one integration-test crate (one link step on a 2-core CI). Each module covers one
//! capability against real things: loopback HTTP, real files, real servers, real signals.

mod support;

mod aws;
mod check_gaps;
mod config;
mod coordination;
mod daemon;
mod emulator;
mod fs_attacks;
mod fuzz_regressions;
mod ha;
mod hardening;
mod hostile;
mod listener;
mod metrics;
mod oauth2_real;
mod oauth_server_smoke;
mod operator;
mod packaging;
mod providers;
mod redaction;
mod redirects;
mod vault;
