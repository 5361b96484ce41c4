//! Phase 4: a cold start with the pairs present (ready, first new PV, memory), the API
//! server's count of the lists it served meanwhile, and the idle process's CPU and wakeups.

use super::*;

use testbed::bench::procfs::{switches_by_name, thread_switches};
use testbed::bench::promtext::{buckets, largest_between, sum};

/// How long the idle process is watched.
const IDLE_WINDOW: Duration = Duration::from_secs(60);

/// Clock ticks per second in /proc/PID/stat (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// What the API server served as LIST of one resource between two readings of its metrics.
pub struct Listed {
    pub resource: String,
    pub requests: f64,
    /// The upper bound of the smallest response-size bucket holding every one of them.
    pub largest_at_most: Option<f64>,
    pub mean_bytes: f64,
    /// Objects the API server's storage returned for them.
    pub objects: f64,
}

/// The LIST requests per resource between the readings `before` and `after` of the API
/// server's `/metrics`.
pub fn listed_between(before: &str, after: &str) -> Vec<Listed> {
    let mut resources: Vec<String> =
        testbed::bench::promtext::samples(after, "apiserver_request_total", &[("verb", "LIST")])
            .into_iter()
            .filter_map(|(ls, _)| {
                ls.iter()
                    .find(|(k, _)| *k == "resource")
                    .map(|(_, v)| v.to_string())
            })
            .collect();
    resources.sort();
    resources.dedup();
    resources
        .into_iter()
        .filter_map(|r| {
            let w = [("verb", "LIST"), ("resource", r.as_str())];
            let delta = |name: &str, want: &[(&str, &str)]| {
                sum(after, name, want) - sum(before, name, want)
            };
            let requests = delta("apiserver_request_total", &w);
            (requests > 0.0).then(|| {
                let sizes = delta("apiserver_response_sizes_count", &w);
                Listed {
                    requests,
                    largest_at_most: largest_between(
                        &buckets(before, "apiserver_response_sizes", &w),
                        &buckets(after, "apiserver_response_sizes", &w),
                    ),
                    mean_bytes: if sizes > 0.0 {
                        delta("apiserver_response_sizes_sum", &w) / sizes
                    } else {
                        0.0
                    },
                    objects: delta(
                        "apiserver_storage_list_returned_objects_total",
                        &[("resource", r.as_str())],
                    ),
                    resource: r.clone(),
                }
            })
        })
        .collect()
}

/// The restart with `all` (claims, each with its PV) present: start → watches synced, → the
/// PV of a new claim, memory; the lists the API server served meanwhile; then a minute idle.
/// The restarted provisioner is returned for the next phases.
pub async fn restart_phase(
    cx: &Ctx,
    all: &[String],
    size: &str,
    out: &mut Vec<String>,
) -> Result<Ours> {
    let bound = bound_of(cx, all);
    if !page_sizes().is_empty() {
        // Before the restart proper: two replicas at once would leave one a standby.
        out.push(String::new());
        out.push(format!("### Page sizes of the claims and volumes watches' lists with {} pairs (this build, `RBD_PROVISIONER_LIST_PAGE_SIZE`; each started twice, alternating)\n", all.len()));
        out.push(
            "| pairs | page size | start → watches synced | VmHWM MiB | VmRSS idle MiB |".into(),
        );
        out.push("|---|---|---|---|---|".into());
        page_size_sweep(cx, &all.len().to_string(), out).await?;
    }
    let page = std::env::var("RBD_PROVISIONER_LIST_PAGE_SIZE").unwrap_or_else(|_| {
        "the default (streaming lists where the API server offers them, else 20)".into()
    });
    let before = cx.apiserver_metrics().await;
    let again = Ours::start(&cx.bed, &cx.prov_name).await;
    let ready = again
        .until_ready(scaled(
            all.len(),
            Duration::from_millis(20),
            Duration::from_secs(120),
        ))
        .await?;
    let after = cx.apiserver_metrics().await;
    let one = vec!["after-restart".to_string()];
    let t = Instant::now();
    // Handed over, like the claims of the ceiling: kube-controller-manager may still be binding
    // thousands of claims and would annotate a new claim only after them.
    // 20 ms per pair present (at least 60 s): the new claim's wait behind a relist.
    let wait = (
        Duration::from_millis(20).mul_f64(all.len() as f64 / one.len() as f64),
        Duration::from_secs(60),
    );
    claims_with_pvs(
        cx,
        &one,
        size,
        "the PV of a claim made after the restart",
        wait,
    )
    .await?;
    let first_pv = again.started.elapsed();
    let one_pv = t.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mem_restart = again.mem();
    until_idle(&again, again.started.elapsed()).await;
    let mem_idle = again.mem();
    let n = all.len() + 1;
    out.push(String::new());
    out.push(format!(
        "### Restart with {n} PVs and claims of ours present ({bound} of the claims Bound by then)\n"
    ));
    out.push(format!(
        "Log of the restarted provisioner: {}\n",
        again.log.display()
    ));
    figure_table(out);
    out.push(format!(
        "| **process start → leading, watches synced** | **{}** (goal ≤ 3 s: {}) |",
        ms(ready),
        goal(ready <= Duration::from_secs(3))
    ));
    out.push(format!(
        "| **process start → PV of a claim created (handed over) once ready** | **{}** (claim → PV {}; goal ≤ 4 s: {}) |",
        ms(first_pv),
        ms(one_pv),
        goal(first_pv <= Duration::from_secs(4))
    ));
    out.push(format!(
        "| resident memory 5 s later | {mem_restart} (peak {:.1} MiB) |",
        mem_restart.hwm
    ));
    out.push(format!(
        "| resident memory once idle after its heap trim | {mem_idle} (peak {:.1} MiB) |",
        mem_idle.hwm
    ));
    out.push(String::new());
    out.push(format!(
        "LIST requests the API server served from the provisioner's start to its `watches synced` line (its `/metrics`: `apiserver_request_total`, `apiserver_response_sizes`, `apiserver_storage_list_returned_objects_total`; nothing else lists these resources then: the harness's and kube-controller-manager's watches are long established). List page size: {page}:\n"
    ));
    out.push("| resource | LIST requests | objects returned | per request | mean response | largest response at most |".into());
    out.push("|---|---|---|---|---|---|".into());
    for l in listed_between(&before, &after) {
        out.push(format!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} kB | {} |",
            l.resource,
            l.requests,
            l.objects,
            l.objects / l.requests,
            l.mean_bytes / 1000.0,
            l.largest_at_most
                .map(|b| format!("{:.0} kB", b / 1000.0))
                .unwrap_or_else(|| "—".into())
        ));
    }
    idle_phase(&again, n, out).await;
    Ok(again)
}

pub fn goal(met: bool) -> &'static str {
    if met { "met" } else { "not met" }
}

/// A minute of the idle provisioner: CPU time and context switches, by thread.
async fn idle_phase(ours: &Ours, n: usize, out: &mut Vec<String>) {
    let pid = ours.pid();
    let (cpu0, sw0) = (cpu_ticks(pid), thread_switches(pid));
    tokio::time::sleep(IDLE_WINDOW).await;
    let (cpu1, sw1) = (cpu_ticks(pid), thread_switches(pid));
    let by = switches_by_name(&sw0, &sw1);
    let total: u64 = by.iter().map(|(_, k)| k).sum();
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => format!("{:.2} s", b.saturating_sub(a) as f64 / USER_HZ),
        _ => "unreadable".into(),
    };
    out.push(String::new());
    out.push(format!(
        "**Idle, {n} pairs, nothing changing, {} s:** CPU (utime + stime) {cpu}; {total} context switches ({:.1}/s) over {} threads. By thread name (switches in the window):\n",
        IDLE_WINDOW.as_secs(),
        total as f64 / IDLE_WINDOW.as_secs_f64(),
        sw1.len()
    ));
    out.push("| thread | switches | per second |".into());
    out.push("|---|---|---|".into());
    for (name, k) in by.iter().filter(|(_, k)| *k > 0) {
        out.push(format!(
            "| `{name}` | {k} | {:.2} |",
            *k as f64 / IDLE_WINDOW.as_secs_f64()
        ));
    }
}
