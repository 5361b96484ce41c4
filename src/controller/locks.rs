//! One operation at a time per image, so that cloning from an image and deleting it never
//! interleave (a snapshot protected after the delete path listed them would pin the source
//! forever).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct ImageLocks(Mutex<HashMap<String, Weak<AsyncMutex<()>>>>);

impl ImageLocks {
    /// Waits for and holds the lock of `pool/image` until the guard is dropped.
    pub async fn lock(&self, pool: &str, image: &str) -> OwnedMutexGuard<()> {
        let key = format!("{pool}/{image}");
        let m = {
            let mut map = self.0.lock();
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(&key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(AsyncMutex::new(()));
                    map.insert(key, Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_image_waits_other_images_do_not() {
        let locks = Arc::new(ImageLocks::default());
        let held = locks.lock("kube", "a").await;
        // Another image: free at once.
        let other = tokio::time::timeout(Duration::from_millis(100), locks.lock("kube", "b")).await;
        assert!(other.is_ok());
        // The same image: waits until the first guard goes.
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move { l2.lock("kube", "a").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("lock released")
            .unwrap();
    }
}
