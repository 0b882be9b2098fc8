//! Spacing of messages: message `i` is due at `start + i / rate`, so a late tick is caught
//! up rather than lost and the long-run rate is exact.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Pace;

/// Computes when each message is due.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    period: Option<Duration>,
    sent: u64,
}

impl Pacer {
    /// A pacer starting now; the first message is due at once.
    pub fn new(pace: Pace) -> Pacer {
        let period = match pace {
            Pace::Interval(d) => Some(d),
            Pace::Rate(r) if r > 0.0 => Some(Duration::from_secs_f64(1.0 / r)),
            Pace::Rate(_) | Pace::Unlimited => None,
        };
        Pacer {
            start: Instant::now(),
            period,
            sent: 0,
        }
    }

    /// When the next message is due (`None`: now).
    pub fn next_due(&self) -> Option<Instant> {
        let period = self.period?;
        let due = self.start + period.mul_f64(self.sent as f64);
        (due > Instant::now()).then_some(due)
    }

    /// Records that one message went out.
    pub fn sent(&mut self) {
        self.sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn interval_spaces_messages_and_catches_up() {
        let mut p = Pacer::new(Pace::Interval(Duration::from_secs(10)));
        assert_eq!(p.next_due(), None, "the first is due at once");
        p.sent();
        let due = p.next_due().unwrap();
        assert_eq!(due - p.start, Duration::from_secs(10));
        // late by 25 s: the two missed messages are due at once
        tokio::time::advance(Duration::from_secs(25)).await;
        assert_eq!(p.next_due(), None);
        p.sent();
        assert_eq!(p.next_due(), None);
        p.sent();
        assert_eq!(p.next_due().unwrap() - p.start, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_and_unlimited() {
        let mut p = Pacer::new(Pace::Rate(4.0));
        p.sent();
        assert_eq!(p.next_due().unwrap() - p.start, Duration::from_millis(250));
        let mut u = Pacer::new(Pace::Unlimited);
        for _ in 0..1000 {
            u.sent();
            assert_eq!(u.next_due(), None);
        }
        assert_eq!(Pacer::new(Pace::Rate(0.0)).period, None);
    }
}
