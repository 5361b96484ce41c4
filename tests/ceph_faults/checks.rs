//! A scenario's provisioner and claims, and what must hold while a fault lasts (nothing made)
//! and once it is mended (each claim provisioned exactly once).

use super::*;

/// A provisioner that retries within 2 s, with a metrics endpoint, on a stage of its own, and
/// a pool and Ceph user of the scenario's own with a class of them: the scenario, the
/// endpoint's address, the pool and user, the class.
pub async fn scenario(prefix: &str, max_age: Option<u64>) -> (Scenario, String, OwnCeph, String) {
    let addr = free_addr();
    let max_age = max_age.map(|s| s.to_string());
    let mut env = vec![("LEADER_ELECT", "false"), ("RETRY_INTERVAL_MAX", "2s")];
    if let Some(a) = &max_age {
        env.push(("CEPH_CLIENT_MAX_AGE", a));
    }
    let c = Scenario::serving_with(prefix, &env, &["--http-endpoint", &addr]).await;
    let own = OwnCeph::new(&c.bed, prefix);
    let class = own.class(&c).await;
    (c, addr, own, class)
}

/// Claims `names` of `class`, made at once and provisioned before the fault; the names.
pub async fn provisioned_first(c: &Scenario, class: &str, names: Vec<String>) -> Vec<String> {
    claims(c, class, &names).await;
    all_provisioned(c, &names, T)
        .await
        .unwrap_or_else(|left| panic!("before the fault, not provisioned: {left:?}"));
    names
}

/// `rbd_provisioner_operations_total` of provisioning with this result.
pub fn provisions(addr: &str, result: &str) -> u64 {
    let want =
        format!("rbd_provisioner_operations_total{{operation=\"provision\",result=\"{result}\"}} ");
    metrics(addr)
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Creates the claims `names` at once; returns their uids in order.
pub async fn claims(c: &Scenario, class: &str, names: &[String]) -> Vec<String> {
    let made = burst(&c.admin, &c.ns, class, names, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(made.len(), names.len());
    let mut uids = Vec::new();
    for n in names {
        uids.push(uid_of(&c.pvcs().get(n).await.unwrap()));
    }
    uids
}

/// While a fault lasts: no claim of `uids` has a PV, and the pool holds no image of theirs,
/// whole or in part (an id, a header or a directory entry).
pub async fn nothing_made(c: &Scenario, own: &OwnCeph, uids: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    let objects = own.objects();
    let imgs = images(&c.bed, &own.pool);
    for uid in uids {
        if c.pvs()
            .get_opt(&format!("pvc-{uid}"))
            .await
            .unwrap()
            .is_some()
        {
            v.push(format!("PV pvc-{uid} exists while the fault lasts"));
        }
        let image = format!("kubernetes-dynamic-pvc-{uid}");
        if imgs.contains(&image) {
            v.push(format!("image {image} exists while the fault lasts"));
        }
        if objects.contains(&format!("rbd_id.{image}")) {
            v.push(format!("rbd_id.{image} exists while the fault lasts"));
        }
    }
    v
}

/// Once the fault is mended and every claim of `names` is Bound: the pool holds exactly one
/// image per claim, each stamped with its claim and named by its PV, no other image, no
/// header or id without its image, nothing in the trash, and no image created twice.
pub async fn exactly_once(c: &Scenario, own: &OwnCeph, names: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    let imgs = images(&c.bed, &own.pool);
    let mut want = BTreeSet::new();
    for n in names {
        let claim = c.pvcs().get(n).await.unwrap();
        let uid = uid_of(&claim);
        let volume = claim.spec.as_ref().and_then(|s| s.volume_name.clone());
        let image = format!("kubernetes-dynamic-pvc-{uid}");
        let pv = c.pvs().get(&format!("pvc-{uid}")).await.unwrap();
        // Not bound yet is kube-controller-manager's pace, not ours: the PV, pre-bound to
        // this claim by uid, is what the provisioner owes; bound elsewhere is a violation.
        let pre_bound = domain::resize::bound_to(&pv, &claim);
        let bound_here = volume.as_deref() == Some(format!("pvc-{uid}").as_str());
        if !(bound_here || volume.is_none() && pre_bound) {
            v.push(format!(
                "claim {n} bound to {volume:?}, not pvc-{uid} (PV pre-bound to it: {pre_bound})"
            ));
        }
        match domain::reclaim::spec_image(&pv) {
            Some((pool, i)) if pool == own.pool && i == image => {}
            other => v.push(format!(
                "PV pvc-{uid} names {other:?}, not {}/{image}",
                own.pool
            )),
        }
        let spec = format!("{}/{image}", own.pool);
        let key = "rbd-provisioner.ceph.com/claim";
        let stamp = try_cli(&c.bed, "rbd", &["image-meta", "get", &spec, key]);
        let stamped = String::from_utf8_lossy(&stamp.stdout).trim().to_string();
        if stamped != format!("{}/{n}", c.ns) {
            v.push(format!(
                "image {image} stamped {stamped:?}, not {}/{n}",
                c.ns
            ));
        }
        want.insert(image);
    }
    if imgs != want {
        v.push(format!(
            "pool {} holds {} images, {} claims: extra {:?}, missing {:?}",
            own.pool,
            imgs.len(),
            want.len(),
            imgs.difference(&want).collect::<Vec<_>>(),
            want.difference(&imgs).collect::<Vec<_>>()
        ));
    }
    let objects = own.objects();
    let ids = objects.iter().filter(|o| o.starts_with("rbd_id.")).count();
    let headers = objects
        .iter()
        .filter(|o| o.starts_with("rbd_header."))
        .count();
    if ids != want.len() || headers != want.len() {
        v.push(format!(
            "pool {} has {ids} image ids and {headers} headers for {} images",
            own.pool,
            want.len()
        ));
    }
    let trashed = trash(&c.bed, &own.pool);
    if !trashed.is_empty() {
        v.push(format!("trash of {} holds {trashed:?}", own.pool));
    }
    let created = creations(&[c.prov.logs()]);
    for image in &want {
        match created.get(image) {
            Some(1) => {}
            n => v.push(format!("image {image} created {n:?} times by the log")),
        }
    }
    v
}

/// Waits for each claim's ProvisioningFailed event with every needle; returns one note.
pub async fn failed_with(c: &Scenario, uids: &[String], needles: &[&str]) -> String {
    let mut note = String::new();
    for uid in uids {
        let e = wait_event(&c.admin, &c.ns, uid, "ProvisioningFailed", needles, T).await;
        note = e.note.unwrap_or_default();
    }
    note
}

pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

pub async fn events_text(c: &Scenario) -> String {
    let api = kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(c.admin.clone(), &c.ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|e| e.note.clone())
        .collect::<Vec<_>>()
        .join("\n")
}
