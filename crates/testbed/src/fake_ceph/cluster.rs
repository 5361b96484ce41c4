//! The fake as an [`RbdCluster`]: every call logged, faults applied, then done on the state.

use super::*;

#[async_trait]
impl RbdCluster for FakeCeph {
    fn monitors(&self) -> &str {
        &self.monitors
    }

    async fn fsid(&self) -> Result<String, CephError> {
        self.call(Method::Fsid, "", "", None, |s| Ok(s.fsid.clone()))
            .await
    }

    async fn pool_id(&self, pool: &str) -> Result<i64, CephError> {
        self.call(Method::PoolId, pool, "", None, |s| Ok(s.pool(pool)?.id))
            .await
    }

    async fn pool_created(&self, pool: &str) -> Result<Option<i64>, CephError> {
        // `osd pool ls detail` answers for every pool; a missing one is simply not listed.
        self.call(Method::PoolCreated, pool, "", None, |s| {
            Ok(s.pools.get(pool).and_then(|p| p.created))
        })
        .await
    }

    async fn pool_quota(&self, pool: &str) -> Result<PoolQuota, CephError> {
        self.call(Method::PoolQuota, pool, "", None, |s| {
            s.pools
                .get(pool)
                .map(|p| p.quota.clone())
                .ok_or_else(|| CephError::pool_op(Op::PoolInfo, pool, enoent()))
        })
        .await
    }

    async fn pool_applications(&self, pool: &str) -> Result<Vec<String>, CephError> {
        self.call(Method::PoolApplications, pool, "", None, |s| {
            let mut apps = s.pool(pool)?.applications.clone();
            apps.sort();
            Ok(apps)
        })
        .await
    }

    async fn list_images(&self, pool: &str) -> Result<Vec<String>, CephError> {
        self.call(Method::ListImages, pool, "", None, |s| {
            Ok(s.pool(pool)?.images.keys().cloned().collect())
        })
        .await
    }

    async fn records_set(
        &self,
        pool: &str,
        oid: &'static str,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), CephError> {
        self.call(Method::RecordsSet, pool, oid, None, move |s| {
            let p = s.pool_mut(pool)?;
            // A new object is refused at the quota; omap on an existing one is not.
            if p.over_quota() && !p.objects.contains_key(oid) {
                return Err(CephError::pool_op(
                    Op::WriteRecords,
                    pool,
                    Errno(libc::EDQUOT),
                ));
            }
            p.objects.entry(oid.to_string()).or_default().extend(pairs);
            Ok(())
        })
        .await
    }

    async fn records_remove(
        &self,
        pool: &str,
        oid: &'static str,
        keys: Vec<String>,
    ) -> Result<(), CephError> {
        self.call(Method::RecordsRemove, pool, oid, None, move |s| {
            if let Some(o) = s.pool_mut(pool)?.objects.get_mut(oid) {
                for k in &keys {
                    o.remove(k);
                }
            }
            Ok(())
        })
        .await
    }

    async fn records(
        &self,
        pool: &str,
        oid: &'static str,
    ) -> Result<Vec<(String, Vec<u8>)>, CephError> {
        self.call(Method::Records, pool, oid, None, |s| {
            Ok(s.pool(pool)?
                .objects
                .get(oid)
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default())
        })
        .await
    }

    async fn create_image(&self, spec: &ImageSpec) -> Result<Created, CephError> {
        self.call(Method::CreateImage, &spec.pool, &spec.name, None, |s| {
            s.create_image(spec)
        })
        .await
    }

    async fn clone_image(&self, spec: &CloneSpec) -> Result<Created, CephError> {
        let parent = spec.parent.to_string();
        self.call(
            Method::CloneImage,
            &spec.pool,
            &spec.name,
            Some(&parent),
            |s| s.clone_image(spec),
        )
        .await
    }

    async fn image_info(&self, pool: &str, image: &str) -> Result<ImageInfo, CephError> {
        self.call(Method::ImageInfo, pool, image, None, |s| {
            let img = s.open(pool, image, Op::Open)?;
            Ok(s.info(pool, img))
        })
        .await
    }

    async fn resize(&self, pool: &str, image: &str, new_size: u64) -> Result<(), CephError> {
        self.call(Method::Resize, pool, image, None, |s| {
            s.resize(pool, image, new_size)
        })
        .await
    }

    async fn remove_image(&self, pool: &str, image: &str) -> Result<Removed, CephError> {
        self.call(Method::RemoveImage, pool, image, None, |s| {
            s.remove_image(pool, image)
        })
        .await
    }

    async fn watchers(&self, pool: &str, image: &str) -> Result<Vec<Watcher>, CephError> {
        self.call(Method::Watchers, pool, image, None, |s| {
            Ok(s.open(pool, image, Op::Open)?.watchers.clone())
        })
        .await
    }

    async fn flatten(&self, pool: &str, image: &str) -> Result<(), CephError> {
        self.call(Method::Flatten, pool, image, None, |s| {
            s.flatten(pool, image)
        })
        .await
    }

    async fn set_metadata(
        &self,
        pool: &str,
        image: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<(), CephError> {
        self.call(Method::SetMetadata, pool, image, None, move |s| {
            s.set_metadata(pool, image, pairs, true)
        })
        .await
    }

    async fn set_metadata_unopened(
        &self,
        pool: &str,
        image: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<(), CephError> {
        self.call(Method::SetMetadataUnopened, pool, image, None, move |s| {
            s.set_metadata(pool, image, pairs, false)
        })
        .await
    }

    async fn metadata(
        &self,
        pool: &str,
        image: &str,
        keys: &'static [&'static str],
    ) -> Result<BTreeMap<String, String>, CephError> {
        self.call(Method::Metadata, pool, image, None, |s| {
            let img = s.open(pool, image, Op::Open)?;
            Ok(pick(&img.meta, keys))
        })
        .await
    }

    async fn snap_create(&self, pool: &str, image: &str, snap: &str) -> Result<Created, CephError> {
        self.call(Method::SnapCreate, pool, image, Some(snap), |s| {
            s.snap_create(pool, image, snap)
        })
        .await
    }

    async fn snap_protect(&self, pool: &str, image: &str, snap: &str) -> Result<(), CephError> {
        self.call(Method::SnapProtect, pool, image, Some(snap), |s| {
            s.snap_protect(pool, image, snap)
        })
        .await
    }

    async fn snap_unprotect(&self, pool: &str, image: &str, snap: &str) -> Result<(), CephError> {
        self.call(Method::SnapUnprotect, pool, image, Some(snap), |s| {
            s.snap_unprotect(pool, image, snap)
        })
        .await
    }

    async fn snap_remove(&self, pool: &str, image: &str, snap: &str) -> Result<Removed, CephError> {
        self.call(Method::SnapRemove, pool, image, Some(snap), |s| {
            s.snap_remove(pool, image, snap)
        })
        .await
    }

    async fn snap_list(&self, pool: &str, image: &str) -> Result<Vec<SnapInfo>, CephError> {
        self.call(Method::SnapList, pool, image, None, |s| {
            let img = s.open(pool, image, Op::Open)?;
            Ok(img.snaps.iter().map(snap_info).collect())
        })
        .await
    }

    async fn snap_children(
        &self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<Vec<Child>, CephError> {
        self.call(Method::SnapChildren, pool, image, Some(snap), |s| {
            s.snap_children(pool, image, snap)
        })
        .await
    }

    async fn trash_move(
        &self,
        pool: &str,
        image: &str,
        delay_secs: u64,
    ) -> Result<Removed, CephError> {
        self.call(Method::TrashMove, pool, image, None, |s| {
            s.trash_move(pool, image, delay_secs)
        })
        .await
    }

    async fn trash_list(&self, pool: &str) -> Result<Vec<TrashEntry>, CephError> {
        self.call(Method::TrashList, pool, "", None, |s| {
            Ok(s.pool(pool)?
                .trash
                .iter()
                .map(|(id, t)| trash_entry(id, t))
                .collect())
        })
        .await
    }

    async fn trash_remove(&self, pool: &str, id: &str, force: bool) -> Result<Removed, CephError> {
        self.call(Method::TrashRemove, pool, id, None, |s| {
            s.trash_remove(pool, id, force)
        })
        .await
    }

    async fn trash_metadata(
        &self,
        pool: &str,
        id: &str,
        keys: &'static [&'static str],
    ) -> Result<BTreeMap<String, String>, CephError> {
        self.call(Method::TrashMetadata, pool, id, None, |s| {
            Ok(pick(&s.trash_open(pool, id)?.meta, keys))
        })
        .await
    }

    async fn trash_image(
        &self,
        pool: &str,
        id: &str,
        keys: &'static [&'static str],
    ) -> Result<(BTreeMap<String, String>, u64), CephError> {
        self.call(Method::TrashImage, pool, id, None, |s| {
            let img = s.trash_open(pool, id)?;
            Ok((pick(&img.meta, keys), img.size))
        })
        .await
    }
}
