//! `Cluster`: several real `tokend run` instances sharing accounts through one coordination
//! store (a real OpenBao), for the HA tests of issue 14 (`tests/ha.rs`).
//!
//! Each instance has its own directory, state dir, config, metrics listener and `json` file
//! sink, and reaches the store through a [`Proxy`] of its own, so a test can partition one
//! instance from the store. The provider is reached directly, at the same `base_url` for
//! every instance: the account's fingerprint covers its provider settings, and instances
//! whose fingerprints differ never adopt each other's tokens (each would log in on its
//! own). Which instance called the provider is therefore read from the store (the claim)
//! and from the emulator's counters against the record's generations.
//! Instances keep their `instance` name across kills and restarts, as a host or a
//! StatefulSet pod does. One may run with its wall clock skewed ([`super::faketime`]).
//!
//! The observations are the ones docs/HA.md promises, never log lines: the record in the
//! store ([`Record`]), `tokend status --json`, the metrics, and the token files, which the
//! emulator's `whoami` judges.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use serde_json::Value;
use tokend::emulator::{Emulator, PASSWORD, Provider, USERNAME};

use super::openbao::OpenBao;
use super::process::TokendProcess;
use super::proxy::Proxy;
use super::{TestDir, run_cmd, tokend_cmd};

/// The KV v2 mount of the dev server.
pub const MOUNT: &str = "secret";

/// A multi-threaded runtime with one worker for the tests' own HTTP calls (OpenBao, the
/// emulator's `whoami`, metrics): it lives as long as the cluster, so pooled connections
/// keep a running runtime behind them, and blocking test code drives it with `block_on`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("test runtime")
}

/// What every instance of a cluster shares.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The coordination prefix: records live at `secret/data/<prefix>/<account>`.
    pub prefix: String,
    /// The single account every instance keeps (a Zarv account on the emulator).
    pub account: String,
    /// `claim_ttl` of `[daemon.coordination]`.
    pub claim_ttl: String,
    /// The account's HTTP `timeout` (claim_ttl must be at least twice this plus 1 s).
    pub timeout: String,
    /// `timeout` of `[daemon.coordination]`, per store request: short, so a partitioned
    /// instance notices within the test (the default is 30 s).
    pub store_timeout: String,
    /// Extra `[[account.sink]]` tables (written after the file sink); `{store}` is
    /// replaced by the instance's store URL (through its proxy).
    pub extra_sinks: String,
    /// Extra lines for `[daemon]`.
    pub daemon_extra: String,
    /// Extra environment of every instance (e.g. AWS test keys for an AWS sink).
    pub env: Vec<(String, String)>,
}

impl ClusterSpec {
    /// A Zarv account `zarv` with `claim_ttl = "3s"` and `timeout = "1s"` (the tightest
    /// pair the validation accepts) on `prefix`.
    pub fn new(prefix: &str) -> ClusterSpec {
        ClusterSpec {
            prefix: prefix.to_string(),
            account: "zarv".to_string(),
            claim_ttl: "3s".to_string(),
            timeout: "1s".to_string(),
            store_timeout: "2s".to_string(),
            extra_sinks: String::new(),
            daemon_extra: String::new(),
            env: Vec::new(),
        }
    }
}

/// One tokend instance of a [`Cluster`].
pub struct Instance {
    /// Its `instance` name in `[daemon.coordination]` (`i0`, `i1`, …).
    pub name: String,
    /// Its directory: config, state, token file, logs.
    pub dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// Its state dir.
    pub state: PathBuf,
    /// Its `json` token file.
    pub sink: PathBuf,
    /// Its link to the store.
    pub store: Proxy,
    /// libfaketime offset of its wall clock, if any.
    pub skew: Option<String>,
    /// How often it was started.
    pub starts: u32,
    process: Option<TokendProcess>,
    metrics_port: Option<u16>,
}

impl Instance {
    /// Whether its process runs (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(TokendProcess::is_running)
    }

    /// The running process.
    pub fn process(&self) -> &TokendProcess {
        self.process.as_ref().expect("the instance was started")
    }

    /// The access token in its file sink, if the file exists (a torn or empty file fails
    /// the test: SPEC §4 atomic writes).
    pub fn file_token(&self) -> Option<String> {
        file_token(&self.sink)
    }

    /// SIGKILL and reap; the instance stays down until [`Cluster::start`].
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        self.metrics_port = None;
    }

    /// Sends `signal` (SIGSTOP/SIGCONT for a process that stalls, as in a long GC pause).
    pub fn signal(&self, signal: Signal) {
        self.process().signal(signal);
    }

    /// `tokend status --json` of this instance's config (exit 0 or 3 are both fine).
    pub fn status(&self) -> Value {
        let config = self.config.display().to_string();
        let run = run_cmd(tokend_cmd(&["-c", &config, "status", "--json"]));
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("status --json of {}: {e}\n{run:?}", self.name))
    }

    /// The `coordination` object `status --json` shows for `account` (docs/HA.md):
    /// `{"generation", "claim": {"instance", "since"} | null, "refreshed_by"}`.
    pub fn status_coordination(&self, account: &str) -> Value {
        let status = self.status();
        let row = status["accounts"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["account"] == account))
            .unwrap_or_else(|| panic!("no account {account} in the status of {}", self.name))
            .clone();
        row["coordination"].clone()
    }

    /// The Prometheus text of its `/metrics`.
    pub fn metrics(&mut self, rt: &tokio::runtime::Runtime) -> String {
        let port = match self.metrics_port {
            Some(port) => port,
            None => {
                let port = self.process().listen_port();
                self.metrics_port = Some(port);
                port
            }
        };
        let url = format!("http://127.0.0.1:{port}/metrics");
        rt.block_on(async {
            let response = reqwest::get(&url)
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            response.text().await.expect("metrics body")
        })
    }

    /// The value of the sample `name{labels…}` in its metrics (0 when absent: every
    /// family is present from the first scrape, SPEC §4, but a label set may not be).
    pub fn metric(
        &mut self,
        rt: &tokio::runtime::Runtime,
        name: &str,
        labels: &[(&str, &str)],
    ) -> f64 {
        sample(&self.metrics(rt), name, labels).unwrap_or(0.0)
    }
}

/// The access token of a `json` token file, if it exists.
pub fn file_token(path: &Path) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{} is not a complete JSON document ({e}): {text:?}",
            path.display()
        )
    });
    Some(
        doc["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {}: {doc}", path.display()))
            .to_string(),
    )
}

/// The value of the one sample of `name` whose labels include every pair of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(key, _)| {
            let (sample_name, sample_labels) = key.split_once('{').unwrap_or((key, ""));
            sample_name == name
                && labels
                    .iter()
                    .all(|(k, v)| sample_labels.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}

/// An account's record in the coordination store, as read with the root token.
#[derive(Debug, Clone)]
pub struct Record {
    /// The KV v2 version of the record (check-and-set moves it on every write).
    pub version: u64,
    /// The record's data (a JSON map: `generation`, the tokens, `claim_instance`,
    /// `refreshed_by`, …).
    pub data: Value,
}

impl Record {
    /// The token generation (a number, or a number in a string).
    pub fn generation(&self) -> u64 {
        let g = &self.data["generation"];
        g.as_u64()
            .or_else(|| g.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("record without a generation: {}", self.redacted()))
    }

    /// The instance holding the claim, if any (`claim.instance`, or a flat
    /// `claim_instance`).
    pub fn claim_instance(&self) -> Option<String> {
        self.data["claim"]["instance"]
            .as_str()
            .or_else(|| self.data["claim_instance"].as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// Which instance refreshed last.
    pub fn refreshed_by(&self) -> Option<String> {
        self.data["refreshed_by"].as_str().map(str::to_string)
    }

    /// Every string in the record that `emu` knows as a Zarv access token (its shape is
    /// the implementation's business; the token in it is what matters).
    pub fn access_tokens(&self, emu: &Emulator) -> Vec<String> {
        let mut found = Vec::new();
        strings(&self.data, &mut found);
        found.retain(|s| emu.access_token_info(Provider::Zarv, s).is_some());
        found
    }

    /// The record with every string longer than 16 characters cut short: enough to see
    /// its shape in a failure message without printing whole tokens.
    pub fn redacted(&self) -> String {
        fn cut(v: &Value) -> Value {
            match v {
                Value::String(s) if s.len() > 16 => {
                    Value::String(format!("{}…", s.chars().take(8).collect::<String>()))
                }
                Value::Array(a) => Value::Array(a.iter().map(cut).collect()),
                Value::Object(o) => {
                    Value::Object(o.iter().map(|(k, v)| (k.clone(), cut(v))).collect())
                }
                other => other.clone(),
            }
        }
        format!("v{} {}", self.version, cut(&self.data))
    }
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Reads `<MOUNT>/data/<prefix>/<account>` (root token); `None` while there is none.
pub fn read_record(
    rt: &tokio::runtime::Runtime,
    bao: &OpenBao,
    prefix: &str,
    account: &str,
) -> Option<Record> {
    rt.block_on(bao.read_secret(MOUNT, &format!("{prefix}/{account}")))
        .map(|(version, data)| Record { version, data })
}

/// Several instances on one coordination prefix (see the module comment).
pub struct Cluster {
    /// The shared spec.
    pub spec: ClusterSpec,
    /// The instances, `i0` first.
    pub instances: Vec<Instance>,
    store_url: String,
    provider_url: String,
    _dir: TestDir,
}

impl Cluster {
    /// Prepares `n` instances (not started) against `bao` and `emu`; instance `k` gets the
    /// wall-clock offset `skews[k]` when there is one (`Some("+30s")`).
    pub fn new(
        name: &str,
        bao: &OpenBao,
        emu: &Emulator,
        spec: ClusterSpec,
        n: usize,
        skews: &[Option<&str>],
    ) -> Cluster {
        let dir = TestDir::new(name);
        let store_url = bao.addr().to_string();
        let provider_url = emu.base_url(Provider::Zarv);
        let instances = (0..n)
            .map(|k| {
                let name = format!("i{k}");
                let home = dir.join(&name);
                std::fs::create_dir_all(&home).expect("instance dir");
                Instance {
                    config: home.join("tokend.toml"),
                    state: home.join("state"),
                    sink: home.join("out/zarv.json"),
                    store: Proxy::for_url(&store_url),
                    skew: skews.get(k).copied().flatten().map(str::to_string),
                    starts: 0,
                    process: None,
                    metrics_port: None,
                    dir: home,
                    name,
                }
            })
            .collect();
        let cluster = Cluster {
            spec,
            instances,
            store_url,
            provider_url,
            _dir: dir,
        };
        for k in 0..n {
            cluster.write_config(k);
        }
        cluster
    }

    /// The config of instance `k`: its state dir, text logs, a metrics listener on a free
    /// port, the shared `[daemon.coordination]` through its store proxy, and the account
    /// (identical on every instance) with a `json` file sink.
    pub fn config_text(&self, k: usize) -> String {
        let i = &self.instances[k];
        let spec = &self.spec;
        let store = i.store.url(&self.store_url);
        let base_url = &self.provider_url;
        format!(
            r#"[daemon]
state_dir = "{state}"
log_format = "text"
listen = "127.0.0.1:0"
{daemon_extra}

[daemon.retry]
initial = "1s"
max = "2s"
max_expired = "1s"

[daemon.coordination]
store = "vault"
address = "{store}"
mount = "{MOUNT}"
prefix = "{prefix}"
auth = {{ token = "root" }}
claim_ttl = "{claim_ttl}"
instance = "{name}"
timeout = "{store_timeout}"

[[account]]
name = "{account}"
provider = "zarv"
base_url = "{base_url}"
username = "{USERNAME}"
password = "{PASSWORD}"
timeout = "{timeout}"

[[account.sink]]
type = "file"
path = "{sink}"
format = "json"
{extra_sinks}
"#,
            state = i.state.display(),
            daemon_extra = spec.daemon_extra,
            prefix = spec.prefix,
            claim_ttl = spec.claim_ttl,
            store_timeout = spec.store_timeout,
            name = i.name,
            account = spec.account,
            timeout = spec.timeout,
            sink = i.sink.display(),
            extra_sinks = spec.extra_sinks.replace("{store}", &store),
        )
    }

    fn write_config(&self, k: usize) {
        use std::os::unix::fs::PermissionsExt;
        let path = &self.instances[k].config;
        std::fs::write(path, self.config_text(k)).expect("write the instance config");
        // 0600: the literal password and Vault token draw no warning.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    /// Starts instance `k` (again, after a kill): `tokend run` under its skew, if any.
    pub fn start(&mut self, k: usize) {
        let spec_env = self.spec.env.clone();
        let i = &mut self.instances[k];
        assert!(!i.is_running(), "{} is already running", i.name);
        let mut cmd = TokendProcess::run_command(&i.config);
        cmd.envs(spec_env);
        if let Some(offset) = &i.skew {
            super::faketime::skew(&mut cmd, offset);
        }
        i.process = Some(TokendProcess::start(cmd, &i.dir));
        i.metrics_port = None;
        i.starts += 1;
    }

    /// Starts every instance.
    pub fn start_all(&mut self) {
        for k in 0..self.instances.len() {
            self.start(k);
        }
    }

    /// SIGKILLs instance `k` and starts it again at once.
    pub fn kill_and_restart(&mut self, k: usize) {
        self.instances[k].kill();
        self.start(k);
    }

    /// Asserts that no started instance has exited on its own (a bad config, a panic):
    /// killed instances are not started, so they do not count. Its log is printed.
    pub fn assert_none_exited(&mut self) {
        for i in &mut self.instances {
            if let Some(process) = i.process.as_mut()
                && !process.is_running()
            {
                panic!("{} exited on its own:\n{}", i.name, process.output());
            }
        }
    }

    /// Asserts that every instance is still running (none crashed or exited), naming the
    /// ones that are not.
    pub fn assert_all_running(&mut self) {
        let down: Vec<String> = self
            .instances
            .iter_mut()
            .filter_map(|i| (!i.is_running()).then(|| i.name.clone()))
            .collect();
        assert!(down.is_empty(), "instances not running: {down:?}");
    }

    /// The token in each instance's file sink (`None` where there is none yet).
    pub fn file_tokens(&self) -> Vec<Option<String>> {
        self.instances.iter().map(Instance::file_token).collect()
    }
}
