//! The process itself: Ceph clients (and the keys they hold) are not kept longer than needed,
//! and no other process of its user can read its memory.

use super::*;

/// Keys do not stay in memory for ever: a Ceph client unused for `--ceph-client-idle` is
/// closed, and one that failed to connect is never kept.
#[tokio::test]
async fn idle_and_failed_ceph_clients_are_not_kept() {
    let addr = free_addr();
    let env = [("CEPH_CLIENT_IDLE", "3"), ("MAINTENANCE_INTERVAL", "1")];
    let c = Scenario::serving_with("idle", &env, &["--http-endpoint", &addr]).await;
    let clients = || async {
        metrics(&addr)
            .lines()
            .find_map(|l| l.strip_prefix("rbd_provisioner_ceph_clients "))
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    let class = c.class("fast", &[], json!({})).await;
    let (good, _uid) = c.bound(&class, "data", "64Mi").await;
    // A class whose admin key is wrong: its connection fails and is not kept.
    key_secret(
        &c.admin,
        "kube-system",
        &format!("{}-wrong", c.ns),
        "AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==",
    )
    .await;
    let wrong = c
        .class(
            "wrong",
            &[("adminSecretName", &format!("{}-wrong", c.ns))],
            json!({}),
        )
        .await;
    let bad = c.claim("bad", &wrong).create().await;
    wait_event(
        &c.admin,
        &c.ns,
        &uid_of(&bad),
        "ProvisioningFailed",
        &["EACCES"],
        T,
    )
    .await;
    let n = wait_for("the clients gauge", T, || async { clients().await }).await;
    assert!(n <= 1, "only the working client is kept, got {n}");
    wait_for("idle clients closed", Duration::from_secs(30), || async {
        (clients().await == Some(0)).then_some(())
    })
    .await;
    cleanup(&c.bed, &c.admin, &c.ns, &[&good, &bad], &["kube"]).await;
}

/// The provisioner is not dumpable: no core file can hold a key it read, and no other process
/// of its own user may read its memory, environment or descriptors. It runs as an unprivileged
/// user here (root, which runs the tests, reads anything): the kernel then gives root its
/// /proc files, and a process of the same user is refused them, while that user still reads
/// those of its other, ordinary processes.
#[tokio::test]
async fn the_provisioner_is_not_dumpable() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let bed = Bed::load();
    let name = format!("{}.test/rbd", unique("nodump"));
    let addr = free_addr();
    /// The kubeconfig copy holds a token: gone with the test, failed or not.
    struct Scratch(std::path::PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let (p, scratch) = Provisioner::start_as(&bed, &name, NOBODY, &["--metrics-addr", &addr]).await;
    let _scratch = Scratch(scratch);
    // Well past start-up, as that user: it reached the API server and took its Lease.
    common::wait_log(&p, &["became leader"], T).await;
    let pid = p.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with(&format!("Uid:\t{NOBODY}\t"))),
        "not running as {NOBODY}: {status}"
    );
    let as_nobody = |path: String| {
        Command::new("cat")
            .arg(path)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap()
    };

    // The control: the same user reads the environment of an ordinary process of its own.
    let mut other = Command::new("sleep")
        .arg("60")
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    let read = as_nobody(format!("/proc/{}/environ", other.id()));
    let _ = other.kill();
    let _ = other.wait();
    assert!(
        read.status.success(),
        "{NOBODY} cannot read its own process's environ: {}",
        String::from_utf8_lossy(&read.stderr)
    );

    for f in ["environ", "mem", "maps", "fd"] {
        let owner = std::fs::metadata(format!("/proc/{pid}/{f}")).unwrap().uid();
        assert_eq!(owner, 0, "/proc/{pid}/{f} is owned by {owner}: dumpable");
    }
    for f in ["environ", "maps", "mem"] {
        let read = as_nobody(format!("/proc/{pid}/{f}"));
        assert!(
            !read.status.success() && String::from_utf8_lossy(&read.stderr).contains("denied"),
            "{NOBODY} read /proc/{pid}/{f} of its provisioner: {:?}",
            read.status
        );
    }

    // It still reads its own /proc (its metrics), as that user.
    let metrics = wait_for("metrics of its own /proc", T, || async {
        let text = metrics(&addr);
        let positive = |name: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .any(|v| v.parse::<f64>().is_ok_and(|v| v > 0.0))
        };
        [
            "process_open_fds",
            "process_resident_memory_bytes",
            "rbd_provisioner_threads",
        ]
        .iter()
        .all(|m| positive(m))
        .then_some(text)
    })
    .await;
    assert!(metrics.contains("rbd_provisioner_leader 1"), "{metrics}");

    drop(p);
    let admin = bed.admin().await;
    let _ = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin, "kube-system")
        .delete(&domain::lease::lease_name(&name), &DeleteParams::default())
        .await;
}
