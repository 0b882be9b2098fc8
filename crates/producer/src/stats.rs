//! Delivery statistics in the manner of Kafka's own `ProducerPerformance`: records/s, MB/s,
//! average and maximum delivery latency per window, and latency percentiles over the run.
//!
//! Latency is measured from the moment a record is handed to librdkafka to its delivery
//! report. The send time travels with the record as its delivery opaque (microseconds
//! since the producer started), so nothing is allocated per message.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Counters and the latency histogram, shared with the delivery callback.
#[derive(Debug)]
pub struct Stats {
    start: Instant,
    /// Messages handed to librdkafka (enqueued).
    pub sent: AtomicU64,
    /// Messages acknowledged by the broker.
    pub delivered: AtomicU64,
    /// Messages that failed (timed out, rejected).
    pub failed: AtomicU64,
    /// Of those, messages the broker may have written (sent, but not acknowledged).
    pub possibly_persisted: AtomicU64,
    /// Payload bytes delivered.
    pub bytes: AtomicU64,
    window: Mutex<Window>,
    /// Delivery latency of the whole run, in microseconds.
    histogram: Mutex<Histogram<u64>>,
}

#[derive(Debug, Default)]
struct Window {
    count: u64,
    sum_us: u64,
    max_us: u64,
}

/// Delivery latency percentiles of a run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Latency {
    /// Mean, in milliseconds.
    pub avg_ms: f64,
    /// Maximum, in milliseconds.
    pub max_ms: f64,
    /// Median, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile, in milliseconds.
    pub p95_ms: f64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile, in milliseconds.
    pub p999_ms: f64,
}

/// One progress window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowReport {
    /// Deliveries in the window.
    pub count: u64,
    /// Mean latency in the window, in milliseconds.
    pub avg_ms: f64,
    /// Maximum latency in the window, in milliseconds.
    pub max_ms: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    /// Empty statistics; latencies are measured from now on.
    pub fn new() -> Stats {
        Stats::starting_at(Instant::now())
    }

    fn starting_at(start: Instant) -> Stats {
        Stats {
            sent: AtomicU64::new(0),
            start,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            possibly_persisted: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            window: Mutex::new(Window::default()),
            // 1 µs to 1 hour at three significant digits: a few tens of kilobytes
            histogram: Mutex::new(
                // Invariant: constant, valid bounds.
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
        }
    }

    /// The opaque to send with a record: now, in microseconds since start.
    pub fn stamp(&self) -> usize {
        self.start.elapsed().as_micros() as usize
    }

    /// Records a delivery of `bytes` sent at `stamp`.
    pub fn delivered(&self, stamp: usize, bytes: usize) {
        let latency_us = (self.start.elapsed().as_micros() as u64)
            .saturating_sub(stamp as u64)
            .max(1);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            w.count += 1;
            w.sum_us += latency_us;
            w.max_us = w.max_us.max(latency_us);
        }
        let mut h = self.histogram.lock().unwrap_or_else(|e| e.into_inner());
        h.saturating_record(latency_us);
    }

    /// Records a failure; `possibly_persisted` when the broker may have written it.
    pub fn failed(&self, possibly_persisted: bool) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if possibly_persisted {
            self.possibly_persisted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the current window (and starts a new one).
    pub fn take_window(&self) -> WindowReport {
        let w = std::mem::take(&mut *self.window.lock().unwrap_or_else(|e| e.into_inner()));
        WindowReport {
            count: w.count,
            avg_ms: if w.count == 0 {
                0.0
            } else {
                w.sum_us as f64 / w.count as f64 / 1000.0
            },
            max_ms: w.max_us as f64 / 1000.0,
        }
    }

    /// Latency over the whole run.
    pub fn latency(&self) -> Latency {
        let h = self.histogram.lock().unwrap_or_else(|e| e.into_inner());
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            avg_ms: h.mean() / 1000.0,
            max_ms: ms(h.max()),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
        }
    }

    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_percentiles() {
        // started 10 s ago, so that stamps up to 1 s in the past exist
        let s = Stats::starting_at(Instant::now() - Duration::from_secs(10));
        let now = s.stamp();
        // fake send stamps 1..=1000 ms in the past
        for ms in 1..=1000usize {
            s.delivered(now.saturating_sub(ms * 1000), 100);
        }
        s.failed(true);
        s.failed(false);
        let w = s.take_window();
        assert_eq!(w.count, 1000);
        assert!((w.avg_ms - 500.5).abs() < 5.0, "{w:?}");
        assert!((w.max_ms - 1000.0).abs() < 5.0, "{w:?}");
        assert_eq!(s.take_window().count, 0, "a new window starts empty");
        let l = s.latency();
        assert!((l.p50_ms - 500.0).abs() < 5.0, "{l:?}");
        assert!((l.p99_ms - 990.0).abs() < 5.0, "{l:?}");
        assert!(l.p999_ms >= l.p99_ms && l.p99_ms >= l.p95_ms && l.p95_ms >= l.p50_ms);
        assert_eq!(s.delivered.load(Ordering::Relaxed), 1000);
        assert_eq!(s.failed.load(Ordering::Relaxed), 2);
        assert_eq!(s.possibly_persisted.load(Ordering::Relaxed), 1);
        assert_eq!(s.bytes.load(Ordering::Relaxed), 100_000);
    }
}
