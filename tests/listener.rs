//! The `[daemon] listen` endpoint under a connection flood (issue 12 finding 6): the real
//! daemon, limited to 256 file descriptors, while the test holds 1,100 idle connections to
//! its listener, keeps answering `/healthz` and keeps refreshing its account (the token file
//! changes, no save fails with EMFILE).

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use tokend::emulator::{self, Emulator, Options, Provider};

use crate::support::process::TokendProcess;
use crate::support::{TestDir, block_on, wait_for};

/// How many idle connections the attacker opens: more than the daemon's descriptors.
const FLOOD: usize = 1_100;
/// The daemon's descriptor limit, soft = hard (so the daemon cannot raise it).
const NOFILE: &str = "--nofile=256:256";

fn healthz(base: &str) -> bool {
    block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
}

fn token(dir: &TestDir) -> String {
    std::fs::read_to_string(dir.join("pt.token")).unwrap_or_default()
}

#[test]
fn an_idle_connection_flood_leaves_healthz_and_refreshes_working() {
    // Proves: 1,100 idle connections held open against a daemon limited to 256 descriptors
    // neither stop /healthz from answering nor the account from refreshing.
    let emu = Emulator::start(Options {
        access_lifetime: Duration::from_secs(3),
        ..Options::default()
    })
    .unwrap();
    let dir = TestDir::new("listener-flood");
    let cfg = dir.write(
        "tokend.toml",
        &format!(
            "[daemon]\nstate_dir = \"state\"\nlog_format = \"text\"\nlisten = \"127.0.0.1:0\"\n\
             [daemon.retry]\ninitial = \"200ms\"\nmax = \"1s\"\n\n\
             [[account]]\nname = \"pt\"\nprovider = \"pontotel\"\nbase_url = \"{}\"\n\
             username = \"{}\"\npassword = {{ env = \"LISTENER_TEST_PASSWORD\" }}\n\
             [[account.sink]]\ntype = \"file\"\npath = \"pt.token\"\n",
            emu.base_url(Provider::Pontotel),
            emulator::USERNAME,
        ),
    );
    let mut cmd = Command::new("prlimit");
    cmd.arg(NOFILE)
        .arg(env!("CARGO_BIN_EXE_tokend"))
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .env("LISTENER_TEST_PASSWORD", emulator::PASSWORD)
        .env("NO_COLOR", "1");
    for var in [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "JOURNAL_STREAM",
        "RUST_LOG",
        "TOKEND_CONFIG",
        "STATE_DIRECTORY",
    ] {
        cmd.env_remove(var);
    }
    let daemon = TokendProcess::start(cmd, dir.path());
    let port = daemon.listen_port();
    let base = format!("http://127.0.0.1:{port}");
    wait_for(
        "the first token and /healthz",
        Duration::from_secs(20),
        || !token(&dir).is_empty() && healthz(&base),
    );

    // The flood: idle connections that never send a byte, all held until the end.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut held = Vec::with_capacity(FLOOD);
    let mut refused = 0;
    while held.len() < FLOOD && refused < 20 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(stream) => held.push(stream),
            // An unfixed daemon stops accepting and its backlog fills up.
            Err(_) => refused += 1,
        }
    }

    // While they are held: /healthz answers within seconds, and refreshes keep landing.
    let mut last = token(&dir);
    for round in 0..3 {
        wait_for(
            &format!("/healthz under the flood (round {round})"),
            Duration::from_secs(10),
            || healthz(&base),
        );
        wait_for(
            &format!("a refreshed token under the flood (round {round})"),
            Duration::from_secs(10),
            || {
                let now = token(&dir);
                !now.is_empty() && now != last
            },
        );
        last = token(&dir);
    }
    let log = daemon.output();
    assert!(
        !log.contains("Too many open files"),
        "the daemon ran out of descriptors:\n{log}"
    );
    drop(held);
}
