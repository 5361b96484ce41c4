//! The Helm chart (charts/rbd-provisioner/) with a real helm (hack/build-helm.sh, or
//! `RBDP_HELM`): lint, what it renders against manifests/, the values it refuses, the README's
//! values table, and a release's whole life on the bed's API server, with the provisioner run
//! under the release's ServiceAccount. Every test is named `helm_`: hack/test.sh runs them in a
//! stage of their own, once helm is built.

mod lifecycle;
mod render;

use testbed as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::*;
use serde_json::Value;

/// The chart under test.
fn chart() -> PathBuf {
    repo_root().join("charts/rbd-provisioner")
}

/// helm: `RBDP_HELM`, else what hack/build-helm.sh builds (its last line is the directory).
/// Panics when there is none: these tests must never pass by not running.
fn helm_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("RBDP_HELM") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "RBDP_HELM={} is not a file", p.display());
            return p;
        }
        let out = Command::new("bash")
            .arg(repo_root().join("hack/build-helm.sh"))
            .output()
            .expect("run hack/build-helm.sh");
        assert_success(
            "hack/build-helm.sh (set RBDP_HELM to use another helm)",
            &out,
        );
        let dir = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        let p = PathBuf::from(dir).join("helm");
        assert!(p.is_file(), "hack/build-helm.sh built no {}", p.display());
        p
    })
}

/// helm with `args` against the bed's API server, in a helm home of this test binary's own
/// (no user's repositories, plugins or registry logins).
fn helm(bed: &Bed, args: &[&str]) -> Output {
    let home = std::env::temp_dir().join("rbdp-helm-home");
    Command::new(helm_bin())
        .args(args)
        .arg("--kubeconfig")
        .arg(&bed.kubeconfig)
        .env_remove("KUBECONFIG")
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("run helm")
}

/// helm `args`, which must succeed; its stdout.
fn helm_ok(bed: &Bed, args: &[&str]) -> String {
    let out = helm(bed, args);
    // `helm lint` says what is wrong on stdout.
    assert!(
        out.status.success(),
        "helm {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm's output is UTF-8")
}

/// `helm VERB RELEASE <the chart> -n NS [-f VALUES]`, which must succeed; its stdout.
fn helm_chart(bed: &Bed, verb: &str, release: &str, ns: &str, values: Option<&Path>) -> String {
    let chart = chart();
    let mut args = vec![verb, release, chart.to_str().unwrap(), "-n", ns];
    if let Some(v) = values {
        args.extend(["-f", v.to_str().unwrap()]);
    }
    helm_ok(bed, &args)
}

/// helm `args`, which must fail; its stderr.
fn helm_err(bed: &Bed, args: &[&str]) -> String {
    let out = helm(bed, args);
    assert!(
        !out.status.success(),
        "helm {} succeeded, but must fail; it printed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `values` (JSON is YAML) to a file of this run for `-f`.
fn values_file(bed: &Bed, values: &Value) -> PathBuf {
    let path = bed.dir.join(format!("{}.json", unique("helm-values")));
    std::fs::write(&path, values.to_string()).unwrap();
    path
}

/// The documents of a multi-document YAML text (nulls dropped).
fn yaml_docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .expect("parse rendered YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// `kubectl get KIND NAME [-n NS] -o json`; `None` when it does not exist.
fn get(bed: &Bed, kind: &str, ns: Option<&str>, name: &str) -> Option<Value> {
    let mut cmd = Command::new(&bed.kubectl);
    cmd.arg("--kubeconfig").arg(&bed.kubeconfig);
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let out = cmd
        .args(["get", kind, name, "-o", "json", "--ignore-not-found"])
        .output()
        .expect("run kubectl");
    assert_success(&format!("kubectl get {kind} {name}"), &out);
    (!out.stdout.is_empty()).then(|| serde_json::from_slice(&out.stdout).expect("kubectl json"))
}

/// The first container of a Deployment (as rendered or as stored).
fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// A container's `args` as strings.
fn args_of(deployment: &Value) -> Vec<String> {
    container(deployment)["args"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The rules of the ClusterRole `name` among manifests/rbac/clusterrole.yaml's documents.
fn manifest_rules(file: &str, name: &str) -> Value {
    yaml_docs(&repo_file(file))
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{file} has no ClusterRole {name}"))["rules"]
        .clone()
}
