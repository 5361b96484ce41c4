//! What /proc tells of the machine and of the provisioner's process.

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn find_pid(prov_name: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_ours = args
            .first()
            .is_some_and(|a| a.ends_with(b"rbd-provisioner"))
            && args
                .windows(2)
                .any(|w| w[0] == b"--provisioner-name" && w[1] == prov_name.as_bytes());
        if is_ours {
            return Some(pid);
        }
    }
    None
}

pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident memory of a process and its parts, in KiB, from one read of /proc/PID/status:
/// anonymous (heap, stacks), file-backed (mapped files: shared-library text such as librados
/// and libceph-common, not the page cache) and shared memory.
#[allow(dead_code)] // read by benches/scale.rs
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    pub vm_rss: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub hwm: u64,
}

#[allow(dead_code)] // used by benches/scale.rs
pub fn rss_kib(pid: u32) -> Option<Rss> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(Rss {
        vm_rss: field("VmRSS:")?,
        anon: field("RssAnon:").unwrap_or(0),
        file: field("RssFile:").unwrap_or(0),
        shmem: field("RssShmem:").unwrap_or(0),
        hwm: field("VmHWM:").unwrap_or(0),
    })
}

/// Each thread of `pid`: its id, its name and its context switches so far (voluntary and
/// involuntary): each one is a wakeup, or a preemption, of that thread.
pub fn thread_switches(pid: u32) -> Vec<(u32, String, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            Some((tid, thread_name(&status), context_switches(&status)))
        })
        .collect()
}

fn thread_name(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Name:"))
        .map(|n| n.trim().to_string())
        .unwrap_or_default()
}

fn context_switches(status: &str) -> u64 {
    status
        .lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches:")
                || l.starts_with("nonvoluntary_ctxt_switches:")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Context switches between two readings of [`thread_switches`], by thread name (threads
/// started in between count from zero), largest first.
pub fn switches_by_name(
    before: &[(u32, String, u64)],
    after: &[(u32, String, u64)],
) -> Vec<(String, u64)> {
    let mut by: Vec<(String, u64)> = Vec::new();
    for (tid, name, n) in after {
        let was = before
            .iter()
            .find(|(t, _, _)| t == tid)
            .map_or(0, |(_, _, b)| *b);
        let d = n.saturating_sub(was);
        match by.iter_mut().find(|(k, _)| k == name) {
            Some(e) => e.1 += d,
            None => by.push((name.clone(), d)),
        }
    }
    by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    by
}

/// The client QPS and burst flags (`--kube-api-qps=…` `--kube-api-burst=…`) of the
/// kube-controller-manager the plane in `bed_dir` runs (hack/kube-up.sh records its pid in
/// `kube/pids/`), as one string; empty when it runs with its defaults or cannot be read.
pub fn kcm_client_flags(bed_dir: &std::path::Path) -> String {
    let pid = bed_dir.join("kube/pids/kube-controller-manager.pid");
    let Some(cmd) = std::fs::read_to_string(pid)
        .ok()
        .and_then(|p| std::fs::read(format!("/proc/{}/cmdline", p.trim())).ok())
    else {
        return String::new();
    };
    kube_api_flags(&cmd)
}

/// The `--kube-api-qps`/`--kube-api-burst` arguments of a NUL-separated command line.
fn kube_api_flags(cmdline: &[u8]) -> String {
    cmdline
        .split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .filter(|a| a.starts_with("--kube-api-qps=") || a.starts_with("--kube-api-burst="))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn switches_are_counted_per_thread_name() {
        let status = "Name:\ttokio-runtime-w\nvoluntary_ctxt_switches:\t10\nnonvoluntary_ctxt_switches:\t2\n";
        assert_eq!(super::thread_name(status), "tokio-runtime-w");
        assert_eq!(super::context_switches(status), 12);
        let before = [(1, "main".to_string(), 5), (2, "w".to_string(), 10)];
        let after = [
            (1, "main".to_string(), 6),
            (2, "w".to_string(), 30),
            (3, "w".to_string(), 4),
        ];
        assert_eq!(
            super::switches_by_name(&before, &after),
            vec![("w".to_string(), 24), ("main".to_string(), 1)]
        );
    }

    #[test]
    fn kube_api_flags_are_read_from_the_command_line() {
        let cmd = b"kube-controller-manager\0--v=2\0--kube-api-qps=200\0--kube-api-burst=400\0";
        assert_eq!(
            super::kube_api_flags(cmd),
            "--kube-api-qps=200 --kube-api-burst=400"
        );
        assert_eq!(
            super::kube_api_flags(b"kube-controller-manager\0--v=2\0"),
            ""
        );
    }
}
