//! A release's whole life on the bed's API server: install, upgrade, rollback, the provisioner
//! run under the release's ServiceAccount provisioning a claim with the release's class, and
//! uninstall, which leaves only the PV and the image.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::Api;
use serde_json::{Value, json};

use super::*;

const T: Duration = Duration::from_secs(60);

/// Uninstalls the release when dropped (a failing test too), before the stage's cleanup
/// deletes the namespace: the release's cluster-scoped objects would outlive it.
struct Release<'a> {
    bed: &'a Bed,
    name: String,
    ns: String,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = helm(
            self.bed,
            &[
                "uninstall",
                &self.name,
                "-n",
                &self.ns,
                "--ignore-not-found",
            ],
        );
    }
}

/// The kinds a release of the chart may leave objects of, as kubectl names them.
const KINDS: &str = "serviceaccounts,deployments,services,roles,rolebindings,clusterroles,\
                     clusterrolebindings,poddisruptionbudgets,storageclasses,configmaps,secrets";

/// Objects of `kinds` across all namespaces labelled as the release's, as `kind/name` lines.
fn labelled(bed: &Bed, kinds: &str, release: &str) -> Vec<String> {
    let out = Command::new(&bed.kubectl)
        .arg("--kubeconfig")
        .arg(&bed.kubeconfig)
        .args(["get", kinds, "-A", "-o", "name"])
        .arg(format!("-l=app.kubernetes.io/instance={release}"))
        .output()
        .expect("run kubectl");
    assert_success("kubectl get -l", &out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether the RoleBinding granting Secret reads exists in `ns`.
fn secrets_bound(bed: &Bed, ns: &str, full: &str) -> bool {
    get(bed, "rolebinding", Some(ns), &format!("{full}-secrets")).is_some()
}

/// Runs `f`, saying how long it took (the test's output, with --nocapture).
fn timed(what: &str, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    eprintln!("{what}: {:?}", t.elapsed());
}

fn revision(bed: &Bed, release: &str, ns: &str) -> u64 {
    let s: Value =
        serde_json::from_str(&helm_ok(bed, &["status", release, "-n", ns, "-o", "json"]))
            .expect("helm status json");
    s["version"].as_u64().expect("a revision")
}

#[tokio::test]
async fn helm_install_upgrade_rollback_provision_uninstall() {
    let t0 = Instant::now();
    let bed = Bed::load();
    let name = format!("{}.test/rbd", unique("helm"));
    let stage = Stage::new("helm", &name).await;
    let admin = stage.admin.clone();
    let ns = stage.ns.clone();
    let extra_ns = format!("{ns}-extra");
    namespace(&admin, &extra_ns).await;
    let _clean_extra = Cleanup::new(&bed).namespace(&extra_ns);
    // The release, in a namespace of its own: its names never meet manifests/rbac's.
    let release = ns.clone();
    let full = format!("{release}-rbd-provisioner");
    let class = format!("{ns}-class");
    let _release = Release {
        bed: &bed,
        name: release.clone(),
        ns: ns.clone(),
    };
    // The class's Secrets live in the release's namespace, the only one it may read.
    key_secret(&admin, &ns, "ceph-admin", &bed.admin_key).await;
    key_secret(&admin, &ns, "ceph-user", &bed.kube_key).await;
    csi_secret(&admin, &ns, "ceph-user-csi", "kube", &bed.kube_key).await;
    let mut over = vec![
        ("adminSecretName", "ceph-admin"),
        ("adminSecretNamespace", ns.as_str()),
        ("userSecretName", "ceph-user"),
        ("userSecretNamespace", ns.as_str()),
    ];
    if bed.csi_by_default() {
        over.push(("csiNodeStageSecretName", "ceph-user-csi"));
        over.push(("csiNodeStageSecretNamespace", ns.as_str()));
    }
    let params: serde_json::Map<String, Value> = stage
        .params(&over)
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    let values = json!({
        "provisionerName": name,
        "secretNamespaces": [ns],
        "leaderElection": {"leaseDuration": "20s"},
        "podDisruptionBudget": {"enabled": true},
        "storageClasses": [{"name": class, "reclaimPolicy": "Delete", "parameters": params}],
    });
    let v1 = values_file(&bed, &values);

    // Install.
    timed("helm install", || {
        helm_chart(&bed, "install", &release, &ns, Some(&v1));
    });
    assert_eq!(revision(&bed, &release, &ns), 1);
    let sa = get(&bed, "serviceaccount", Some(&ns), &full).expect("the ServiceAccount");
    assert_eq!(
        sa["metadata"]["labels"]["app.kubernetes.io/instance"],
        release.as_str()
    );
    let cr = get(&bed, "clusterrole", None, &full).expect("the ClusterRole");
    assert_eq!(
        cr["rules"],
        manifest_rules("manifests/rbac/clusterrole.yaml", "rbd-provisioner")
    );
    let crb = get(&bed, "clusterrolebinding", None, &full).expect("the ClusterRoleBinding");
    assert_eq!(
        crb["subjects"],
        json!([{"kind": "ServiceAccount", "name": full, "namespace": ns}])
    );
    let role = get(&bed, "role", Some(&ns), &format!("{full}-leader-election")).expect("Role");
    assert_eq!(
        role["rules"][1]["resourceNames"],
        json!([domain::lease::lease_name(&name)])
    );
    assert!(secrets_bound(&bed, &ns, &full));
    for other in ["kube-system", "default", extra_ns.as_str()] {
        assert!(
            !secrets_bound(&bed, other, &full),
            "Secrets bound in {other}"
        );
    }
    let dep = get(&bed, "deployment", Some(&ns), &full).expect("the Deployment");
    assert_eq!(args_of(&dep), ["--leader-election-lease-duration=20s"]);
    assert!(get(&bed, "service", Some(&ns), &format!("{full}-metrics")).is_some());
    // policy/v1 on 1.21+, v1beta1 on 1.20: the chart asks the server which it has.
    let pdb = get(&bed, "poddisruptionbudget", Some(&ns), &full).expect("the PDB");
    let want = if bed.kube_minor >= 21 {
        "policy/v1"
    } else {
        "policy/v1beta1"
    };
    assert_eq!(pdb["apiVersion"], want);
    let sc = get(&bed, "storageclass", None, &class).expect("the StorageClass");
    assert_eq!(sc["provisioner"], name.as_str());
    assert_eq!(sc["parameters"]["adminSecretNamespace"], ns.as_str());

    // Upgrade: a second Secret namespace and an extra argument.
    let mut v = values.clone();
    v["secretNamespaces"] = json!([ns, extra_ns]);
    v["extraArgs"] = json!(["--workers=4"]);
    let v2 = values_file(&bed, &v);
    timed("helm upgrade", || {
        helm_chart(&bed, "upgrade", &release, &ns, Some(&v2));
    });
    assert_eq!(revision(&bed, &release, &ns), 2);
    assert!(
        secrets_bound(&bed, &extra_ns, &full),
        "no binding in {extra_ns}"
    );
    assert!(secrets_bound(&bed, &ns, &full));
    let dep = get(&bed, "deployment", Some(&ns), &full).unwrap();
    assert_eq!(
        args_of(&dep),
        ["--leader-election-lease-duration=20s", "--workers=4"]
    );

    // Rollback to the first revision: the binding and the argument are gone again.
    timed("helm rollback", || {
        helm_ok(&bed, &["rollback", &release, "1", "-n", &ns]);
    });
    assert_eq!(revision(&bed, &release, &ns), 3);
    assert!(
        !secrets_bound(&bed, &extra_ns, &full),
        "binding left in {extra_ns}"
    );
    assert!(secrets_bound(&bed, &ns, &full));
    let dep = get(&bed, "deployment", Some(&ns), &full).unwrap();
    assert_eq!(args_of(&dep), ["--leader-election-lease-duration=20s"]);

    // The provisioner as the release's pod would run it: its ServiceAccount's token, its
    // arguments and environment (the pod's namespace for the Lease), out of the cluster (no
    // kubelet here), with the release's class.
    let kubeconfig = token_kubeconfig(&bed, &ns, &full).await;
    let mut env: Vec<(String, String)> = vec![
        ("POD_NAMESPACE".into(), ns.clone()),
        ("POD_NAME".into(), format!("{full}-0")),
    ];
    for e in container(&dep)["env"].as_array().unwrap() {
        // RUST_LOG stays the harness's (debug): the checks below read its lines.
        if let Some(val) = e["value"].as_str().filter(|_| e["name"] != "RUST_LOG") {
            let val = val.replace("$(POD_NAMESPACE)", &ns);
            env.push((e["name"].as_str().unwrap().into(), val));
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = args_of(&dep);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let prov = Provisioner::start_with(&bed, &name, &env, &args, Some(&kubeconfig)).await;
    let c = claim(
        &admin,
        &ns,
        "data",
        &class,
        "100Mi",
        &["ReadWriteOnce"],
        json!({}),
    )
    .await;
    let uid = uid_of(&c);
    wait_bound(&admin, &ns, "data", T).await;
    assert_led_and_acted(
        &prov,
        &["Successfully provisioned", &format!("pvc-{uid}")],
        T,
    )
    .await;
    let lease = domain::lease::lease_name(&name);
    assert!(
        get(&bed, "lease", Some(&ns), &lease).is_some(),
        "the provisioner led through Lease {ns}/{lease}"
    );
    let pvs = Api::<PersistentVolume>::all(admin.clone());
    let pv_name = format!("pvc-{uid}");
    let src = volume_source(&pvs.get(&pv_name).await.unwrap());
    assert_eq!(src.csi, bed.csi_by_default());
    assert!(rbd_exists(&bed, &src.pool, &src.image));
    drop(prov);

    // Uninstall: nothing of the release is left but the PV and the image.
    timed("helm uninstall", || {
        helm_ok(&bed, &["uninstall", &release, "-n", &ns]);
    });
    let left = labelled(&bed, KINDS, &release);
    assert!(left.is_empty(), "left after uninstall: {left:?}");
    for (kind, ns, name) in [
        ("clusterrole", None, full.clone()),
        ("clusterrole", None, format!("{full}-secrets")),
        ("clusterrolebinding", None, full.clone()),
        ("storageclass", None, class.clone()),
        ("serviceaccount", Some(ns.as_str()), full.clone()),
        ("deployment", Some(ns.as_str()), full.clone()),
        ("rolebinding", Some(ns.as_str()), format!("{full}-secrets")),
    ] {
        assert!(get(&bed, kind, ns, &name).is_none(), "{kind} {name} left");
    }
    assert_eq!(helm_ok(&bed, &["list", "-n", &ns, "-q"]).trim(), "");
    // The Deployment's ReplicaSets and pods go with it (garbage collection).
    wait_for("the release's pods and ReplicaSets gone", T, || async {
        labelled(&bed, "replicasets,pods", &release)
            .is_empty()
            .then_some(())
    })
    .await;
    let pv = pvs
        .get(&pv_name)
        .await
        .expect("the PV outlives the release");
    let meta = &pv.metadata;
    assert!(
        meta.finalizers
            .iter()
            .flatten()
            .any(|f| f == domain::volume::FINALIZER),
        "{meta:?}"
    );
    assert_eq!(
        meta.annotations.as_ref().unwrap()[domain::volume::ANN_PROVISIONED_BY],
        name
    );
    assert!(meta.deletion_timestamp.is_none());
    assert!(
        rbd_exists(&bed, &src.pool, &src.image),
        "the image outlives the release"
    );
    eprintln!(
        "lifecycle on Kubernetes 1.{}: {:?}",
        bed.kube_minor,
        t0.elapsed()
    );
}
