//! What the machine is (cores, memory, kernel, CPU model) and how busy it is (load
//! average), so every table carries the conditions it was measured under.

use std::time::Duration;

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> (f64, f64, f64) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut f = text
        .split_whitespace()
        .map(|x| x.parse::<f64>().unwrap_or(f64::NAN));
    (
        f.next().unwrap_or(f64::NAN),
        f.next().unwrap_or(f64::NAN),
        f.next().unwrap_or(f64::NAN),
    )
}

/// `"0.12 0.30 0.41"`.
pub fn load_string() -> String {
    let (a, b, c) = loadavg();
    format!("{a:.2} {b:.2} {c:.2}")
}

/// Waits (polling once a minute, at most `max_wait`) until the 1-minute load is below
/// `threshold`; returns the load seen last and whether it got quiet. Measurements on a
/// shared machine are only worth publishing when it is quiet.
pub fn wait_quiet(threshold: f64, max_wait: Duration) -> (String, bool) {
    let start = std::time::Instant::now();
    loop {
        let (one, _, _) = loadavg();
        if one < threshold {
            return (load_string(), true);
        }
        if start.elapsed() >= max_wait {
            return (load_string(), false);
        }
        eprintln!(
            "machine busy (load {}), waiting for 1-min load < {threshold}",
            load_string()
        );
        std::thread::sleep(Duration::from_secs(60).min(max_wait.saturating_sub(start.elapsed())));
    }
}

/// A Markdown description: nproc, memory, kernel, CPU model, filesystem of the scratch dir.
pub fn describe(scratch: &std::path::Path) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let fs = super::tmpfs::mount_of(scratch)
        .map_or_else(|| "?".to_string(), |(_, t, o)| format!("{t} ({o})"));
    format!(
        "| nproc | memory | kernel | CPU model | scratch filesystem |\n|---|---|---|---|---|\n| {nproc} | {:.1} GiB | {kernel} | {cpu} | {fs} |\n",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}
