//! What to send next, and when: live (the pacer's times, stamped with the wall clock) or a
//! backfill (the simulated clock, as fast as Kafka takes them), with the anomalies'
//! messages (held until their time) merged in either way.

use chrono::Utc;
use tokio::time::Instant;
use txn_model::Generator;
use txn_model::anomaly::{Injector, Outgoing};
use txn_model::backfill::Backfill;

use crate::pacing::Pacer;

/// The stream of messages to send.
#[derive(Debug)]
pub enum Source {
    /// Real time: ordinary transactions at the pacer's times, stamped now.
    Live(Box<Live>),
    /// A backfill's messages in send order.
    Backfill(Box<Backfill>),
}

/// What a live stream is made of.
#[derive(Debug)]
pub struct Live {
    /// Makes the transactions.
    pub generator: Generator,
    /// Adds the anomalies.
    pub injector: Injector,
    /// When each ordinary transaction is due.
    pub pacer: Pacer,
}

impl Source {
    /// The next message, once it is due (live: waits for it); `None` when a backfill is
    /// done.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits before it takes or makes a message.
    pub async fn next(&mut self) -> Option<Outgoing> {
        let Live {
            generator,
            injector,
            pacer,
        } = match self {
            Source::Backfill(b) => return b.next(),
            Source::Live(live) => &mut **live,
        };
        loop {
            let ordinary = pacer.next_due();
            if let Some(held) = injector.next_due() {
                let now = Instant::now();
                let held_at = now + (held - Utc::now()).to_std().unwrap_or_default();
                if held_at <= ordinary.unwrap_or(now) {
                    if held_at > now {
                        tokio::time::sleep_until(held_at).await;
                    }
                    return injector.pop();
                }
            }
            if let Some(due) = ordinary {
                tokio::time::sleep_until(due).await;
            }
            pacer.sent();
            if let Some(out) = injector.admit(generator.next_now()) {
                return Some(out);
            }
        }
    }
}
