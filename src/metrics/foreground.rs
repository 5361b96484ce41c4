//! The operations a user waits on (provisioning, deletion, resize, snapshots), counted while
//! under way, so that background work can give way to them: a purge of a trashed image sends
//! the OSD hundreds of removals, and a deletion behind them in its queue waits on each.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
pub struct Foreground {
    under_way: AtomicUsize,
    quiet: Notify,
}

impl Foreground {
    pub(super) fn enter(&self) {
        self.under_way.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn leave(&self) {
        if self.under_way.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.quiet.notify_waiters();
        }
    }

    /// Returns once no such operation is under way, or after `at_most` (so that a steady
    /// stream of them never starves the background).
    pub async fn quiet(&self, at_most: Duration) {
        let deadline = tokio::time::Instant::now() + at_most;
        loop {
            let notified = self.quiet.notified();
            tokio::pin!(notified);
            // Registered before the count is read: a `leave` in between still wakes us.
            notified.as_mut().enable();
            if self.under_way.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn quiet_waits_for_the_last_operation_and_no_longer() {
        let f = Arc::new(Foreground::default());
        f.enter();
        f.enter();
        let started = tokio::time::Instant::now();
        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.quiet(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        f.leave();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "one operation is still under way");
        f.leave();
        waiter.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_gives_up_after_its_bound() {
        let f = Foreground::default();
        f.enter();
        let started = tokio::time::Instant::now();
        f.quiet(Duration::from_secs(3)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        f.leave();
        let started = tokio::time::Instant::now();
        f.quiet(Duration::from_secs(3)).await;
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "nothing under way: no wait"
        );
    }
}
