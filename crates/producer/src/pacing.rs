//! Spacing of messages. With fixed arrivals message `i` is due at `start + i * period`, so a
//! late tick is caught up rather than lost and the long-run rate is exact; with Poisson
//! arrivals the gaps are exponential with the same mean (a memoryless stream, as
//! independent customers make), their sum likewise measured from `start`.

use std::time::Duration;

use rand::SeedableRng;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand_distr::Exp1;
use tokio::time::Instant;

use crate::config::{Arrivals, Pace};

/// Computes when each message is due.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    period: Option<Duration>,
    /// Messages sent since `start`.
    sent: u64,
    /// Poisson arrivals: the gaps' source and the next message's offset from `start`.
    poisson: Option<(StdRng, Duration)>,
}

impl Pacer {
    /// A pacer starting now; the first message is due at once. `seed` makes Poisson gaps
    /// repeat (their own stream, apart from the generator's).
    pub fn new(pace: Pace, arrivals: Arrivals, seed: Option<u64>) -> Pacer {
        let period = match pace {
            Pace::Interval(d) => Some(d),
            Pace::Rate(r) if r > 0.0 => Some(Duration::from_secs_f64(1.0 / r)),
            Pace::Rate(_) | Pace::Unlimited => None,
        };
        let poisson = (arrivals == Arrivals::Poisson && period.is_some()).then(|| {
            let rng = match seed {
                Some(s) => StdRng::seed_from_u64(s ^ ARRIVALS_STREAM),
                None => rand::make_rng(),
            };
            (rng, Duration::ZERO)
        });
        Pacer {
            start: Instant::now(),
            period,
            sent: 0,
            poisson,
        }
    }

    /// When the next message is due (`None`: now).
    pub fn next_due(&self) -> Option<Instant> {
        let period = self.period?;
        let due = match &self.poisson {
            Some((_, offset)) => self.start + *offset,
            None => self.start + period.mul_f64(self.sent as f64),
        };
        (due > Instant::now()).then_some(due)
    }

    /// Forgets time owed: the next message is due now and the pace goes on from here (after
    /// a wait that was not the pace's, such as connecting).
    pub fn resume(&mut self) {
        self.start = Instant::now();
        self.sent = 0;
        if let Some((_, offset)) = &mut self.poisson {
            *offset = Duration::ZERO;
        }
    }

    /// Records that one message went out.
    pub fn sent(&mut self) {
        self.sent += 1;
        if let (Some(period), Some((rng, offset))) = (self.period, &mut self.poisson) {
            let gap: f64 = Exp1.sample(rng);
            *offset += period.mul_f64(gap);
        }
    }
}

/// Mixed into the seed for the arrival gaps, so they are not the generator's draws.
const ARRIVALS_STREAM: u64 = 0x6172_7269_7661_6c73;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn interval_spaces_messages_and_catches_up() {
        let mut p = Pacer::new(
            Pace::Interval(Duration::from_secs(10)),
            Arrivals::Fixed,
            None,
        );
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
    async fn resume_forgets_the_time_owed() {
        for arrivals in [Arrivals::Fixed, Arrivals::Poisson] {
            let mut p = Pacer::new(Pace::Rate(1.0), arrivals, Some(3));
            p.sent();
            tokio::time::advance(Duration::from_secs(30)).await;
            assert_eq!(p.next_due(), None, "30 s late: due at once");
            p.resume();
            assert_eq!(p.next_due(), None, "the next at once");
            p.sent();
            let due = p.next_due().expect("then paced again");
            assert!(due > Instant::now(), "{arrivals:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rate_and_unlimited() {
        let mut p = Pacer::new(Pace::Rate(4.0), Arrivals::Fixed, None);
        p.sent();
        assert_eq!(p.next_due().unwrap() - p.start, Duration::from_millis(250));
        for arrivals in [Arrivals::Fixed, Arrivals::Poisson] {
            let mut u = Pacer::new(Pace::Unlimited, arrivals, Some(1));
            for _ in 0..1000 {
                u.sent();
                assert_eq!(u.next_due(), None);
            }
        }
        assert_eq!(
            Pacer::new(Pace::Rate(0.0), Arrivals::Fixed, None).period,
            None
        );
    }

    /// Poisson gaps: mean the period, spread like an exponential's (the coefficient of
    /// variation is 1, where fixed gaps have 0), the same for the same seed.
    #[tokio::test(start_paused = true)]
    async fn poisson_gaps_are_exponential_with_the_configured_mean() {
        let gaps = |seed| {
            let mut p = Pacer::new(Pace::Rate(10.0), Arrivals::Poisson, Some(seed));
            let mut last = Duration::ZERO;
            (0..20_000)
                .map(|_| {
                    p.sent();
                    let (_, offset) = p.poisson.as_ref().unwrap();
                    let gap = (*offset - last).as_secs_f64();
                    last = *offset;
                    gap
                })
                .collect::<Vec<f64>>()
        };
        let g = gaps(7);
        let n = g.len() as f64;
        let mean = g.iter().sum::<f64>() / n;
        let sd = (g.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        // the mean of 20,000 exponential gaps of mean 0.1 s: sd 0.1/sqrt(20000) = 0.0007
        assert!((mean - 0.1).abs() < 0.003, "mean gap {mean}");
        assert!(
            (sd / mean - 1.0).abs() < 0.05,
            "coefficient of variation {}",
            sd / mean
        );
        // a share of gaps under half the mean: 1 - e^-0.5 = 0.393 for an exponential
        let short = g.iter().filter(|&&x| x < 0.05).count() as f64 / n;
        assert!((short - 0.393).abs() < 0.015, "short gaps {short}");
        assert_eq!(g, gaps(7));
        assert_ne!(g, gaps(8));
    }
}
