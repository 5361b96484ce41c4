//! Scanning for key material where it must never be: logs, /proc, events.

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::{Bed, Provisioner};

/// Standard base64 (with padding) of `s`, the form keys take in Secrets' `data`.
pub fn base64_of(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every form a Ceph key of the bed could leak in: admin and user, raw and base64.
pub fn key_forms(bed: &Bed) -> Vec<(String, String)> {
    vec![
        ("admin key".into(), bed.admin_key.clone()),
        ("admin key (base64)".into(), base64_of(&bed.admin_key)),
        ("user key".into(), bed.kube_key.clone()),
        ("user key (base64)".into(), base64_of(&bed.kube_key)),
    ]
}

/// Asserts that no key of the bed appears in the provisioner's log, its command line, its
/// environment, or any event in `namespaces`.
pub async fn assert_no_keys(bed: &Bed, client: &Client, p: &Provisioner, namespaces: &[&str]) {
    let found = key_leaks(bed, client, p.pid(), &p.logs(), namespaces).await;
    assert!(found.is_empty(), "key material leaked: {found:?}");
}

/// Where the bed's keys (raw and base64) appear: in `log`, in `/proc/<pid>/cmdline` and
/// `/proc/<pid>/environ`, and in the events of `namespaces` (their notes, reasons and every
/// other field). The scanner is fed the real key bytes, so it sees a real leak.
pub async fn key_leaks(
    bed: &Bed,
    client: &Client,
    pid: u32,
    log: &str,
    namespaces: &[&str],
) -> Vec<String> {
    // A process just spawned can be read inside its execve, when the new image's arguments
    // and environment are not set up yet and both read empty: wait for them, since an empty
    // read would make the scan pass for want of anything to scan.
    let proc_file = |f: &str| {
        let start = Instant::now();
        loop {
            let raw = std::fs::read(format!("/proc/{pid}/{f}"))
                .unwrap_or_else(|e| panic!("read /proc/{pid}/{f}: {e}"));
            if !raw.is_empty() {
                return String::from_utf8_lossy(&raw).replace('\0', " ");
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "/proc/{pid}/{f} stayed empty: nothing to scan"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut places = vec![
        ("the log".to_string(), log.to_string()),
        ("the command line".to_string(), proc_file("cmdline")),
        ("the environment".to_string(), proc_file("environ")),
    ];
    for ns in namespaces {
        let evs = Api::<Event>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .expect("list events");
        let mut text = String::new();
        for e in evs.items {
            text.push_str(&serde_json::to_string(&e).unwrap());
            text.push('\n');
        }
        places.push((format!("events of {ns}"), text));
    }
    let mut found = Vec::new();
    for (what, key) in key_forms(bed) {
        for (place, text) in &places {
            if text.contains(&key) {
                found.push(format!("{what} in {place}"));
            }
        }
    }
    found
}
