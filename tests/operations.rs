//! Operations: `doctor`, Secrets in Rook's / ceph-csi's format, the csi driver name, the
//! trimmed RBAC and the namespace overlay, on the local bed.

use testbed as common;

use std::process::Command;

use common::*;
use serde_json::json;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rbd-provisioner")
}

fn kubectl(bed: &Bed) -> Command {
    let mut c = Command::new(&bed.kubectl);
    c.env("KUBECONFIG", &bed.kubeconfig);
    c
}

/// Runs `doctor --storage-class` as an operator would; exit success and the table.
fn doctor(s: &Scenario, class: &str) -> (bool, String) {
    testbed::doctor(&s.bed, bin().as_ref(), &s.name, class, &[])
}

#[tokio::test]
async fn doctor_passes_a_good_class_and_names_fixes_for_bad_ones() {
    let s = Scenario::new("doc").await;
    let good = s.class("good", &[], json!({})).await;
    let (ok, text) = doctor(&s, &good);
    assert!(ok, "doctor failed on a good class:\n{text}");
    for line in [
        "OK     parameters",
        "OK     admin key",
        "OK     probe image",
        "initialised for RBD",
        "OK     user key",
        "OK     admin secret RBAC",
        "no Nodes registered: cannot check",
    ] {
        assert!(text.contains(line), "missing {line:?}:\n{text}");
    }
    // This run's probe image (named in the table; other runs may probe the same pool at the
    // same time) was removed.
    let probe = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("kube/rbd-provisioner-doctor-probe-"))
        .map(|rest| format!("rbd-provisioner-doctor-probe-{rest}"))
        .unwrap_or_else(|| panic!("no probe image named:\n{text}"));
    assert!(
        !rbd_ls(&s.bed, "kube").contains(&probe),
        "probe image {probe} left behind"
    );

    // A wrong key: the kube user's key in the admin Secret.
    key_secret(
        &s.admin,
        "kube-system",
        &format!("{}-badkey", s.ns),
        &s.bed.kube_key,
    )
    .await;
    let bad = s
        .class(
            "badkey",
            &[("adminSecretName", &format!("{}-badkey", s.ns))],
            json!({}),
        )
        .await;
    let (ok, text) = doctor(&s, &bad);
    assert!(!ok, "doctor passed a class with a wrong admin key:\n{text}");
    assert!(text.contains("FAIL   admin key"), "{text}");
    assert!(
        text.contains("fix: compare the Secret with ceph auth get-key client.admin"),
        "{text}"
    );

    // A missing user Secret.
    let missing = s
        .class(
            "nosecret",
            &[("userSecretName", "no-such-secret")],
            json!({}),
        )
        .await;
    let (ok, text) = doctor(&s, &missing);
    assert!(!ok, "{text}");
    assert!(text.contains("FAIL   user secret"), "{text}");
    assert!(
        text.contains("kubectl -n default create secret generic no-such-secret"),
        "{text}"
    );

    // A missing pool.
    let nopool = s
        .class("nopool", &[("pool", "no-such-pool")], json!({}))
        .await;
    let (ok, text) = doctor(&s, &nopool);
    assert!(!ok, "{text}");
    assert!(text.contains("FAIL   pool"), "{text}");
    assert!(
        text.contains("fix: ceph osd pool create no-such-pool && rbd pool init no-such-pool"),
        "{text}"
    );
}

/// Removes a pool the test made, also when the test fails.
struct PoolRemover(Bed, String);

impl Drop for PoolRemover {
    fn drop(&mut self) {
        remove_pool(&self.0, &self.1);
    }
}

/// A pool that exists but was never `rbd pool init`-ed fails the pool check, with the fix.
#[tokio::test]
async fn doctor_fails_a_pool_not_initialised_for_rbd() {
    let s = Scenario::new("docpool").await;
    let pool = unique("untagged");
    cli(&s.bed, "ceph", &["osd", "pool", "create", &pool, "8"]);
    let _rm = PoolRemover(s.bed.clone(), pool.clone());
    let class = s.class("untagged", &[("pool", &pool)], json!({})).await;
    let (ok, text) = doctor(&s, &class);
    assert!(!ok, "doctor passed a pool not initialised for RBD:\n{text}");
    assert!(text.contains("FAIL   pool"), "{text}");
    assert!(
        text.contains(&format!("fix: rbd pool init {pool}")),
        "{text}"
    );
}

#[tokio::test]
async fn doctor_checks_a_class_file_before_it_is_applied() {
    let s = Scenario::new("docf").await;
    let params: serde_json::Map<String, serde_json::Value> = s
        .params(&[])
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    let mut yaml = format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: {}-file\nprovisioner: {}\nparameters:\n",
        s.ns, s.name
    );
    for (k, v) in &params {
        yaml.push_str(&format!("  {k}: {v}\n"));
    }
    yaml.push_str("  imageFeatures: layering,exclusive-lock\n");
    let path = s.bed.dir.join(format!("{}-class.yaml", s.ns));
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(bin())
        .arg("--kubeconfig")
        .arg(&s.bed.kubeconfig)
        .args(["--provisioner-name", &s.name, "doctor", "--file"])
        .arg(&path)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("FAIL   parameters") && text.contains("exclusive-lock"),
        "{text}"
    );
}

#[tokio::test]
async fn secrets_in_ceph_csi_format_provision() {
    let s = Scenario::new("csifmt").await;
    let admin = format!("{}-csi-admin", s.ns);
    csi_secret(&s.admin, "kube-system", &admin, "admin", &s.bed.admin_key).await;
    let class = s
        .class("csifmt", &[("adminSecretName", &admin)], json!({}))
        .await;
    let (c, _) = s.bound(&class, "c1", "1Gi").await;
    let pv = s.pv_of(&c).await;
    assert_eq!(volume_source(&pv).csi, s.bed.csi_by_default());
    let (ok, text) = doctor(&s, &class);
    assert!(ok, "{text}");

    // A userID naming another user is refused, not used for the wrong user.
    let other = format!("{}-csi-other", s.ns);
    csi_secret(&s.admin, "kube-system", &other, "kube", &s.bed.admin_key).await;
    let class = s
        .class("csiother", &[("adminSecretName", &other)], json!({}))
        .await;
    let (ok, text) = doctor(&s, &class);
    assert!(!ok, "{text}");
    assert!(text.contains("userID names another Ceph user"), "{text}");
}

#[tokio::test]
async fn csi_driver_name_comes_from_the_class() {
    let s = Scenario::new("drv").await;
    let node = format!("{}-node", s.ns);
    csi_secret(&s.admin, "default", &node, "kube", &s.bed.kube_key).await;
    let class = s
        .class(
            "rook",
            &[
                ("volumeFlavor", "csi"),
                ("clusterID", "bed"),
                ("csiNodeStageSecretName", &node),
                ("csiNodeStageSecretNamespace", "default"),
                ("csiDriver", "rook-ceph.rbd.csi.ceph.com"),
            ],
            json!({}),
        )
        .await;
    let (c, _) = s.bound(&class, "c1", "1Gi").await;
    let csi = s.pv_of(&c).await.spec.unwrap().csi.unwrap();
    assert_eq!(csi.driver, "rook-ceph.rbd.csi.ceph.com");
}

#[tokio::test]
async fn service_account_cannot_do_what_it_does_not_need() {
    let bed = Bed::load();
    service_account_kubeconfig(&bed).await;
    let can = |args: &[&str]| {
        let out = kubectl(&bed)
            .args([
                "auth",
                "can-i",
                "--as=system:serviceaccount:kube-system:rbd-provisioner",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    // What it needs.
    assert!(can(&["get", "secrets", "-n", "kube-system"]));
    assert!(can(&["create", "persistentvolumes"]));
    assert!(can(&[
        "patch",
        "persistentvolumeclaims",
        "--subresource=status",
        "-n",
        "default"
    ]));
    // What it does not.
    assert!(!can(&["list", "secrets", "-n", "kube-system"]));
    assert!(!can(&["list", "secrets", "-n", "default"]));
    assert!(!can(&["get", "secrets", "-n", "kube-public"]));
    assert!(!can(&["patch", "persistentvolumeclaims", "-n", "default"]));
    assert!(!can(&["update", "persistentvolumeclaims", "-n", "default"]));
    assert!(!can(&[
        "update",
        "persistentvolumeclaims",
        "--subresource=status",
        "-n",
        "default"
    ]));
    assert!(!can(&["update", "persistentvolumes"]));
}

#[tokio::test]
async fn namespace_overlay_renders_and_applies() {
    let bed = Bed::load();
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/overlays/example-namespace"
    );
    let text = bed.kustomize(std::path::Path::new(dir));
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let find = |kind: &str, ns: &str| {
        docs.iter()
            .filter(|d| d["kind"] == kind && d["metadata"]["namespace"] == ns)
            .count()
    };
    assert_eq!(find("Deployment", "storage"), 1);
    assert_eq!(
        find("Role", "storage"),
        2,
        "the Lease's and ceph-csi-config's Roles follow the namespace"
    );
    assert_eq!(find("RoleBinding", "ceph"), 1);
    assert_eq!(find("RoleBinding", "apps"), 1);
    assert_eq!(
        find("RoleBinding", "kube-system"),
        0,
        "base Secret bindings dropped"
    );
    assert_eq!(
        find("RoleBinding", "default"),
        0,
        "base Secret bindings dropped"
    );
    for d in docs
        .iter()
        .filter(|d| d["kind"].as_str().unwrap().ends_with("Binding"))
    {
        assert_eq!(d["subjects"][0]["namespace"], "storage", "{d}");
    }
    let lease = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "rbd-provisioner-leader-election")
        .unwrap();
    assert_eq!(
        lease["rules"][1]["resourceNames"][0], "rbd-provisioner-ceph-com-rbd",
        "{lease}"
    );

    // Server dry-run: the namespaces must exist, and Kubernetes 1.20 knows the
    // PodDisruptionBudget only as policy/v1beta1.
    let admin = bed.admin().await;
    for ns in ["storage", "ceph", "apps"] {
        namespace(&admin, ns).await;
    }
    let v = admin.apiserver_version().await.unwrap();
    let old = v.minor.trim_end_matches('+').parse::<u32>().unwrap_or(99) < 21;
    let text = if old {
        text.replace("apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n")
    } else {
        text
    };
    let mut child = kubectl(&bed)
        .args(["apply", "--dry-run=server", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("deployment.apps/rbd-provisioner"), "{all}");
}

/// `--kube-api-qps`/`--kube-api-burst` limit the provisioner's own API calls: with one call a
/// second, three claims (each needs several calls: Secrets, the PV, its event) take seconds,
/// where without a limit they take a fraction of one; they are still all provisioned.
#[tokio::test]
async fn kube_api_qps_limits_the_provisioners_calls() {
    let mut s = Scenario::with_env("qps", &[]).await;
    let name = s.name.clone();
    s.prov = Provisioner::start_with(
        &s.bed,
        &name,
        &[],
        &["--kube-api-qps", "1", "--kube-api-burst", "1"],
        None,
    )
    .await;
    wait_for(
        "the limit logged",
        std::time::Duration::from_secs(30),
        || async {
            s.prov
                .logs()
                .contains("Kubernetes API calls limited")
                .then_some(())
        },
    )
    .await;
    let class = s.class("fast", &[], json!({})).await;
    let started = std::time::Instant::now();
    for n in ["a", "b", "c"] {
        s.claim(n, &class).size("8Mi").create().await;
    }
    for n in ["a", "b", "c"] {
        wait_bound(&s.admin, &s.ns, n, std::time::Duration::from_secs(120)).await;
    }
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(3),
        "three claims provisioned in {took:?} at one API call a second"
    );
    eprintln!("three claims at --kube-api-qps 1: all Bound after {took:?}");
}
