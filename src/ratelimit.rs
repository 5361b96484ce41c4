//! The client-side limit of Kubernetes API calls behind `--kube-api-qps`/`--kube-api-burst`:
//! a token bucket, as client-go's, in front of the kube client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tower::{Layer, Service};

/// `burst` calls at once, then `qps` per second on average.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket. `qps` must be positive; a `burst` below 1 counts as 1.
    pub fn new(qps: f64, burst: u32, now: Instant) -> Bucket {
        let burst = f64::from(burst.max(1));
        Bucket {
            qps,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token at `now`, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.qps))
        }
    }

    /// Takes a token at `now` only if `keep` tokens are left after it.
    pub fn take_keeping(&mut self, now: Instant, keep: f64) -> bool {
        self.refill(now);
        let taken = self.tokens >= 1.0 + keep;
        if taken {
            self.tokens -= 1.0;
        }
        taken
    }

    /// The tokens there are at `now`.
    pub fn available(&self, now: Instant) -> f64 {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.qps;
        (self.tokens + earned).min(self.burst)
    }

    /// Whether the bucket is full at `now`: no different from a new one.
    pub fn is_full(&self, now: Instant) -> bool {
        self.available(now) >= self.burst
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = self.available(now);
        self.last = self.last.max(now);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RateLimitLayer {
    qps: f64,
    burst: u32,
}

impl RateLimitLayer {
    pub fn new(qps: f64, burst: u32) -> RateLimitLayer {
        RateLimitLayer { qps, burst }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            bucket: Bucket::new(self.qps, self.burst, Instant::now()),
            granted: false,
            sleep: None,
        }
    }
}

/// The kube client's stack puts a buffer in front, so one caller polls at a time: a token is
/// taken in `poll_ready` and spent by the `call` that follows.
pub struct RateLimited<S> {
    inner: S,
    bucket: Bucket,
    granted: bool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S, R> Service<R> for RateLimited<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        while !self.granted {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            match self.bucket.take(Instant::now()) {
                Ok(()) => self.granted = true,
                Err(wait) => self.sleep = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.granted = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(b.take(t0), Ok(()));
        }
        let wait = b.take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(b.take(t0 + Duration::from_millis(500)), Ok(()));
        assert!(b.take(t0 + Duration::from_millis(600)).is_err());
    }

    #[test]
    fn an_idle_bucket_holds_no_more_than_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 2, t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.take(later), Ok(()));
        assert_eq!(b.take(later), Ok(()));
        assert!(b.take(later).is_err());
    }

    #[test]
    fn take_keeping_leaves_the_reserve() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1.0, 4, t0);
        assert!(b.take_keeping(t0, 2.0));
        assert!(b.take_keeping(t0, 2.0));
        assert!(!b.take_keeping(t0, 2.0), "two left: kept");
        assert!(b.take_keeping(t0, 0.0));
        assert!((b.available(t0) - 1.0).abs() < 1e-9);
        assert!(!b.is_full(t0 + Duration::from_secs(2)));
        assert!(b.is_full(t0 + Duration::from_secs(3)));
        // A clock read earlier than the last one earns nothing and loses nothing.
        assert!(b.take_keeping(t0 + Duration::from_secs(3), 2.0));
        assert!((b.available(t0) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn burst_zero_still_lets_calls_through() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1.0, 0, t0);
        assert_eq!(b.take(t0), Ok(()));
        assert_eq!(b.take(t0 + Duration::from_secs(1)), Ok(()));
    }
}
