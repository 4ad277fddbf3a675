//! Hot reload as a pure diff (SPEC §4 "Hot reload"): old and new accounts, matched by
//! name, become a plan of what to start, stop, restart (log in again) or update in place
//! (write the current token to new sinks, reschedule). Unchanged accounts are not touched.

use std::collections::{HashMap, HashSet};

use super::Account;

/// What a reload does to one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New account: start it.
    Added,
    /// Gone: stop it (its files stay).
    Removed,
    /// Provider settings or credentials changed: stop it and log in again now.
    Credentials,
    /// Same credentials; sinks/notify, timing and/or request settings changed: update the
    /// running task, which keeps its token, backoff and 1 s spacing.
    Update {
        /// Sinks or notify hooks changed: write the current token to the new sinks.
        sinks: bool,
        /// Refresh timing, retry or schedule changed: reschedule.
        timing: bool,
        /// `timeout`, `insecure_http` or `default_lifetime` changed: the next exchange
        /// uses them (no new login: they are not part of the fingerprint).
        settings: bool,
    },
}

impl std::fmt::Display for Change {
    /// Words for the logs: `added`, `removed`, `credentials changed: new login`, or
    /// `updated: sinks, timing`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added => f.write_str("added"),
            Change::Removed => f.write_str("removed"),
            Change::Credentials => f.write_str("credentials changed: new login"),
            Change::Update {
                sinks,
                timing,
                settings,
            } => {
                let parts: Vec<&str> = [
                    (*sinks, "sinks"),
                    (*timing, "timing"),
                    (*settings, "request settings"),
                ]
                .into_iter()
                .filter_map(|(on, word)| on.then_some(word))
                .collect();
                write!(f, "updated: {}", parts.join(", "))
            }
        }
    }
}

/// The plan: account name and change, for every account that is not unchanged.
pub fn diff(old: &[&Account], new: &[&Account]) -> Vec<(String, Change)> {
    // Matched through hash maps, not by scanning: a linear search per account made a
    // reload of 10 000 accounts spend ~400 ms comparing names (issue 7, BENCHMARKS.md).
    let old_by_name: HashMap<&str, &Account> = old.iter().map(|o| (o.name.as_str(), *o)).collect();
    let new_names: HashSet<&str> = new.iter().map(|n| n.name.as_str()).collect();
    let mut plan = Vec::new();
    for o in old {
        if !new_names.contains(o.name.as_str()) {
            plan.push((o.name.clone(), Change::Removed));
        }
    }
    for n in new {
        let Some(o) = old_by_name.get(n.name.as_str()) else {
            plan.push((n.name.clone(), Change::Added));
            continue;
        };
        // The fingerprint covers the provider, its exchanges and every variable
        // (credentials, URLs): a change there needs a new login.
        if o.fingerprint != n.fingerprint || o.ca_file != n.ca_file {
            plan.push((n.name.clone(), Change::Credentials));
            continue;
        }
        let sinks = o.sinks != n.sinks || o.notify != n.notify;
        let timing = o.timing != n.timing || o.retry != n.retry || o.schedule != n.schedule;
        let settings = o.provider != n.provider;
        if sinks || timing || settings {
            plan.push((
                n.name.clone(),
                Change::Update {
                    sinks,
                    timing,
                    settings,
                },
            ));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(accounts: &str) -> Vec<Account> {
        crate::settings::load_str_for_tests(accounts)
    }

    fn account(name: &str, password: &str, sink: &str, ratio: f64) -> String {
        format!(
            "[[account]]\nname = \"{name}\"\nprovider = \"pontotel\"\nbase_url = \"http://127.0.0.1:1/p\"\nusername = \"u\"\npassword = \"{password}\"\n[account.refresh]\nratio = {ratio}\n[[account.sink]]\ntype = \"file\"\npath = \"{name}-{sink}\"\n"
        )
    }

    #[test]
    fn each_kind_of_edit_maps_to_its_change() {
        let old_text = [
            account("same", "p", "a", 0.75),
            account("pw", "p", "a", 0.75),
            account("sink", "p", "a", 0.75),
            account("time", "p", "a", 0.75),
            account("timeout", "p", "a", 0.75),
            account("gone", "p", "a", 0.75),
        ]
        .concat();
        let new_text = [
            account("same", "p", "a", 0.75),
            account("pw", "CHANGED", "a", 0.75),
            account("sink", "p", "b", 0.75),
            account("time", "p", "a", 0.5),
            account("timeout", "p", "a", 0.75).replace("username", "timeout = \"9s\"\nusername"),
            account("new", "p", "a", 0.75),
        ]
        .concat();
        let (old, new) = (load(&old_text), load(&new_text));
        let plan = diff(
            &old.iter().collect::<Vec<_>>(),
            &new.iter().collect::<Vec<_>>(),
        );
        let expected = vec![
            ("gone".to_string(), Change::Removed),
            ("pw".to_string(), Change::Credentials),
            (
                "sink".to_string(),
                Change::Update {
                    sinks: true,
                    timing: false,
                    settings: false,
                },
            ),
            (
                "time".to_string(),
                Change::Update {
                    sinks: false,
                    timing: true,
                    settings: false,
                },
            ),
            (
                "timeout".to_string(),
                Change::Update {
                    sinks: false,
                    timing: false,
                    settings: true,
                },
            ),
            ("new".to_string(), Change::Added),
        ];
        assert_eq!(plan, expected);
    }
}
