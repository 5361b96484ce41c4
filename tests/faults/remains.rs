//! Regressions: what a process killed inside a librbd call leaves in the pool, cleared by the
//! next one.

use super::*;

/// Regression (the last full run of scenario 1): a process killed inside `rbd_trash_move`
/// leaves the trash entry marked "moving", which librbd refuses to remove ("image not fully
/// moved to trash", EUCLEAN), with the image's directory entry gone or still there. Such an
/// entry stayed in the trash for ever. The state is made here with librados' Python binding
/// (the `rbd` class's own methods, as librbd calls them), on images whose deletion we had
/// begun (stamped "trashed"), and the provisioner must finish the move and purge both.
#[tokio::test]
async fn trash_entries_left_half_moved_by_a_killed_process_are_purged() {
    let env = [("MAINTENANCE_INTERVAL", "2")];
    let mut c = Scenario::with_env("halfmoved", &env).await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (_, gone_uid) = c.bound(&class, "dir-gone", "64Mi").await;
    let (_, kept_uid) = c.bound(&class, "dir-kept", "64Mi").await;
    // The provisioner "dies" inside the deletion: stamp, then the half-done move.
    c.prov.crash();
    let conf = c.bed.dir.join("ceph/ceph.conf");
    for (uid, keep_dir) in [(&gone_uid, false), (&kept_uid, true)] {
        let image = format!("kubernetes-dynamic-pvc-{uid}");
        stamp_trashed(&c.bed, &format!("kube/{image}"));
        let out = Command::new("/usr/bin/python3")
            .args(["-c", HALF_MOVE])
            .arg(&conf)
            .arg(&image)
            .arg(if keep_dir { "keep" } else { "gone" })
            .output()
            .unwrap();
        assert_success("the half move", &out);
        assert!(trash(&c.bed, "kube").contains(&image));
        assert_eq!(images(&c.bed, "kube").contains(&image), keep_dir);
    }
    // The provisioner back, the claims deleted: the PVs go, and so must both entries.
    c.prov = Provisioner::start(&c.bed, &c.name, &env).await;
    let started = Instant::now();
    delete_claim(&c.admin, &c.ns, "dir-gone").await;
    delete_claim(&c.admin, &c.ns, "dir-kept").await;
    let (violations, took) = check_gone(
        &c,
        &[gone_uid.clone(), kept_uid.clone()],
        Duration::from_secs(60),
    )
    .await;
    println!("half-moved trash entries purged in {took:?}");
    assert!(
        violations.is_empty(),
        "violations:\n{}\nprovisioner log:\n{}",
        violations.join("\n"),
        strip_ansi(&c.prov.logs())
            .lines()
            .filter(|l| l.contains("trash") || l.contains("purg"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Leaves an image half-moved to the trash, as librbd leaves it when its process dies inside
/// `rbd_trash_move`: the trash entry added in state MOVING (1) and the directory entry removed
/// ("gone") or not yet ("keep"). Arguments: ceph.conf, image name, gone|keep.
const HALF_MOVE: &str = r#"
import struct, sys, rados, rbd
conf, name, mode = sys.argv[1:4]
def s(x):
    b = x.encode()
    return struct.pack('<I', len(b)) + b
with rados.Rados(conffile=conf) as cluster:
    with cluster.open_ioctx('kube') as io:
        with rbd.Image(io, name, read_only=True) as img:
            image_id = img.id()
        rbd.RBD().trash_move(io, name, 0)
        if mode == 'keep':
            io.write_full('rbd_id.' + name, b'')
            io.execute('rbd_id.' + name, 'rbd', 'set_id', s(image_id))
            io.execute('rbd_directory', 'rbd', 'dir_add_image', s(name) + s(image_id))
        io.execute('rbd_trash', 'rbd', 'trash_state_set', s(image_id) + bytes([1, 0]))
"#;

/// Regression (scenario 1 on Kubernetes 1.37, seed 1796096399844267923): a process killed
/// inside `rbd_create4` leaves the image's name taken (directory entry, id object) without its
/// header: creating it again says EEXIST, opening it says ENOENT, and the claim failed that
/// way for ever. The state is made here with the `rbd` and `rados` CLIs (an image whose header
/// object is removed); the provisioner must remove the remains, create the image again and
/// bind the claim.
#[tokio::test]
async fn image_left_half_created_by_a_killed_process_is_made_again() {
    let mut c = Scenario::with_env("halfmade", &[]).await;
    let name = c.name.clone();
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    c.prov.crash();
    let uid = create_claim(&c.admin, &c.ns, "half", &class).await;
    let image = format!("kubernetes-dynamic-pvc-{uid}");
    rbd_create(&c.bed, &format!("kube/{image}"), "64");
    let id = rbd_json(&c.bed, &["info", &format!("kube/{image}")]).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    cli(
        &c.bed,
        "rados",
        &["-p", "kube", "rm", &format!("rbd_header.{id}")],
    );
    assert!(images(&c.bed, "kube").contains(&image));
    assert!(rbd_json(&c.bed, &["info", &format!("kube/{image}")]).is_none());

    c.prov = Provisioner::start(&c.bed, &name, &[]).await;
    let names = vec!["half".to_string()];
    let bound = all_bound(&c.admin, &c.ns, &names, Duration::from_secs(180)).await;
    assert!(
        bound.is_ok(),
        "the claim is not Bound; provisioner log:\n{}",
        strip_ansi(&c.prov.logs())
            .lines()
            .filter(|l| l.contains("half"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let info = rbd_json(&c.bed, &["info", &format!("kube/{image}")]).expect("the image opens");
    assert_ne!(info["id"].as_str(), Some(id.as_str()), "made anew");
    let violations = check_bound(&c, &names, &[c.prov.logs()]).await;
    assert_no_violations(&violations);
    delete_claim(&c.admin, &c.ns, "half").await;
    let (gone, _) = check_gone(&c, &[uid], Duration::from_secs(60)).await;
    assert_no_violations(&gone);
}
