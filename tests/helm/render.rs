//! What the chart renders, and what it refuses, without installing it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

/// `helm lint --strict`, with the defaults and with every optional part on.
#[test]
fn helm_lint_strict() {
    let bed = Bed::load();
    let chart = chart();
    let chart = chart.to_str().unwrap();
    helm_ok(&bed, &["lint", "--strict", chart]);
    let all_on = values_file(&bed, &all_options("ceph"));
    helm_ok(
        &bed,
        &["lint", "--strict", chart, "-f", all_on.to_str().unwrap()],
    );
}

/// An object of a rendering, its labels and annotations aside (at every level: the pod
/// template's too), keyed by kind, namespace and name.
fn by_identity(docs: Vec<Value>) -> BTreeMap<(String, String, String), Value> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                    meta.remove("labels");
                    meta.remove("annotations");
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    docs.into_iter()
        .map(|mut d| {
            strip(&mut d);
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let key = (
                s(&d["kind"]),
                s(&d["metadata"]["namespace"]),
                s(&d["metadata"]["name"]),
            );
            (key, d)
        })
        .collect()
}

/// With the defaults and release name rbd-provisioner in kube-system, the chart renders the
/// objects of manifests/ (kustomize-rendered): the same kinds, names and namespaces, specs,
/// rules, subjects and role references; labels and annotations aside.
#[test]
fn helm_template_defaults_equal_manifests() {
    let bed = Bed::load();
    let rendered = helm_chart(&bed, "template", "rbd-provisioner", "kube-system", None);
    let chart_objs = by_identity(yaml_docs(&rendered));
    let manifests = by_identity(yaml_docs(&bed.kustomize(&repo_root().join("manifests"))));
    let keys = |m: &BTreeMap<_, _>| m.keys().cloned().collect::<Vec<(String, String, String)>>();
    assert_eq!(keys(&chart_objs), keys(&manifests), "the objects differ");
    for (k, want) in &manifests {
        let got = &chart_objs[k];
        assert!(
            got == want,
            "{k:?} differs from manifests/:\nchart: {}\nmanifests: {}",
            serde_json::to_string_pretty(got).unwrap(),
            serde_json::to_string_pretty(want).unwrap()
        );
    }
    // The names manifests/ and README give.
    for name in [
        "rbd-provisioner",
        "rbd-provisioner-secrets",
        "rbd-provisioner-leader-election",
        "rbd-provisioner-metrics",
    ] {
        assert!(
            chart_objs.keys().any(|(_, _, n)| n == name),
            "no object named {name}"
        );
    }
}

/// Values that turn every optional part on; `secret_ns` holds the class's Secrets.
fn all_options(secret_ns: &str) -> Value {
    json!({
        "provisionerName": "Example.io/RBD",
        "csiDriverName": "rook-ceph.rbd.csi.ceph.com",
        "leaderElection": {"leaseDuration": "20s", "renewDeadline": "12s", "retryPeriod": "3s"},
        "secretNamespaces": [secret_ns, "apps"],
        "extraArgs": ["--workers=4"],
        "extraEnv": [{"name": "LOG_FORMAT", "value": "json"}],
        "podDisruptionBudget": {"enabled": true},
        "metrics": {"port": 9090, "serviceMonitor": {"enabled": true, "interval": "30s",
                    "labels": {"release": "prom"}}},
        "dashboard": {"enabled": true},
        "storageClasses": [
            {"name": "fast", "reclaimPolicy": "Retain", "allowVolumeExpansion": true,
             "volumeBindingMode": "WaitForFirstConsumer", "mountOptions": ["discard"],
             "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
             "parameters": {"monitors": "10.0.0.1:6789", "adminSecretName": "a",
                            "adminSecretNamespace": secret_ns, "userSecretName": "u",
                            "userSecretNamespace": "apps", "imageFormat": 2}},
            {"name": "old", "parameters": {"monitors": "10.0.0.1:6789", "adminSecretName": "a",
             "adminSecretNamespace": secret_ns, "userSecretName": "u", "volumeFlavor": "rbd"}},
        ],
    })
}

/// Every optional part, rendered as the values say.
#[test]
fn helm_template_options() {
    let bed = Bed::load();
    let values = values_file(&bed, &all_options("ceph"));
    let rendered = helm_chart(&bed, "template", "rel", "storage", Some(&values));
    let docs = yaml_docs(&rendered);
    let find = |kind: &str, name: &str| -> Vec<&Value> {
        docs.iter()
            .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .collect()
    };
    let one = |kind: &str, name: &str| -> &Value {
        let f = find(kind, name);
        assert_eq!(
            f.len(),
            1,
            "{kind} {name} rendered {} times:\n{rendered}",
            f.len()
        );
        f[0]
    };
    // Names from the release name; namespaced objects in the release's namespace.
    let dep = one("Deployment", "rel-rbd-provisioner");
    assert_eq!(dep["metadata"]["namespace"], "storage");
    assert_eq!(
        args_of(dep),
        [
            "--leader-election-lease-duration=20s",
            "--leader-election-renew-deadline=12s",
            "--leader-election-retry-period=3s",
            "--workers=4",
        ]
    );
    let env = &container(dep)["env"];
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "LOG_FORMAT", "value": "json"}))
    );
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "SERVICE_ACCOUNT",
        "value": "$(POD_NAMESPACE):rel-rbd-provisioner"}))
    );
    // The Lease of this provisioner name, as the binary names it.
    let role = one("Role", "rel-rbd-provisioner-leader-election");
    assert_eq!(
        role["rules"][1]["resourceNames"],
        json!([domain::lease::lease_name("Example.io/RBD")])
    );
    // Secrets: get only, bound in exactly the listed namespaces.
    assert_eq!(
        one("ClusterRole", "rel-rbd-provisioner-secrets")["rules"],
        manifest_rules("manifests/rbac/secrets.yaml", "rbd-provisioner-secrets")
    );
    let mut bound: Vec<&str> = find("RoleBinding", "rel-rbd-provisioner-secrets")
        .iter()
        .map(|b| b["metadata"]["namespace"].as_str().unwrap())
        .collect();
    bound.sort();
    assert_eq!(bound, ["apps", "ceph"]);
    // Classes: the provisioner name, csiDriver added but not to a volumeFlavor: rbd class.
    let fast = one("StorageClass", "fast");
    assert_eq!(fast["provisioner"], "Example.io/RBD");
    assert_eq!(
        fast["parameters"]["csiDriver"],
        "rook-ceph.rbd.csi.ceph.com"
    );
    assert_eq!(fast["parameters"]["imageFormat"], "2");
    assert_eq!(fast["reclaimPolicy"], "Retain");
    assert_eq!(fast["allowVolumeExpansion"], true);
    assert_eq!(fast["volumeBindingMode"], "WaitForFirstConsumer");
    assert_eq!(fast["mountOptions"], json!(["discard"]));
    assert_eq!(
        fast["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    assert!(
        one("StorageClass", "old")["parameters"]
            .get("csiDriver")
            .is_none()
    );
    // PodDisruptionBudget, Service port, ServiceMonitor.
    assert_eq!(
        one("PodDisruptionBudget", "rel-rbd-provisioner")["spec"]["maxUnavailable"],
        1
    );
    assert_eq!(
        one("Service", "rel-rbd-provisioner-metrics")["spec"]["ports"][0]["port"],
        9090
    );
    let sm = one("ServiceMonitor", "rel-rbd-provisioner");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "30s");
    // The dashboards, each file whole, for Grafana's sidecar.
    let cm = one("ConfigMap", "rel-rbd-provisioner-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dir = chart().join("dashboards");
    let mut files = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "json") {
            let name = p.file_name().unwrap().to_str().unwrap();
            let text = std::fs::read_to_string(&p).unwrap();
            assert_eq!(cm["data"][name].as_str(), Some(text.trim_end()), "{name}");
            files += 1;
        }
    }
    assert!(files > 0, "no dashboards in {}", dir.display());
    assert_eq!(cm["data"].as_object().unwrap().len(), files);
}

/// Values that cannot work fail at `helm template` and `helm install` with the schema's or
/// the chart's message, and an install that failed leaves no release.
#[tokio::test]
async fn helm_bad_values_fail_at_install() {
    let bed = Bed::load();
    let admin = bed.admin().await;
    let ns = unique("helm-bad");
    namespace(&admin, &ns).await;
    let _clean = Cleanup::new(&bed).namespace(&ns);
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let replicas = values_file(
        &bed,
        &json!({"replicas": 2, "leaderElection": {"enabled": false}}),
    );
    let replicas = replicas.to_str().unwrap();
    // The schema refuses it, naming the value; without the schema, the chart's own check.
    for verb in ["template", "install"] {
        let err = helm_err(&bed, &[verb, "bad", chart, "-n", &ns, "-f", replicas]);
        assert!(err.contains("schema"), "{verb}: {err}");
        assert!(err.contains("/leaderElection/enabled"), "{verb}: {err}");
        assert!(err.contains("/replicas"), "{verb}: {err}");
    }
    let err = helm_err(
        &bed,
        &[
            "template",
            "bad",
            chart,
            "-n",
            &ns,
            "-f",
            replicas,
            "--skip-schema-validation",
        ],
    );
    assert!(
        err.contains("replicas is 2 but leaderElection.enabled is false"),
        "{err}"
    );
    // A variable the chart sets itself (server-side apply refuses a repeated name).
    let env = values_file(
        &bed,
        &json!({"extraEnv": [{"name": "RUST_LOG", "value": "debug"}]}),
    );
    let err = helm_err(
        &bed,
        &["template", "bad", chart, "-f", env.to_str().unwrap()],
    );
    assert!(err.contains("/extraEnv/0/name"), "{err}");
    // One replica without leader election is fine, and so are two with it.
    helm_ok(
        &bed,
        &[
            "template",
            "ok",
            chart,
            "--set",
            "replicas=1,leaderElection.enabled=false",
        ],
    );
    helm_ok(&bed, &["template", "ok", chart, "--set", "replicas=3"]);

    // A class whose Secret namespace is not listed: the message names what to add.
    for (key, missing) in [
        ("adminSecretNamespace", "ceph"),
        ("userSecretNamespace", "apps"),
        ("csiNodeStageSecretNamespace", "csi"),
    ] {
        let mut params = json!({"monitors": "10.0.0.1:6789", "adminSecretName": "a",
            "adminSecretNamespace": "kube-system", "userSecretName": "u"});
        params[key] = missing.into();
        let v = json!({"storageClasses": [{"name": "c1", "parameters": params}]});
        let f = values_file(&bed, &v);
        for verb in ["template", "install"] {
            let err = helm_err(
                &bed,
                &[verb, "bad", chart, "-n", &ns, "-f", f.to_str().unwrap()],
            );
            assert!(
                err.contains(&format!("add \"{missing}\" to secretNamespaces")),
                "{verb} {key}: {err}"
            );
            assert!(err.contains("class \"c1\"") && err.contains(key), "{err}");
        }
    }
    // adminSecretNamespace defaults to "default", as the provisioner reads it.
    let v = json!({"secretNamespaces": ["kube-system"], "storageClasses": [{"name": "c1",
        "parameters": {"monitors": "m", "adminSecretName": "a", "userSecretName": "u"}}]});
    let err = helm_err(
        &bed,
        &[
            "template",
            "bad",
            chart,
            "-f",
            values_file(&bed, &v).to_str().unwrap(),
        ],
    );
    assert!(err.contains("add \"default\" to secretNamespaces"), "{err}");
    // Nothing was installed.
    let list = helm_ok(&bed, &["list", "-n", &ns, "-q"]);
    assert_eq!(list.trim(), "", "a failed install left a release");
}

const TABLE_BEGIN: &str = "<!-- helm-values-table:begin";
const TABLE_END: &str = "<!-- helm-values-table:end -->";

/// The README's values table is the one generated from values.yaml's `# --` comments.
/// `RBDP_WRITE_VALUES_TABLE=1` writes it into README.md instead of comparing.
#[test]
fn helm_readme_values_table_matches_values_yaml() {
    let values = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    let table = values_table(&values).unwrap_or_else(|e| panic!("{e}"));
    let readme_path = repo_root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let at = between(&readme, TABLE_BEGIN, TABLE_END).unwrap_or_else(|| {
        panic!("README.md has no `{TABLE_BEGIN} ... -->` / `{TABLE_END}` lines")
    });
    if std::env::var_os("RBDP_WRITE_VALUES_TABLE").is_some() {
        let text = format!("{}{table}{}", &readme[..at.start], &readme[at.end..]);
        std::fs::write(&readme_path, text).unwrap();
        return;
    }
    let current = &readme[at];
    assert!(
        current == table,
        "README.md's values table differs from charts/rbd-provisioner/values.yaml; \
         RBDP_WRITE_VALUES_TABLE=1 cargo test --test helm helm_readme rewrites it. \
         It should be:\n{table}\nIt is:\n{current}"
    );
}
