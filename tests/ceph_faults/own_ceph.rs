//! A pool and a Ceph user of a scenario's own, made and removed with the `ceph` CLI, so a
//! fault never touches client.admin or the pools the bed and other tests use.

use super::*;

/// A pool (initialised for RBD) and a Ceph user whose caps allow RBD on it alone, both
/// removed when dropped, with the blocklist entries a scenario added.
pub struct OwnCeph {
    bed: Bed,
    pub pool: String,
    /// Without "client.".
    user: String,
    blocklisted: Vec<String>,
}

impl OwnCeph {
    pub fn new(bed: &Bed, prefix: &str) -> OwnCeph {
        let pool = unique(prefix);
        ceph_cli(bed, &["osd", "pool", "create", &pool, "8"]);
        let own = OwnCeph {
            bed: bed.clone(),
            user: pool.clone(),
            pool,
            blocklisted: Vec::new(),
        };
        cli(bed, "rbd", &["pool", "init", &own.pool]);
        own.grant();
        own
    }

    pub fn client(&self) -> String {
        format!("client.{}", self.user)
    }

    /// Creates the user (with a new key) or gives it back its caps.
    pub fn grant(&self) {
        let osd = format!("profile rbd pool={}", self.pool);
        let args = ["mon", "profile rbd", "osd", osd.as_str()];
        if try_ceph_cli(&self.bed, &["auth", "get", &self.client()])
            .status
            .success()
        {
            ceph_cli(
                &self.bed,
                &[&["auth", "caps", &self.client()][..], &args].concat(),
            );
        } else {
            ceph_cli(
                &self.bed,
                &[&["auth", "get-or-create", &self.client()][..], &args].concat(),
            );
        }
    }

    pub fn key(&self) -> String {
        ceph_cli(&self.bed, &["auth", "get-key", &self.client()])
            .trim()
            .to_string()
    }

    /// The admin Secret of the class, holding the user's current key.
    pub async fn secret(&self, s: &Stage) -> String {
        let name = format!("{}-own-admin", s.ns);
        key_secret(&s.admin, "kube-system", &name, &self.key()).await;
        name
    }

    /// A class of `s`'s provisioner on this pool, as this user.
    pub async fn class(&self, s: &Stage) -> String {
        let secret = self.secret(s).await;
        s.class(
            "own",
            &[
                ("pool", &self.pool),
                ("adminId", &self.user),
                ("adminSecretName", &secret),
            ],
            json!({"reclaimPolicy": "Delete"}),
        )
        .await
    }

    /// The pool's flags as the OSD map has them (`full_quota` once a quota is reached).
    pub fn flags(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&ceph_cli(
            &self.bed,
            &["osd", "pool", "ls", "detail", "--format", "json"],
        ))
        .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|p| p["pool_name"] == self.pool.as_str())
            .and_then(|p| p["flags_names"].as_str().map(String::from))
            .unwrap_or_default()
    }

    /// The addresses (`ip:port/nonce`) of the clients of this user the monitors have
    /// sessions with: one per connected librados client.
    pub fn sessions(&self) -> Vec<String> {
        let mons: serde_json::Value =
            serde_json::from_str(&ceph_cli(&self.bed, &["mon", "dump", "--format", "json"]))
                .unwrap();
        let mut addrs = Vec::new();
        for m in mons["mons"].as_array().unwrap() {
            let target = format!("mon.{}", m["name"].as_str().unwrap());
            let s: serde_json::Value = serde_json::from_str(&ceph_cli(
                &self.bed,
                &["tell", &target, "sessions", "--format", "json"],
            ))
            .unwrap();
            for session in s.as_array().unwrap() {
                if session["entity_name"] != self.client().as_str() {
                    continue;
                }
                for a in session["addrs"]["addrvec"].as_array().unwrap() {
                    addrs.push(format!(
                        "{}/{}",
                        a["addr"].as_str().unwrap(),
                        a["nonce"].as_u64().unwrap()
                    ));
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        addrs
    }

    pub fn blocklist(&mut self, addr: &str) {
        ceph_cli(&self.bed, &["osd", "blocklist", "add", addr]);
        self.blocklisted.push(addr.to_string());
    }

    /// RBD's objects in the pool (`rados ls`), to find what `rbd ls` would not show: an image
    /// id or header whose directory entry was never written.
    pub fn objects(&self) -> BTreeSet<String> {
        cli(&self.bed, "rados", &["-p", &self.pool, "ls"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for OwnCeph {
    fn drop(&mut self) {
        for a in &self.blocklisted {
            let _ = try_ceph_cli(&self.bed, &["osd", "blocklist", "rm", a]);
        }
        let p = self.pool.as_str();
        let _ = try_ceph_cli(
            &self.bed,
            &["osd", "pool", "rm", p, p, "--yes-i-really-really-mean-it"],
        );
        let _ = try_ceph_cli(&self.bed, &["auth", "del", &self.client()]);
    }
}
