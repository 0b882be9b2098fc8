//! The retry mechanism: capped, jittered exponential backoff. Which errors deserve a retry
//! is decided by the caller's classifier (see `error`), not here.

use std::future::Future;
use std::time::Duration;

use rand::RngExt;

/// How many times to retry and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 3).
    pub retries: u32,
    /// Wait before the first retry (default 200 ms); doubles each time.
    pub base: Duration,
    /// Longest wait (default 5 s).
    pub max: Duration,
    /// Randomise each wait within its upper half, so that many sinks do not retry in step.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the wait before retry number `retry` (0-based): `base × 2^retry`,
    /// capped at `max`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(31));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry number `retry`: the ceiling, or with jitter a random time
    /// between half of it and all of it.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        if !self.jitter || ceiling.is_zero() {
            return ceiling;
        }
        let half = ceiling / 2;
        half + ceiling.mul_f64(rand::rng().random_range(0.0..=0.5))
    }
}

/// Runs `op` until it succeeds, fails with an error `retryable` rejects, or has been retried
/// `policy.retries` times; `on_retry` is told each error that will be retried and the wait.
///
/// # Errors
/// The last error of `op`.
pub async fn retry<T, E, Op, Fut>(
    policy: &RetryPolicy,
    retryable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(u32, &E, Duration),
    mut op: Op,
) -> Result<T, E>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < policy.retries && retryable(&e) => {
                let wait = policy.delay(attempt);
                attempt += 1;
                on_retry(attempt, &e, wait);
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn fixed() -> RetryPolicy {
        RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = fixed();
        let waits: Vec<u128> = (0..7).map(|i| p.delay(i).as_millis()).collect();
        assert_eq!(waits, vec![200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(p.ceiling(200), Duration::from_secs(5), "no overflow");
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        let p = RetryPolicy::default();
        for retry in 0..6 {
            let ceiling = p.ceiling(retry);
            for _ in 0..200 {
                let d = p.delay(retry);
                assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} for {ceiling:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_three_times_then_gives_up() {
        let calls = Cell::new(0);
        let mut waits = Vec::new();
        let start = tokio::time::Instant::now();
        let r: Result<(), &str> = retry(
            &fixed(),
            |_| true,
            |n, _, w| waits.push((n, w)),
            || {
                calls.set(calls.get() + 1);
                async { Err("down") }
            },
        )
        .await;
        assert_eq!(r, Err("down"));
        assert_eq!(calls.get(), 4, "one attempt and three retries");
        let ms: Vec<(u32, u128)> = waits.iter().map(|(n, w)| (*n, w.as_millis())).collect();
        assert_eq!(ms, vec![(1, 200), (2, 400), (3, 800)]);
        assert_eq!(start.elapsed(), Duration::from_millis(1400));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_success_or_at_a_permanent_error() {
        let calls = Cell::new(0);
        let r: Result<u32, &str> = retry(
            &fixed(),
            |_| true,
            |_, _, _| {},
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 3 { Err("down") } else { Ok(n) } }
            },
        )
        .await;
        assert_eq!(r, Ok(3));

        calls.set(0);
        let r: Result<(), &str> = retry(
            &fixed(),
            |e| *e != "bad row",
            |_, _, _| {},
            || {
                calls.set(calls.get() + 1);
                async { Err("bad row") }
            },
        )
        .await;
        assert_eq!(r, Err("bad row"));
        assert_eq!(calls.get(), 1, "a permanent error is not retried");
    }
}
