//! Where this process's CPU time goes, by thread name, from
//! `/proc/self/task/*/stat` (user + system time in clock ticks). With
//! `--spawn` the vault runs in this process, so a phase's CPU splits into
//! the load generator's threads, the vault's HTTP workers, its store
//! threads, and so on — a coarse profile that needs no `perf`.

use std::collections::BTreeMap;
use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// One thread group's CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// User plus system time.
    pub total: Duration,
    /// System time (syscalls: socket IO, writes, fsync).
    pub system: Duration,
}

/// CPU ticks (user, system) per thread id, with each thread's name.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    threads: BTreeMap<u32, (String, u64, u64)>,
}

impl Snapshot {
    /// This process's threads now (empty where `/proc` is not readable).
    pub fn take() -> Self {
        let mut threads = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return Snapshot { threads };
        };
        for entry in dir.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(t) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
            {
                threads.insert(tid, t);
            }
        }
        Snapshot { threads }
    }

    /// CPU used between `self` and `later`, by thread group.
    pub fn usage_until(&self, later: &Snapshot) -> BTreeMap<&'static str, Usage> {
        let mut by_group: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
        for (tid, (name, user, system)) in &later.threads {
            let (u0, s0) = self.threads.get(tid).map_or((0, 0), |(_, u, s)| (*u, *s));
            let e = by_group.entry(group(name)).or_default();
            e.0 += user.saturating_sub(u0);
            e.1 += system.saturating_sub(s0);
        }
        let secs = |t: u64| Duration::from_secs_f64(t as f64 / TICKS_PER_SECOND);
        by_group
            .into_iter()
            .map(|(g, (u, s))| {
                (
                    g,
                    Usage {
                        total: secs(u + s),
                        system: secs(s),
                    },
                )
            })
            .collect()
    }
}

/// `(comm, utime, stime)` of one `stat` line.
fn parse_stat(s: &str) -> Option<(String, u64, u64)> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s.get(open + 1..close)?.to_owned();
    // After ") ": state is field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = s.get(close + 2..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((name, utime, stime))
}

/// The group a thread's name puts it in.
fn group(name: &str) -> &'static str {
    if name.starts_with("dzl-load") {
        // The load generator's runtime (and the echo server's System thread).
        "load generator"
    } else if name.starts_with("actix-server") || name.starts_with("actix-rt") {
        "http workers (actix)"
    } else if name.starts_with("dzl-sqlite-sync") {
        // Makes each commit durable (fdatasync) and answers its callers.
        "store sync"
    } else if name.starts_with("dzl-sqlite-chec") {
        // Copies the WALs into the database files.
        "store checkpointer"
    } else if name.contains("writer") || name.contains("sqlite") {
        "store writer"
    } else if name.starts_with("tokio-runtime") {
        "blocking pool (store calls)"
    } else {
        "other"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_with_odd_names() {
        let line =
            "1251 (actix-server w) R 1246 1246 4280 0 -1 4194304 148 0 0 0 17 5 0 0 20 0 1 0";
        assert_eq!(parse_stat(line), Some(("actix-server w".into(), 17, 5)));
        let line = "7 (a) b) S 1 1 1 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0";
        assert_eq!(parse_stat(line), Some(("a) b".into(), 3, 4)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_store_threads_are_told_apart() {
        // Thread names as /proc gives them: cut to 15 bytes.
        assert_eq!(group("dzl-sqlite-writ"), "store writer");
        assert_eq!(group("dzl-sqlite-sync"), "store sync");
        assert_eq!(group("dzl-sqlite-chec"), "store checkpointer");
        assert_eq!(group("actix-rt|system"), "http workers (actix)");
        assert_eq!(group("dzl-load"), "load generator");
    }

    #[test]
    fn this_process_is_visible() {
        let a = Snapshot::take();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = Snapshot::take();
        assert!(!b.threads.is_empty());
        let _ = a.usage_until(&b);
    }
}
