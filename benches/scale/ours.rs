//! The provisioner under measure, in its own process with /metrics on a port of its own: its
//! memory, its log's problems, when it is ready and when idle.

use super::*;

/// Resident memory of the provisioner, MiB: VmRSS and its anonymous (heap, stacks) and
/// file-backed (shared-library text: librados, libceph-common, ...) parts; VmHWM.
#[derive(Clone, Copy, Default)]
pub struct Mem {
    pub rss: f64,
    pub anon: f64,
    pub file: f64,
    pub hwm: f64,
}

impl Mem {
    pub fn of(pid: u32) -> Mem {
        let mib = |k: u64| k as f64 / 1024.0;
        rss_kib(pid)
            .map(|r| Mem {
                rss: mib(r.vm_rss),
                anon: mib(r.anon),
                file: mib(r.file),
                hwm: mib(r.hwm),
            })
            .unwrap_or_default()
    }

    /// `| VmRSS | RssAnon | RssFile |` cells.
    pub fn cells(&self) -> String {
        format!("{:.1} | {:.1} | {:.1}", self.rss, self.anon, self.file)
    }
}

impl fmt::Display for Mem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1} MiB (RssAnon {:.1}, RssFile {:.1})",
            self.rss, self.anon, self.file
        )
    }
}

/// The release-built provisioner with /metrics on a port of its own.
pub struct Ours {
    pub child: Child,
    pub log: std::path::PathBuf,
    pub addr: String,
    pub started: Instant,
}

impl Ours {
    pub async fn start(bed: &Bed, name: &str) -> Ours {
        Ours::start_with(
            bed,
            name,
            env!("CARGO_BIN_EXE_rbd-provisioner").as_ref(),
            &[],
        )
        .await
    }

    /// `bin` (another build of the provisioner) with these variables set.
    pub async fn start_with(
        bed: &Bed,
        name: &str,
        bin: &std::path::Path,
        env: &[(&str, String)],
    ) -> Ours {
        let kubeconfig = service_account_kubeconfig(bed).await;
        let addr = free_addr();
        let log = bed.dir.join(format!("{}.log", unique("scale")));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--provisioner-name", name, "--metrics-addr", &addr])
            .env(
                "RUST_LOG",
                // The debug lines carry each provisioning's and deletion's timings.
                "info,rbd_provisioner::controller::provision=debug,rbd_provisioner::controller::delete=debug",
            )
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        die_with_parent(&mut cmd);
        let started = Instant::now();
        let child = cmd.spawn().expect("start rbd-provisioner");
        Ours {
            child,
            log,
            addr,
            started,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn mem(&self) -> Mem {
        Mem::of(self.pid())
    }

    /// Its log's WARN and ERROR lines: (count of each, the first few of either).
    pub fn log_problems(&self) -> (usize, usize, Vec<String>) {
        let text = strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default());
        let (mut warns, mut errors, mut first) = (0, 0, Vec::new());
        for l in text.lines() {
            let w = l.contains(" WARN ");
            let e = l.contains(" ERROR ");
            warns += w as usize;
            errors += e as usize;
            if (w || e) && first.len() < 5 {
                first.push(l.chars().take(300).collect());
            }
        }
        (warns, errors, first)
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = tokio::net::TcpStream::connect(&self.addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((code, body))
    }

    /// Time from spawn until it leads and has listed every claim, volume and class (its
    /// "watches synced" line; /readyz would also answer 200 for a standby).
    pub async fn until_ready(&self, timeout: Duration) -> Result<Duration> {
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("watches synced") {
                return Ok(self.started.elapsed());
            }
            if self.started.elapsed() > timeout {
                bail!("not ready within {timeout:?}; log: {}", self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// (count, sum in seconds) of the successful `provision` operations.
    pub async fn provision_histogram(&self) -> (f64, f64) {
        let text = self
            .get("/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default();
        let value = |suffix: &str| {
            text.lines()
                .filter(|l| {
                    l.starts_with(&format!(
                        "rbd_provisioner_operation_duration_seconds_{suffix}"
                    )) && l.contains("operation=\"provision\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        (value("count"), value("sum"))
    }
}

impl Ours {
    /// Mean (plan, Ceph, write) milliseconds of the "provision timings" lines of claims whose
    /// name starts with `prefix`.
    pub fn timings(&self, prefix: &str) -> Option<(f64, f64, f64, usize)> {
        let text = strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default());
        let field = |l: &str, k: &str| -> Option<f64> {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))?
                .parse()
                .ok()
        };
        let rows: Vec<(f64, f64, f64)> = text
            .lines()
            .filter(|l| l.contains("provision timings") && l.contains(&format!("/{prefix}")))
            .filter_map(|l| {
                Some((
                    field(l, "plan_ms")?,
                    field(l, "ceph_ms")?,
                    field(l, "write_ms")?,
                ))
            })
            .collect();
        let n = rows.len();
        (n > 0).then(|| {
            let sum = rows
                .iter()
                .fold((0.0, 0.0, 0.0), |a, r| (a.0 + r.0, a.1 + r.1, a.2 + r.2));
            (sum.0 / n as f64, sum.1 / n as f64, sum.2 / n as f64, n)
        })
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// The WARN and ERROR lines of a provisioner's log, counted.
pub fn problems(ours: &Ours, which: &str, out: &mut Vec<String>) {
    let (warns, errors, first) = ours.log_problems();
    out.push(String::new());
    out.push(format!(
        "Log of the {which} ({}): {warns} WARN, {errors} ERROR lines.",
        ours.log.display()
    ));
    for l in first {
        out.push(format!("    {l}"));
    }
}

/// CPU time the process has used (user and system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: state is field 3, utime 14 and stime 15.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Since its watches synced, at least this long before memory is read: its free heap goes back
/// to the kernel every 10 s.
pub const SETTLE: Duration = Duration::from_secs(12);

/// Waits until the provisioner is idle: at least [`SETTLE`] after `ready`, then two seconds in
/// a row under 20 ms of CPU each (2 ticks); at most a minute.
pub async fn until_idle(ours: &Ours, ready: Duration) {
    let since = ours.started + ready;
    tokio::time::sleep(SETTLE.saturating_sub(since.elapsed())).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    let mut last = cpu_ticks(ours.pid());
    while quiet < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu_ticks(ours.pid());
        quiet = match (last, now) {
            (Some(a), Some(b)) if b.saturating_sub(a) <= 2 => quiet + 1,
            _ => 0,
        };
        last = now;
    }
}

/// One start of a provisioner binary over what is there: start → watches synced, and its
/// memory once idle.
pub struct Sample {
    pub ready: Duration,
    pub mem: Mem,
    /// WARN and ERROR lines of its log.
    pub problems: usize,
}

pub async fn sample(cx: &Ctx, bin: &std::path::Path, env: &[(&str, String)]) -> Result<Sample> {
    let ours = Ours::start_with(&cx.bed, &cx.prov_name, bin, env).await;
    let ready = ours.until_ready(Duration::from_secs(300)).await?;
    until_idle(&ours, ready).await;
    let mem = ours.mem();
    let (warns, errors, first) = ours.log_problems();
    for l in first {
        eprintln!("{}: {l}", bin.display());
    }
    Ok(Sample {
        ready,
        mem,
        problems: warns + errors,
    })
}

/// The binaries compared: this build, and `RBD_BENCH_BEFORE` when set.
pub fn binaries() -> Vec<(String, std::path::PathBuf)> {
    let mut b = vec![(
        "this build".to_string(),
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_rbd-provisioner")),
    )];
    if let Ok(before) = std::env::var("RBD_BENCH_BEFORE") {
        b.push((format!("`RBD_BENCH_BEFORE` ({before})"), before.into()));
    }
    b
}
