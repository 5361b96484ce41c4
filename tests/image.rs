//! The container image: built from Debian packages by `hack/image.sh` (no registry here), run
//! with podman as the Deployment runs it (user 65532, read-only root, no capabilities), against
//! the bed, under the shipped RBAC.

use testbed as common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams};
use serde_json::json;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("hack/podman.sh"))
        .args(args)
        .output()
        .expect("run hack/podman.sh")
}

/// Removes the container when the test ends, also on failure: killing the podman client
/// (what the provisioner guard does) leaves the container running.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
    }
}

#[tokio::test]
async fn the_image_provisions_and_deletes_on_the_bed() {
    // The image, with the binary under test inside.
    let out = Command::new("bash")
        .arg(repo().join("hack/image.sh"))
        .arg(env!("CARGO_BIN_EXE_rbd-provisioner"))
        .output()
        .expect("run hack/image.sh");
    common::assert_success("hack/image.sh", &out);
    let image = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    // What the Dockerfile promises: a non-root user and no rbd CLI in the image.
    let user = podman(&["image", "inspect", "--format", "{{.Config.User}}", &image]);
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65532:65532");
    let rbd = podman(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &image,
        "-c",
        "command -v rbd ceph",
    ]);
    assert!(
        !rbd.status.success(),
        "the image carries the Ceph CLI: {}",
        String::from_utf8_lossy(&rbd.stdout)
    );

    let bed = Bed::load();
    // The ServiceAccount's kubeconfig, in a directory the container's user may read and that
    // is mounted at the same path, read-only.
    let dir = tempdir("rbdp-image");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(service_account_kubeconfig(&bed).await, &kubeconfig).unwrap();
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();
    let name = format!("{}.test/rbd", unique("image"));
    let container = Container(unique("rbdp-image"));
    let wrapper = dir.join("run");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec bash {podman} run --rm --name {c} --network host --read-only \
             --cap-drop ALL --security-opt no-new-privileges -e RUST_LOG \
             -v {d}:{d}:ro {image} \"$@\"\n",
            podman = repo().join("hack/podman.sh").display(),
            c = container.0,
            d = dir.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The one test of this binary: the harness starts the wrapper instead of the binary.
    common::use_binary(&wrapper);
    let prov = Provisioner::start_with(&bed, &name, &[], &[], Some(&kubeconfig)).await;
    let s = Scenario::around("image", &name, prov).await;
    wait_for("the container leading", Duration::from_secs(60), || async {
        s.prov.logs().contains("became leader").then_some(())
    })
    .await;
    let inside = podman(&["top", &container.0, "user", "args"]);
    let inside = String::from_utf8_lossy(&inside.stdout).to_string();
    assert!(
        inside.contains("65532") && inside.contains("rbd-provisioner"),
        "the provisioner runs in the container as 65532: {inside}"
    );

    let class = s
        .class("fast", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (c, uid) = s.bound(&class, "data", "64Mi").await;
    let pv = s.pv_of(&c).await;
    let (pool, img) = image_of(&pv);
    assert!(rbd_exists(&s.bed, &pool, &img), "{pool}/{img} not created");
    assert!(
        s.prov.logs().contains(&format!("pvc-{uid}")),
        "the container's own log names the volume it made"
    );
    Api::<PersistentVolumeClaim>::namespaced(s.admin.clone(), &s.ns)
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    s.wait_pv_gone(&uid).await;
    wait_for("the image removed", Duration::from_secs(60), || async {
        (!rbd_exists(&s.bed, &pool, &img)).then_some(())
    })
    .await;
    drop(s);
    drop(container);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Pool and image of a PV of either flavour.
fn image_of(pv: &k8s_openapi::api::core::v1::PersistentVolume) -> (String, String) {
    let spec = pv.spec.as_ref().unwrap();
    if let Some(rbd) = &spec.rbd {
        return (rbd.pool.clone().unwrap_or_default(), rbd.image.clone());
    }
    // A static ceph-csi PV names its image as the volumeHandle.
    let csi = spec.csi.as_ref().expect("spec.rbd or spec.csi");
    let attrs = csi.volume_attributes.clone().unwrap_or_default();
    (attrs["pool"].clone(), csi.volume_handle.clone())
}
