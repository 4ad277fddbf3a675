//! tokend configs for the benchmarks: N accounts against the emulator through the
//! [`tap`](super::tap), each URL tagged `?a=NAME`, each account with file sinks.

use std::fmt::Write as _;
use std::path::Path;

use tokend::emulator::{self, Provider};

/// One account of a generated config.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    /// Account name (also the token file's stem).
    pub name: String,
    /// Which emulated provider.
    pub provider: Provider,
    /// Sink paths, relative to the config file.
    pub sinks: Vec<String>,
    /// `[account.refresh] ratio`, when it overrides `[daemon.refresh]` (the fault
    /// harness's timing edits).
    pub ratio: Option<f64>,
    /// The account's `timeout`, when it is not [`DaemonSpec::timeout`] (the fault
    /// harness's provider-settings edits).
    pub timeout: Option<String>,
}

/// `[daemon]` settings that vary.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    /// `[daemon.refresh] min_margin`.
    pub min_margin: &'static str,
    /// Per-account `timeout`.
    pub timeout: &'static str,
    /// `[daemon.retry] max`.
    pub retry_max: &'static str,
}

/// Renders the config: `tap` is the tap's `http://ADDR`.
pub fn render(tap: &str, daemon: &DaemonSpec, accounts: &[AccountSpec]) -> String {
    let mut t = String::with_capacity(accounts.len() * 400);
    let _ = write!(
        t,
        "# Written by the tokend benchmarks (docs/BENCHMARKS.md).\n\
         [daemon]\nstate_dir = \"state\"\nlog_format = \"json\"\nlog_level = \"info\"\n\n\
         [daemon.refresh]\nmin_margin = \"{}\"\n\n[daemon.retry]\nmax = \"{}\"\n\n",
        daemon.min_margin, daemon.retry_max
    );
    let user = format!(
        "username = \"{}\"\npassword = \"{}\"\n",
        emulator::USERNAME,
        emulator::PASSWORD
    );
    let client = format!(
        "client_id = \"{}\"\nclient_secret = \"{}\"\n",
        emulator::CLIENT_ID,
        emulator::CLIENT_SECRET
    );
    for a in accounts {
        let n = &a.name;
        let p = a.provider.name();
        let _ = write!(
            t,
            "[[account]]\nname = \"{n}\"\nprovider = \"{p}\"\ntimeout = \"{}\"\n",
            a.timeout.as_deref().unwrap_or(daemon.timeout)
        );
        match a.provider {
            Provider::Pontotel => {
                let _ = write!(
                    t,
                    "base_url = \"{tap}/pontotel/api/v4\"\n{user}\
                     [account.login]\nurl = \"{{{{ base_url }}}}/login/?a={n}\"\n"
                );
            }
            Provider::Funcional => {
                let _ = write!(
                    t,
                    "base_url = \"{tap}/funcional/graphql\"\n{user}\
                     [account.login]\nurl = \"{{{{ base_url }}}}?a={n}\"\n"
                );
            }
            Provider::Hubsoft => {
                let _ = write!(
                    t,
                    "base_url = \"{tap}/hubsoft\"\n{user}{client}\
                     [account.login]\nurl = \"{{{{ base_url }}}}/oauth/token?a={n}\"\n\
                     [account.refresh]\nurl = \"{{{{ base_url }}}}/oauth/token?a={n}\"\n"
                );
            }
            Provider::Zarv => {
                let _ = write!(
                    t,
                    "base_url = \"{tap}/zarv\"\n{user}\
                     [account.login]\nurl = \"{{{{ base_url }}}}/api/v1/authentication?a={n}\"\n\
                     [account.refresh]\nurl = \"{{{{ base_url }}}}/api/v1/authentication/refresh?a={n}\"\n"
                );
            }
            Provider::Itflex => {
                let _ = write!(
                    t,
                    "base_url = \"{tap}/itflex\"\nrefresh_token = \"{}\"\n\
                     [account.login]\nurl = \"{{{{ base_url }}}}/api/v1/oauth2/token?a={n}\"\n\
                     [account.refresh]\nurl = \"{{{{ base_url }}}}/api/v1/oauth2/token?a={n}\"\n",
                    emulator::INTEGRATOR_KEY
                );
            }
            Provider::Oauth2 => {
                let _ = write!(
                    t,
                    "token_url = \"{tap}/oauth2/token?a={n}\"\ngrant = \"password\"\n{user}{client}"
                );
            }
        }
        if let Some(ratio) = a.ratio {
            // HubSoft, Zarv and iTFLEX end on their `[account.refresh]` table (the refresh
            // exchange), which also takes the timing keys; the others need the table.
            if !matches!(
                a.provider,
                Provider::Hubsoft | Provider::Zarv | Provider::Itflex
            ) {
                t.push_str("[account.refresh]\n");
            }
            // `{:?}` keeps the decimal point (1.0, not 1): TOML must see a float.
            let _ = writeln!(t, "ratio = {ratio:?}");
        }
        for s in &a.sinks {
            let _ = write!(t, "[[account.sink]]\ntype = \"file\"\npath = \"{s}\"\n");
        }
        t.push('\n');
    }
    t
}

/// Writes the config 0600 (literal passwords in a group-readable file draw a warning per
/// account) by temporary file and rename.
pub fn write(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod config");
    std::fs::rename(&tmp, path).expect("rename config into place");
}
