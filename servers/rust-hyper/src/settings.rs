//! Everything the server reads from its environment, read once, here and nowhere else.
//!
//! The same variables, limits, defaults and messages as the Python servers' settings.py
//! (servers/async-style/src/async_style/settings.py), less the knobs only their runners have
//! (LOG_LEVEL, ACCESS_LOG, SCHED_POLICY). A bad value is a SettingsError, whose message is the
//! one line main prints before it exits.

use std::fmt;
use std::fs;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

pub const SERVER_NAME: &str = "rust-hyper";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    /// tokio's worker threads: the hash runs on them, so one per CPU this process may use.
    pub workers: usize,
    pub hash_iterations: u32,
}

/// One environment variable holds a value the server cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError(pub String);

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Read the settings through `env`, which gives a variable's value or None when it is unset.
pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
    let host = env("HOST").unwrap_or_default().trim().to_string();
    Ok(Settings {
        host: if host.is_empty() {
            "127.0.0.1".to_string()
        } else {
            host
        },
        port: integer(env, "PORT", Some(8080), 1, 65535)? as u16,
        workers: integer(env, "WORKERS", None, 1, 1024)? as usize,
        hash_iterations: integer(env, "HASH_ITERATIONS", Some(100), 1, 10_000_000)? as u32,
    })
}

/// The process environment, as `load` takes it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
}

impl Settings {
    /// The address to listen on: HOST may be a name, as it may for the Python runners.
    pub fn address(&self) -> Result<SocketAddr, SettingsError> {
        let refused = |why: String| {
            SettingsError(format!(
                "HOST must be an IP address or a name this machine resolves, got {} ({}).",
                python_repr(&self.host),
                why
            ))
        };
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|error| refused(error.to_string()))?
            .next()
            .ok_or_else(|| refused("no address".to_string()))
    }
}

fn integer(
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: Option<i64>,
    low: i64,
    high: i64,
) -> Result<i64, SettingsError> {
    let value = env(name).unwrap_or_default();
    let raw = value.trim();
    if raw.is_empty() {
        return Ok(default.unwrap_or_else(|| {
            available_cpus(Path::new("/sys/fs/cgroup"), Path::new("/proc/self/cgroup")) as i64
        }));
    }
    match raw.parse::<i64>() {
        Ok(value) if (low..=high).contains(&value) => Ok(value),
        _ => Err(SettingsError(format!(
            "{} must be a whole number from {} to {}, got {}.",
            name,
            low,
            high,
            python_repr(raw)
        ))),
    }
}

/// `value` quoted as Python's repr() quotes a str, so the messages read as the Python servers'.
fn python_repr(value: &str) -> String {
    let quote = if value.contains('\'') && !value.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(value.len() + 2);
    out.push(quote);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// CPUs this process can really use: the affinity mask, capped by a cgroup CPU quota.
///
/// A quota of 1.5 CPUs gives 2 (rounded up); the host's core count is never used when a quota is
/// set, because a container limited to 2 CPUs on a 64-core node must not start 64 workers. Not
/// std::thread::available_parallelism: it rounds a quota down (1.5 CPUs gives 1), and what it
/// reads has changed between Rust releases (rustc 1.63 in the image, newer ones elsewhere).
pub fn available_cpus(cgroup_root: &Path, proc_cgroup: &Path) -> usize {
    cpus_within(affinity_cpus(), cgroup_cpu_quota(cgroup_root, proc_cgroup))
}

/// `affinity` CPUs capped by `quota` CPUs rounded up, and never fewer than one.
pub fn cpus_within(affinity: usize, quota: Option<f64>) -> usize {
    match quota {
        Some(quota) => affinity.min((quota.ceil() as i64).max(1) as usize),
        None => affinity,
    }
}

fn affinity_cpus() -> usize {
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into `set`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            return libc::CPU_COUNT(&set).max(1) as usize;
        }
    }
    // More CPUs than a cpu_set_t holds (1,024): the kernel's count is the best left.
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The tightest CPU quota (in CPUs) on this process's cgroup and its ancestors, or None.
pub fn cgroup_cpu_quota(root: &Path, proc_cgroup: &Path) -> Option<f64> {
    cgroup_dirs(root, proc_cgroup)
        .iter()
        .filter_map(|dir| read_quota(dir))
        .fold(None, |tightest: Option<f64>, quota| {
            Some(tightest.map_or(quota, |t| t.min(quota)))
        })
}

/// Candidate directories holding CPU controller files, from the process's own cgroup up.
fn cgroup_dirs(root: &Path, proc_cgroup: &Path) -> Vec<PathBuf> {
    let lines = fs::read_to_string(proc_cgroup).unwrap_or_default();
    let mut mounts: Vec<(PathBuf, String)> = Vec::new();
    for line in lines.lines() {
        // "<id>:<controllers>:<path>"; a line without both colons names no cgroup.
        let mut fields = line.splitn(3, ':');
        let (controllers, path) = match (fields.next(), fields.next(), fields.next()) {
            (Some(_), Some(controllers), Some(path)) => (controllers, path),
            _ => continue,
        };
        if controllers.is_empty() {
            // cgroup v2 unified hierarchy
            mounts.push((root.to_path_buf(), path.to_string()));
        } else if controllers.split(',').any(|c| c == "cpu") {
            // cgroup v1 cpu controller
            if let Some(mount) = ["cpu,cpuacct", "cpu", "cpuacct,cpu"]
                .iter()
                .map(|name| root.join(name))
                .find(|m| m.is_dir())
            {
                mounts.push((mount, path.to_string()));
            }
        }
    }
    if mounts.is_empty() {
        mounts = vec![
            (root.to_path_buf(), "/".to_string()),
            (root.join("cpu,cpuacct"), "/".to_string()),
            (root.join("cpu"), "/".to_string()),
        ];
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (mount, path) in mounts {
        // Inside a container the path from /proc may not exist under the namespaced mount;
        // walking up to the mount root finds the container's own limits there.
        let relative = path.trim_start_matches('/');
        let mut current = if relative.is_empty() {
            mount.clone()
        } else {
            mount.join(relative)
        };
        loop {
            dirs.push(current.clone());
            if current == mount || !current.starts_with(&mount) {
                break;
            }
            match current.parent() {
                Some(parent) => current = parent.to_path_buf(),
                None => break,
            }
        }
        if !dirs.contains(&mount) {
            dirs.push(mount);
        }
    }
    dirs
}

fn read_quota(directory: &Path) -> Option<f64> {
    // v2: "<quota|max> <period>"; "max" is no quota, and a file that cannot be read or parsed
    // leaves the v1 files to decide.
    if let Ok(text) = fs::read_to_string(directory.join("cpu.max")) {
        let fields: Vec<&str> = text.split_whitespace().collect();
        match fields.first() {
            None | Some(&"max") => return None,
            Some(quota) => {
                if let (Ok(quota), Some(Ok(period))) = (
                    quota.parse::<i64>(),
                    fields.get(1).map(|p| p.parse::<i64>()),
                ) {
                    if period != 0 {
                        return Some(quota as f64 / period as f64);
                    }
                }
            }
        }
    }
    // v1: the quota is -1 when unlimited
    let read = |name: &str| {
        fs::read_to_string(directory.join(name))
            .ok()?
            .trim()
            .parse::<i64>()
            .ok()
    };
    match (read("cpu.cfs_quota_us")?, read("cpu.cfs_period_us")?) {
        (quota, period) if quota > 0 && period > 0 => Some(quota as f64 / period as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn load_from(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load(&|name| env.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let loaded = load_from(&[]).unwrap();
        assert_eq!(
            (loaded.host.as_str(), loaded.port, loaded.hash_iterations),
            ("127.0.0.1", 8080, 100)
        );
        assert!(
            loaded.workers >= 1 && loaded.workers <= affinity_cpus(),
            "{}",
            loaded.workers
        );
        assert_eq!(SERVER_NAME, "rust-hyper");
    }

    #[test]
    fn empty_values_mean_the_default() {
        let loaded = load_from(&[
            ("HOST", ""),
            ("PORT", " "),
            ("HASH_ITERATIONS", ""),
            ("WORKERS", ""),
        ])
        .unwrap();
        assert_eq!(
            (loaded.host.as_str(), loaded.port, loaded.hash_iterations),
            ("127.0.0.1", 8080, 100)
        );
        assert!(loaded.workers >= 1);
    }

    #[test]
    fn values_are_read() {
        let loaded = load_from(&[
            ("HOST", "0.0.0.0"),
            ("PORT", "9000"),
            ("WORKERS", " 3 "),
            ("HASH_ITERATIONS", "7"),
        ])
        .unwrap();
        assert_eq!(
            loaded,
            Settings {
                host: "0.0.0.0".into(),
                port: 9000,
                workers: 3,
                hash_iterations: 7
            }
        );
        let limits = load_from(&[
            ("PORT", "65535"),
            ("WORKERS", "1024"),
            ("HASH_ITERATIONS", "10000000"),
        ])
        .unwrap();
        assert_eq!(
            (limits.port, limits.workers, limits.hash_iterations),
            (65535, 1024, 10_000_000)
        );
    }

    #[test]
    fn every_refusal_names_the_variable_what_it_accepts_and_the_value() {
        let cases = [
            (
                "PORT",
                "http",
                "PORT must be a whole number from 1 to 65535, got 'http'.",
            ),
            (
                "PORT",
                "0",
                "PORT must be a whole number from 1 to 65535, got '0'.",
            ),
            (
                "PORT",
                "70000",
                "PORT must be a whole number from 1 to 65535, got '70000'.",
            ),
            (
                "PORT",
                " 99999 ",
                "PORT must be a whole number from 1 to 65535, got '99999'.",
            ),
            (
                "WORKERS",
                "0",
                "WORKERS must be a whole number from 1 to 1024, got '0'.",
            ),
            (
                "WORKERS",
                "-2",
                "WORKERS must be a whole number from 1 to 1024, got '-2'.",
            ),
            (
                "WORKERS",
                "2.5",
                "WORKERS must be a whole number from 1 to 1024, got '2.5'.",
            ),
            (
                "WORKERS",
                "1025",
                "WORKERS must be a whole number from 1 to 1024, got '1025'.",
            ),
            (
                "WORKERS",
                "abc",
                "WORKERS must be a whole number from 1 to 1024, got 'abc'.",
            ),
            (
                "HASH_ITERATIONS",
                "0",
                "HASH_ITERATIONS must be a whole number from 1 to 10000000, got '0'.",
            ),
            (
                "HASH_ITERATIONS",
                "10000001",
                "HASH_ITERATIONS must be a whole number from 1 to 10000000, got '10000001'.",
            ),
            (
                "HASH_ITERATIONS",
                "1e3",
                "HASH_ITERATIONS must be a whole number from 1 to 10000000, got '1e3'.",
            ),
            // Quoted as Python quotes them, and on one line whatever the value holds.
            (
                "PORT",
                "it's",
                "PORT must be a whole number from 1 to 65535, got \"it's\".",
            ),
            (
                "PORT",
                "1\n2",
                "PORT must be a whole number from 1 to 65535, got '1\\n2'.",
            ),
        ];
        for (name, value, message) in cases {
            assert_eq!(
                load_from(&[(name, value)]),
                Err(SettingsError(message.to_string())),
                "{}={:?}",
                name,
                value
            );
        }
    }

    #[test]
    fn host_must_resolve() {
        let settings = load_from(&[("HOST", "::1"), ("PORT", "9000")]).unwrap();
        assert_eq!(settings.address().unwrap(), "[::1]:9000".parse().unwrap());
        // A NUL byte fails before any name lookup, so the test needs no DNS.
        let bad = load_from(&[("HOST", "bad\0host")])
            .unwrap()
            .address()
            .unwrap_err()
            .0;
        assert!(
            bad.starts_with(
                "HOST must be an IP address or a name this machine resolves, got 'bad\\x00host' ("
            ),
            "{}",
            bad
        );
        assert!(!bad.contains('\n'));
    }

    /// A fresh directory under the system's temporary directory, removed when dropped.
    struct Fixture(PathBuf);

    impl Fixture {
        fn new() -> Fixture {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "rust-hyper-settings-{}-{}",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Fixture(dir)
        }

        fn write(&self, relative: &str, text: &str) {
            let path = self.0.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        fn quota(&self) -> Option<f64> {
            cgroup_cpu_quota(&self.0.join("cgroup"), &self.0.join("proc-self-cgroup"))
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn cgroup_v2_quota() {
        for (cpu_max, expected) in [
            ("max 100000\n", None),
            ("200000 100000\n", Some(2.0)),
            ("150000 100000\n", Some(1.5)),
            ("50000 100000\n", Some(0.5)),
        ] {
            let fixture = Fixture::new();
            fixture.write("proc-self-cgroup", "0::/kubepods/pod1/ctr\n");
            fixture.write("cgroup/kubepods/pod1/ctr/cpu.max", cpu_max);
            assert_eq!(fixture.quota(), expected, "{:?}", cpu_max);
        }
    }

    #[test]
    fn cgroup_v2_takes_the_tightest_ancestor() {
        let fixture = Fixture::new();
        fixture.write("proc-self-cgroup", "0::/kubepods/pod1/ctr\n");
        fixture.write("cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n");
        fixture.write("cgroup/kubepods/pod1/cpu.max", "300000 100000\n");
        fixture.write("cgroup/kubepods/cpu.max", "800000 100000\n");
        assert_eq!(fixture.quota(), Some(3.0));
    }

    #[test]
    fn cgroup_v2_namespaced_mount_reads_the_root() {
        // With a private cgroup namespace the container sees its own cgroup as "/" at the mount root.
        let fixture = Fixture::new();
        fixture.write("proc-self-cgroup", "0::/\n");
        fixture.write("cgroup/cpu.max", "250000 100000\n");
        assert_eq!(fixture.quota(), Some(2.5));
    }

    #[test]
    fn cgroup_v2_path_missing_under_the_mount_walks_up_to_its_root() {
        let fixture = Fixture::new();
        fixture.write("proc-self-cgroup", "0::/system.slice/docker-abc.scope\n");
        fixture.write("cgroup/cpu.max", "100000 100000\n");
        assert_eq!(fixture.quota(), Some(1.0));
    }

    #[test]
    fn cgroup_v2_unreadable_cpu_max_leaves_v1_files_to_decide() {
        let fixture = Fixture::new();
        fixture.write("proc-self-cgroup", "0::/\n");
        fixture.write("cgroup/cpu.max", "lots 100000\n");
        fixture.write("cgroup/cpu.cfs_quota_us", "300000\n");
        fixture.write("cgroup/cpu.cfs_period_us", "100000\n");
        assert_eq!(fixture.quota(), Some(3.0));
    }

    #[test]
    fn cgroup_v1_quota() {
        let fixture = Fixture::new();
        fixture.write(
            "proc-self-cgroup",
            "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
        );
        fixture.write("cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "400000\n");
        fixture.write(
            "cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us",
            "100000\n",
        );
        assert_eq!(fixture.quota(), Some(4.0));
    }

    #[test]
    fn cgroup_v1_unlimited() {
        let fixture = Fixture::new();
        fixture.write("proc-self-cgroup", "3:cpu,cpuacct:/\n");
        fixture.write("cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
        fixture.write("cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
        assert_eq!(fixture.quota(), None);
    }

    #[test]
    fn no_cgroup_files_means_no_quota() {
        let fixture = Fixture::new();
        assert_eq!(
            cgroup_cpu_quota(&fixture.0.join("nothing"), &fixture.0.join("missing")),
            None
        );
    }

    #[test]
    fn workers_default_rounds_a_quota_up_and_never_exceeds_affinity() {
        let fixture = Fixture::new();
        let (root, proc) = (fixture.0.join("cgroup"), fixture.0.join("proc-self-cgroup"));
        fixture.write("proc-self-cgroup", "0::/\n");
        fixture.write("cgroup/cpu.max", "50000 100000\n");
        assert_eq!(available_cpus(&root, &proc), 1);
        let affinity = affinity_cpus();
        fixture.write(
            "cgroup/cpu.max",
            &format!("{} 100000\n", (affinity + 7) * 100000),
        );
        assert_eq!(available_cpus(&root, &proc), affinity);
        fixture.write("cgroup/cpu.max", "150000 100000\n");
        assert_eq!(
            cpus_within(64, cgroup_cpu_quota(&root, &proc)),
            2,
            "a 64-core host with a 1.5-CPU quota gets 2"
        );
        assert_eq!(cpus_within(64, None), 64);
    }
}
