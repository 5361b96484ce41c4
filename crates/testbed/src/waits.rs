//! Waiting for what the API server and the provisioner's log say.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event as CoreEvent, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::Provisioner;

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `api` no longer holds an object named `name`.
pub async fn wait_absent<K>(api: &Api<K>, name: &str, what: &str, timeout: Duration)
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(what, timeout, || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await
}

/// Waits until the claim is Bound; returns it.
pub async fn wait_bound(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> PersistentVolumeClaim {
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    wait_for(&format!("claim {ns}/{name} Bound"), timeout, || async {
        let c = api.get(name).await.ok()?;
        (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(c)
    })
    .await
}

/// Events (events.k8s.io/v1) about one object, oldest first.
pub async fn events_for(client: &Client, ns: &str, uid: &str) -> Vec<Event> {
    let api = Api::<Event>::namespaced(client.clone(), ns);
    let mut evs: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid))
        .collect();
    evs.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
    evs
}

/// Waits for an event with `reason` about the object whose note contains every needle.
pub async fn wait_event(
    client: &Client,
    ns: &str,
    uid: &str,
    reason: &str,
    needles: &[&str],
    timeout: Duration,
) -> Event {
    wait_for(
        &format!("event {reason} containing {needles:?}"),
        timeout,
        || async {
            events_for(client, ns, uid).await.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && needles
                        .iter()
                        .all(|n| e.note.as_deref().unwrap_or("").contains(n))
            })
        },
    )
    .await
}

/// core/v1 events about a PersistentVolume (they live in "default").
pub async fn pv_events(client: &Client, pv: &str) -> Vec<CoreEvent> {
    Api::<CoreEvent>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pv))
        .collect()
}

/// Waits for a core/v1 event with `reason` about PV `pv` whose message contains `needle`;
/// returns the message.
pub async fn wait_pv_event(
    client: &Client,
    pv: &str,
    reason: &str,
    needle: &str,
    timeout: Duration,
) -> String {
    wait_for(
        &format!("event {reason} on PV {pv} containing {needle:?}"),
        timeout,
        || async {
            pv_events(client, pv).await.into_iter().find_map(|e| {
                let msg = e.message.unwrap_or_default();
                (e.reason.as_deref() == Some(reason) && msg.contains(needle)).then_some(msg)
            })
        },
    )
    .await
}

/// Waits until `needle` appears in the provisioner's log (ANSI colour codes removed),
/// proof that it handled an object before a test asserts that nothing happened.
pub async fn wait_log(p: &Provisioner, needle: &[&str], timeout: Duration) {
    wait_for(&format!("log line with {needle:?}"), timeout, || async {
        let text = strip_ansi(&p.logs());
        text.lines()
            .any(|l| needle.iter().all(|n| l.contains(n)))
            .then_some(())
    })
    .await
}

/// The lines of the provisioner's log (ANSI colour codes removed) that contain every needle.
pub fn log_lines(p: &Provisioner, needles: &[&str]) -> Vec<String> {
    strip_ansi(&p.logs())
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// Waits until the provisioner's log holds `needle` at least `times` times.
pub async fn wait_log_count(p: &Provisioner, needle: &str, times: usize, timeout: Duration) {
    wait_for(
        &format!("{times}× {needle:?} in the provisioner's log"),
        timeout,
        || async { (p.logs().matches(needle).count() >= times).then_some(()) },
    )
    .await
}

/// Waits until the provisioner has finished `n` more housekeeping passes than it had (each
/// pass ends with its trash sweep).
pub async fn more_passes(p: &Provisioner, n: usize, timeout: Duration) {
    const DONE: &str = "trash sweep done";
    let before = p.logs().matches(DONE).count();
    wait_log_count(p, DONE, before + n, timeout).await
}

/// `text` without ANSI escape sequences (the provisioner's log is coloured).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Asserts from the process's own log that it took the Lease and then did `acted` (a log
/// line containing every needle): the work was this process's, not another replica's.
pub async fn assert_led_and_acted(p: &Provisioner, acted: &[&str], timeout: Duration) {
    wait_log(p, &["became leader"], timeout).await;
    wait_log(p, acted, timeout).await;
}

/// Seconds since the Unix epoch, as the provisioner's stamps record time.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
