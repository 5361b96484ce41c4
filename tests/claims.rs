//! README claims that no other test covered, each checked on the bed: the HTTP endpoint, flags
//! and their environment forms, the flavour chosen at start, retries with backoff, the user
//! Secret's namespace, the class's mountOptions and Retain, the restart purge, and the shipped
//! manifests. (Covered elsewhere: the leader exiting when it cannot renew, `tests/leader.rs`; a
//! claim deleted while its image is created, `tests/delete.rs`; a csi node-stage Secret missing
//! `userKey`, `tests/lifecycle.rs`.)

use testbed as common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams};
use serde_json::json;

/// `curl` of one path: (HTTP status, body); status 0 when nothing answers.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            &format!("http://{addr}{path}"),
        ])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

async fn wait_http_ok(addr: &str, path: &str) -> String {
    wait_for(
        &format!("{path} answering 200 on {addr}"),
        Duration::from_secs(30),
        || async {
            let (code, body) = http_get(addr, path);
            (code == 200).then_some(body)
        },
    )
    .await
}

/// Claim `name` (8Mi) of `class`, once it has failed with a ProvisioningFailed event naming
/// every needle.
async fn failed_claim(
    s: &Scenario,
    name: &str,
    class: &str,
    needles: &[&str],
) -> PersistentVolumeClaim {
    let c = s.claim(name, class).size("8Mi").create().await;
    let (uid, failed) = (uid_of(&c), "ProvisioningFailed");
    let t = Duration::from_secs(30);
    wait_event(&s.admin, &s.ns, &uid, failed, needles, t).await;
    c
}

/// Removes at once what the stage's guard would remove at its end: the claims' PVs and images
/// (pool `kube`), the classes, a Secret `(namespace, name)` of the test's, the namespace.
async fn tidy(
    s: &Scenario,
    claims: &[&PersistentVolumeClaim],
    classes: &[&str],
    secret: Option<(&str, &str)>,
) {
    cleanup(&s.bed, &s.admin, &s.ns, claims, &["kube"]).await;
    for class in classes {
        let _ = Api::<StorageClass>::all(s.admin.clone())
            .delete(class, &DeleteParams::default())
            .await;
    }
    if let Some((ns, name)) = secret {
        let _ = Api::<Secret>::namespaced(s.admin.clone(), ns)
            .delete(name, &DeleteParams::default())
            .await;
    }
    let _ = Api::<Namespace>::all(s.admin.clone())
        .delete(&s.ns, &DeleteParams::default())
        .await;
}

/// `--http-endpoint` (alias of `--metrics-addr`) given last wins over the harness's empty
/// one; `/metrics` lists the README's metrics after a provision, a deletion and a failure;
/// `/healthz`, `/livez` and `/readyz` answer; the Grafana dashboard queries only metrics it
/// exports. The worker count (`--worker-threads`) and
/// `CEPH_OP_TIMEOUT` are accepted in their documented forms.
#[tokio::test]
async fn metrics_and_probes_answer_after_a_provision() {
    let bed = Bed::load();
    let name = format!("{}.test/rbd", unique("metrics"));
    let addr = free_addr();
    let mut s = Scenario::new("metrics").await;
    // Replace the Scenario's provisioner by one serving the endpoint under another name.
    s.prov = Provisioner::start_with(
        &bed,
        &name,
        &[("CEPH_OP_TIMEOUT", "20")],
        &["--http-endpoint", &addr, "--worker-threads", "2"],
        None,
    )
    .await;
    s.name = name;
    wait_http_ok(&addr, "/healthz").await;
    wait_http_ok(&addr, "/livez").await;
    wait_http_ok(&addr, "/readyz").await;
    let class = s.class("m", &[], json!({})).await;
    let (c, _) = s.bound(&class, "data", "8Mi").await;
    // Labelled families appear with their first series: also a deletion and a failure.
    s.delete_claim("data").await;
    s.wait_pv_gone(&uid_of(&c)).await;
    let broken = s
        .class("b", &[("adminSecretName", "no-such-secret")], json!({}))
        .await;
    let bad = failed_claim(&s, "bad", &broken, &["no-such-secret"]).await;
    let text = wait_http_ok(&addr, "/metrics").await;
    let metrics = wait_for(
        "provision counted in /metrics",
        Duration::from_secs(20),
        || async {
            let (_, t) = http_get(&addr, "/metrics");
            let has = |prefix: &str, class: &str| {
                t.lines()
                    .any(|l| l.starts_with(prefix) && l.contains(class) && !l.ends_with(" 0"))
            };
            (has("controller_persistentvolumeclaim_provision_total", &class)
                && has("controller_persistentvolume_delete_total", &class)
                && has(
                    "controller_persistentvolumeclaim_provision_failed_total",
                    &broken,
                ))
            .then_some(t.clone())
        },
    )
    .await;
    for name in [
        "controller_persistentvolumeclaim_provision_total",
        "controller_persistentvolumeclaim_provision_failed_total",
        "controller_persistentvolumeclaim_provision_duration_seconds",
        "controller_persistentvolume_delete_total",
        "controller_persistentvolume_delete_duration_seconds",
        "rbd_provisioner_operations_total",
        "rbd_provisioner_operation_duration_seconds",
        "rbd_provisioner_leader",
        "rbd_provisioner_ceph_clients",
        "rbd_provisioner_operations_in_flight",
        "rbd_provisioner_purge_backlog",
        "rbd_provisioner_threads",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(
            metrics.contains(name),
            "/metrics lacks {name}:\n{metrics}\n(first scrape:\n{text})"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rbd_provisioner_operations_total")
                && l.contains("operation=\"provision\"")
                && l.contains("result=\"success\"")),
        "no successful provision operation counted:\n{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "rbd_provisioner_leader 1"),
        "the only replica does not report itself leader:\n{metrics}"
    );
    // The Grafana dashboard queries only what this exports, but for families this test gave
    // no sample (the unit test `the_dashboard_queries_only_exported_metrics` counts them all).
    assert_dashboard_exported(
        &metrics,
        &[
            "controller_volumesnapshot_",
            "controller_persistentvolume_delete_failed_",
        ],
    );
    tidy(&s, &[&c, &bad], &[&class, &broken], None).await;
}

/// Defaults and the environment forms: no `--provisioner-name` means `ceph.com/rbd`,
/// `METRICS_ADDR` opens the endpoint,
/// `WORKERS` is accepted, and the start line reports the flavour chosen from the server's
/// version (1.20: in-tree `spec.rbd`; 1.37: ceph-csi static PVs).
#[tokio::test]
async fn defaults_and_environment_forms_of_the_flags() {
    let bed = Bed::load();
    let version = format!("v1.{}", bed.kube_minor);
    let (default_flavor, other_flavor, other_line) = if bed.csi_by_default() {
        ("ceph-csi static", "rbd", "in-tree spec.rbd")
    } else {
        ("in-tree spec.rbd", "csi", "ceph-csi static")
    };
    let addr = free_addr();
    let p = Provisioner::start_bare(
        &bed,
        &[
            ("METRICS_ADDR", addr.as_str()),
            ("WORKERS", "3"),
            ("CEPH_OP_TIMEOUT", "15"),
        ],
        &[],
    )
    .await;
    wait_log(
        &p,
        &[
            "starting",
            "provisioner=ceph.com/rbd",
            &version,
            default_flavor,
        ],
        Duration::from_secs(30),
    )
    .await;
    wait_http_ok(&addr, "/healthz").await;
    drop(p);

    // The flavour override by environment changes the start line and the default flavour.
    let p = Provisioner::start_with(
        &bed,
        &format!("{}.test/rbd", unique("flavor")),
        &[("VOLUME_FLAVOR", other_flavor)],
        &[],
        None,
    )
    .await;
    wait_log(
        &p,
        &["starting", &version, other_line],
        Duration::from_secs(30),
    )
    .await;
}

/// `VOLUME_FLAVOR=csi` gives csi PVs to a class without `volumeFlavor`; without it the bed
/// (1.20) gets `spec.rbd`.
#[tokio::test]
async fn volume_flavor_env_sets_the_default_flavour() {
    let s = Scenario::with_env("vflav", &[("VOLUME_FLAVOR", "csi")]).await;
    let secret = format!("{}-csi", s.ns);
    csi_secret(&s.admin, "default", &secret, "kube", &s.bed.kube_key).await;
    let class = s
        .class(
            "c",
            &[
                ("clusterID", "bed-ceph"),
                ("csiNodeStageSecretName", &secret),
                ("csiNodeStageSecretNamespace", "default"),
            ],
            json!({}),
        )
        .await;
    let (c, _) = s.bound(&class, "data", "8Mi").await;
    let pv = s.pv_of(&c).await;
    let spec = pv.spec.unwrap();
    assert!(
        spec.rbd.is_none(),
        "spec.rbd written despite VOLUME_FLAVOR=csi"
    );
    assert_eq!(
        spec.csi.expect("csi PV").driver,
        "rbd.csi.ceph.com",
        "csi driver"
    );
    tidy(&s, &[&c], &[&class], Some(("default", &secret))).await;
}

/// A claim failing because its admin Secret is missing gets `ProvisioningFailed`, is retried
/// 1 s, 2 s, 4 s apart (not in a hot loop), and is provisioned once the Secret exists. (The
/// admin Secret, not the user Secret: a csi PV, the default on 1.37, does not need the latter
/// when the class names a node-stage Secret in ceph-csi's format.)
#[tokio::test]
async fn a_failed_claim_is_retried_with_backoff_and_succeeds_once_fixed() {
    let s = Scenario::new("retry").await;
    let missing = format!("{}-later", s.ns);
    let class = s
        .class("r", &[("adminSecretName", missing.as_str())], json!({}))
        .await;
    let c = failed_claim(&s, "data", &class, &[&missing]).await;
    let uid = uid_of(&c);
    let started = Instant::now();
    let needle = format!("{}/data", s.ns);
    let failures = || log_lines(&s.prov, &["provisioning failed", &needle]);
    wait_for("three failed attempts", Duration::from_secs(30), || async {
        (failures().len() >= 3).then_some(())
    })
    .await;
    let seen = failures();
    for (line, want) in seen
        .iter()
        .zip(["retry_in=1s", "retry_in=2s", "retry_in=4s"])
    {
        assert!(
            line.contains(want),
            "expected {want} in {line:?}; all: {seen:#?}"
        );
    }
    // Backoff, not a hot loop: the 4 s delay holds off a fourth attempt for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        failures().len() <= 4,
        "too many attempts in {:?}: {:#?}",
        started.elapsed(),
        failures()
    );
    key_secret(&s.admin, "kube-system", &missing, &s.bed.admin_key).await;
    wait_bound(&s.admin, &s.ns, "data", Duration::from_secs(60)).await;
    assert!(
        image_exists(
            &s.bed.ceph().await,
            "kube",
            &format!("kubernetes-dynamic-pvc-{uid}")
        )
        .await
    );
    tidy(&s, &[&c], &[&class], Some(("kube-system", &missing))).await;
}

/// Without `userSecretNamespace` the user Secret is looked up in the claim's namespace. The
/// shipped RBAC does not grant it there, so the event names the RoleBinding to create; once it
/// exists the claim is provisioned and the PV's secretRef names the claim's namespace.
#[tokio::test]
async fn user_secret_namespace_defaults_to_the_claims() {
    let s = Scenario::new("usns").await;
    let user = format!("{}-user", s.ns);
    key_secret(&s.admin, &s.ns, &user, &s.bed.kube_key).await;
    // About spec.rbd's secretRef: the rbd flavour on both planes (1.37 accepts spec.rbd PVs).
    let class = s
        .class(
            "u",
            &[("userSecretNamespace", ""), ("volumeFlavor", "rbd")],
            json!({}),
        )
        .await;
    let c = failed_claim(&s, "data", &class, &["create rolebinding", &s.ns]).await;
    apply_yaml(
        &s.admin,
        &serde_json::to_string(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "rbd-provisioner-secrets", "namespace": s.ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "rbd-provisioner-secrets"},
            "subjects": [{"kind": "ServiceAccount", "name": "rbd-provisioner", "namespace": "kube-system"}],
        }))
        .unwrap(),
        &[],
    )
    .await;
    wait_bound(&s.admin, &s.ns, "data", Duration::from_secs(60)).await;
    let pv = s.pv_of(&c).await;
    let secret_ref = pv.spec.unwrap().rbd.expect("spec.rbd").secret_ref.unwrap();
    assert_eq!(secret_ref.name.as_deref(), Some(user.as_str()));
    assert_eq!(secret_ref.namespace.as_deref(), Some(s.ns.as_str()));
    tidy(&s, &[&c], &[&class], None).await;
}

/// The class's `mountOptions` and `reclaimPolicy: Retain` reach the PV; a released Retain
/// volume keeps its PV and its image (the `rbd` CLI as oracle).
#[tokio::test]
async fn mount_options_and_retain_come_from_the_class() {
    let s = Scenario::new("retain").await;
    let class = s
        .class(
            "k",
            &[],
            json!({"reclaimPolicy": "Retain", "mountOptions": ["discard", "noatime"]}),
        )
        .await;
    let (c, uid) = s.bound(&class, "data", "8Mi").await;
    let pv = s.pv_of(&c).await;
    let spec = pv.spec.clone().unwrap();
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
    assert_eq!(
        spec.mount_options,
        Some(vec!["discard".to_string(), "noatime".to_string()])
    );
    s.delete_claim("data").await;
    let pvs = s.pvs();
    let pv_name = format!("pvc-{uid}");
    s.wait_pv_phase(&pv_name, "Released", Duration::from_secs(60))
        .await;
    // The provisioner has seen the Released PV and left it alone.
    let left_alone = [
        pv_name.as_str(),
        "phase=\"Released\"",
        "volume left alone: reclaim policy is not Delete",
    ];
    wait_log(&s.prov, &left_alone, Duration::from_secs(60)).await;
    assert!(
        pvs.get_opt(&pv_name).await.unwrap().is_some(),
        "Retain PV deleted"
    );
    let image = format!("kube/kubernetes-dynamic-pvc-{uid}");
    assert!(
        rbd_json(&s.bed, &["info", &image]).is_some(),
        "Retain volume's image {image} is gone"
    );
    tidy(&s, &[&c], &[&class], None).await;
}

/// `--leader-elect=false` acts without a Lease; with election, `POD_NAMESPACE` is where the
/// Lease lives (the admin kubeconfig here: the shipped RBAC grants Leases in kube-system only).
#[tokio::test]
async fn leader_elect_false_and_pod_namespace() {
    let bed = Bed::load();
    let admin = bed.admin().await;
    let name = format!("{}.test/rbd", unique("nolead"));
    let mut s = Scenario::new("nolead").await;
    s.prov = Provisioner::start_with(
        &bed,
        &name,
        &[],
        &["--leader-elect=false", "--workers", "4"],
        None,
    )
    .await;
    s.name = name.clone();
    let class = s.class("n", &[], json!({})).await;
    let (c, _) = s.bound(&class, "data", "8Mi").await;
    let lease = domain::lease::lease_name(&name);
    assert!(
        Api::<Lease>::namespaced(admin.clone(), "kube-system")
            .get_opt(&lease)
            .await
            .unwrap()
            .is_none(),
        "--leader-elect=false still created Lease {lease}"
    );

    let other = format!("{}.test/rbd", unique("podns"));
    let _p = Provisioner::start_with(
        &bed,
        &other,
        &[("POD_NAMESPACE", s.ns.as_str())],
        &[],
        Some(&bed.kubeconfig),
    )
    .await;
    let lease = domain::lease::lease_name(&other);
    let leases = Api::<Lease>::namespaced(admin.clone(), &s.ns);
    wait_for(
        &format!("Lease {lease} in {}", s.ns),
        Duration::from_secs(30),
        || async { leases.get_opt(&lease).await.ok().flatten() },
    )
    .await;
    tidy(&s, &[&c], &[&class], None).await;
}

/// The first deletion in a pool after a restart purges trash entries an earlier process of
/// this provisioner left (trashed, stamped, not yet purged), with periodic housekeeping off.
#[tokio::test]
async fn first_deletion_after_a_restart_purges_what_an_earlier_process_left() {
    let mut s = Scenario::with_env("restart", &[("MAINTENANCE_INTERVAL", "0")]).await;
    let name = s.name.clone();
    let class = s.class("p", &[], json!({})).await;
    let (old, old_uid) = s.bound(&class, "old", "8Mi").await;
    let old_image = format!("kubernetes-dynamic-pvc-{old_uid}");
    // What a process killed between "moved to the trash" and "purged" leaves: the image
    // stamped as trashed by us, in the trash, its PV gone.
    s.prov.crash();
    trash_as_ours(&s.bed, &format!("kube/{old_image}"));
    cleanup(&s.bed, &s.admin, &s.ns, &[&old], &[]).await;
    // One trash_list call that fails loudly: `--long` opens each entry, and skips or fails on
    // those other tests purge meanwhile, which read as "not in the trash".
    let in_trash = |bed: &Bed| rbd_trash_ls(bed, "kube").contains(&old_image);
    assert!(in_trash(&s.bed), "setup: {old_image} not in the trash");

    s.prov = Provisioner::start(&s.bed, &name, &[("MAINTENANCE_INTERVAL", "0")]).await;
    let (new, new_uid) = s.bound(&class, "new", "8Mi").await;
    wait_for("housekeeping off", Duration::from_secs(60), || async {
        s.prov.logs().contains("housekeeping is off").then_some(())
    })
    .await;
    assert!(
        in_trash(&s.bed),
        "purged before any deletion (housekeeping is off)"
    );
    s.delete_claim("new").await;
    s.wait_pv_gone(&new_uid).await;
    let bed = s.bed.clone();
    wait_for(
        "the earlier process's trash entry purged",
        Duration::from_secs(60),
        || async { (!in_trash(&bed)).then_some(()) },
    )
    .await;
    tidy(&s, &[&new], &[&class], None).await;
}

/// The shipped kustomization (ServiceAccount, RBAC, Deployment) is accepted by the API server.
#[tokio::test]
async fn manifests_pass_a_server_side_dry_run() {
    let bed = Bed::load();
    let rendered = bed.kustomize(&repo_root().join("manifests"));
    let dry_run = |extra: &[&str]| {
        use std::io::Write as _;
        let mut child = Command::new(&bed.kubectl)
            .arg("--kubeconfig")
            .arg(&bed.kubeconfig)
            .args(["apply", "--dry-run=server", "-f", "-"])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rendered.as_bytes())
            .unwrap();
        child.wait_with_output().expect("kubectl apply")
    };
    let out = dry_run(&[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubectl apply --dry-run=server (manifests/ rendered):\n{text}"
    );
    assert!(
        text.contains("deployment.apps/rbd-provisioner"),
        "no Deployment in the kustomization:\n{text}"
    );
    // What the README says of the Deployment, as the API server defaults and stores it.
    let out = dry_run(&["-o", "json"]);
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("kubectl -o json");
    let items = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![list.clone()]);
    let dep = items
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    assert_eq!(dep["metadata"]["namespace"], "kube-system");
    assert_eq!(dep["spec"]["replicas"], 2, "two replicas");
    let pod = &dep["spec"]["template"]["spec"];
    let ctr = &pod["containers"][0];
    let sc = &ctr["securityContext"];
    let non_root = sc["runAsNonRoot"] == true || pod["securityContext"]["runAsNonRoot"] == true;
    assert!(non_root, "not non-root: {ctr}");
    assert_eq!(
        sc["readOnlyRootFilesystem"], true,
        "root filesystem writable"
    );
    let ports = ctr["ports"].to_string();
    assert!(ports.contains("8080"), "no port 8080: {ports}");
    let liveness = ctr["livenessProbe"]["httpGet"]["path"].as_str();
    assert_eq!(liveness, Some("/healthz"), "liveness probe");
}

/// A csi node-stage Secret without `userKey` fails the claim with an event naming the missing
/// key; once the key is added the claim is provisioned on the next retry.
#[tokio::test]
async fn a_csi_node_stage_secret_without_user_key_is_refused_until_fixed() {
    let s = Scenario::new("nokey").await;
    let secret_name = format!("{}-csi", s.ns);
    let no_key = json!({"userID": "kube"});
    secret(&s.admin, "default", &secret_name, None, no_key).await;
    let class = s.csi_class("c", &secret_name, json!({})).await;
    let c = s.claim("data", &class).size("8Mi").create().await;
    // No image is made for a claim whose node-stage Secret lacks userKey.
    let needles = ["has no userKey", secret_name.as_str()];
    s.wait_refused(&c, &needles, Duration::from_secs(30)).await;
    csi_secret(&s.admin, "default", &secret_name, "kube", &s.bed.kube_key).await;
    wait_bound(&s.admin, &s.ns, "data", Duration::from_secs(60)).await;
    assert!(s.pv_of(&c).await.spec.unwrap().csi.is_some());
    tidy(&s, &[&c], &[&class], Some(("default", &secret_name))).await;
}
