//! What to send next, and when: live (the pacer's times, stamped with the wall clock) or a
//! backfill (the simulated clock, as fast as Kafka takes them), with the anomalies'
//! messages (held until their time) merged in either way.

use std::task::Poll;

use chrono::Utc;
use tokio::time::Instant;
use tracing::{info, warn};
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
    /// Looks for new users files, every so often.
    pub watch: Option<Watch>,
    /// Users of registration events.
    pub registrations: Option<tokio::sync::mpsc::Receiver<txn_model::Users>>,
    /// When registrations are taken next (at most once a second: each batch rebuilds the
    /// generator's draw over all users).
    pub registrations_next: Instant,
    /// Most anomaly messages held ([`MAX_HELD`]).
    pub max_held: usize,
    /// Whether the cap was reached (said once).
    pub capped: bool,
}

/// The users directory's watcher and when it looks next.
#[derive(Debug)]
pub struct Watch {
    /// The watcher.
    pub watcher: txn_model::users::Watcher,
    /// Time between two looks.
    pub every: std::time::Duration,
    /// The next look.
    pub next: Instant,
}

/// Most registrations taken between two messages.
const REGISTRATIONS_BATCH: usize = 50_000;

/// Most anomaly messages held live, about: past it, generation waits for the next to be
/// due (late messages are held minutes to hours; this bounds their memory to some 50 MB).
pub const MAX_HELD: usize = 100_000;

impl Live {
    /// A live stream of `generator`'s transactions at `pacer`'s times through `injector`,
    /// with no users added while it runs.
    pub fn new(generator: Generator, injector: Injector, pacer: Pacer) -> Live {
        Live {
            generator,
            injector,
            pacer,
            watch: None,
            registrations: None,
            registrations_next: Instant::now(),
            max_held: MAX_HELD,
            capped: false,
        }
    }

    /// Adds the users that came since the last message: new users files, registrations.
    fn take_new_users(&mut self) {
        // on the send path: one clock read for both
        let now = Instant::now();
        if let Some(w) = &mut self.watch
            && now >= w.next
        {
            w.next = now + w.every;
            let (users, errors) = w.watcher.rescan();
            for e in errors {
                warn!(event = "users", "{e}; the other users files are used");
            }
            if let Some(summary) = users.skipped_summary() {
                warn!("{summary}");
            }
            let added = self.generator.add_users(&users);
            if added > 0 {
                let files: Vec<String> = users
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect();
                info!(event = "users", added, users = self.generator.users(), files = %files.join(", "), "new users from the users directory");
            }
        }
        if let Some(rx) = &mut self.registrations
            && now >= self.registrations_next
        {
            self.registrations_next = now + std::time::Duration::from_secs(1);
            // one batch (the generator's pick is rebuilt once per batch), bounded so that
            // a backlog does not hold up sending
            let mut batch = txn_model::Users::default();
            while batch.ids.len() < REGISTRATIONS_BATCH
                && let Ok(users) = rx.try_recv()
            {
                batch.ids.extend(users.ids);
                batch.attributes.extend(users.attributes);
            }
            let added = self.generator.add_users(&batch);
            if added > 0 {
                info!(
                    event = "users",
                    added,
                    users = self.generator.users(),
                    "new users from registration events"
                );
            }
        }
    }
}

impl Source {
    /// Users the generator draws from.
    pub fn users(&self) -> usize {
        match self {
            Source::Live(live) => live.generator.users(),
            Source::Backfill(b) => b.users(),
        }
    }

    /// Live, the pace starts again from now (see [`Pacer::resume`]).
    pub fn resume(&mut self) {
        if let Source::Live(live) = self {
            live.pacer.resume();
        }
    }

    /// [`Source::next`], calling `alive` every 10 s while it waits: late messages can hold
    /// the next one back for long, and the send loop is then waiting, not stalled.
    pub async fn next_alive(&mut self, alive: &(dyn Fn() + Sync)) -> Option<Outgoing> {
        let mut next = std::pin::pin!(self.next());
        // most messages are due at once: no timer for them
        let first = std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await;
        if let Poll::Ready(out) = first {
            return out;
        }
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            tokio::select! {
                out = &mut next => return out,
                _ = tick.tick() => alive(),
            }
        }
    }

    /// The next message, once it is due (live: waits for it); `None` when a backfill is
    /// done.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits before it takes or makes a message.
    pub async fn next(&mut self) -> Option<Outgoing> {
        let live = match self {
            Source::Backfill(b) => return b.next(),
            Source::Live(live) => &mut **live,
        };
        loop {
            live.take_new_users();
            let Live {
                generator,
                injector,
                pacer,
                ..
            } = live;
            let ordinary = pacer.next_due();
            if let Some(held) = injector.next_due() {
                let now = Instant::now();
                let held_at = now + (held - Utc::now()).to_std().unwrap_or_default();
                let full = injector.held() >= live.max_held;
                if held_at <= ordinary.unwrap_or(now) || full {
                    if full && !live.capped {
                        live.capped = true;
                        warn!(
                            held = injector.held(),
                            "{} anomaly messages are held (late ones wait minutes to hours): new transactions now wait for held ones to fall due, so the rate drops; lower the late or duplicate rate",
                            live.max_held
                        );
                    }
                    if held_at > now {
                        tokio::time::sleep_until(held_at).await;
                        // time spent waiting for room is not owed as a burst afterwards
                        if full {
                            pacer.resume();
                        }
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
            // held (late): let the runtime run (a stop signal among it) before the next
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arrivals, Pace};
    use txn_model::anomaly::{Kind, Rates};

    fn live(rates: Rates, max_held: usize) -> Source {
        let users = (0..10).map(|i| uuid::Uuid::from_u128(0x77 + i)).collect();
        let mut live = Live::new(
            Generator::new(users, Some(1)).unwrap(),
            Injector::new(rates, txn_model::TxIds::V7, Some(1)),
            Pacer::new(Pace::Unlimited, Arrivals::Fixed, None),
        );
        live.max_held = max_held;
        Source::Live(Box::new(live))
    }

    fn held(source: &Source) -> usize {
        let Source::Live(live) = source else {
            unreachable!()
        };
        live.injector.held()
    }

    /// Every transaction made late (held a minute at least), at an unlimited pace and no
    /// cap: the source lets a stop signal in while it holds them (a loop that never
    /// yielded would hang here).
    #[tokio::test]
    async fn held_messages_do_not_block_a_stop() {
        let mut rates = Rates::default();
        rates.set(Kind::Late, 1.0);
        let mut source = live(rates, usize::MAX);
        let stop = tokio_util::sync::CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            stopper.cancel();
        });
        tokio::select! {
            _ = stop.cancelled() => {}
            out = source.next() => panic!("nothing is due yet: {out:?}"),
        }
        assert!(held(&source) > 0);
    }

    /// With the cap reached, the next message is the first held one, once it is due: the
    /// held messages stay within the cap (plus one transaction's episodes).
    #[tokio::test(start_paused = true)]
    async fn past_the_cap_the_held_ones_go_first() {
        let mut rates = Rates::default();
        rates.set(Kind::Late, 1.0);
        let mut source = live(rates, 50);
        for _ in 0..20 {
            let out = source.next().await.expect("a message");
            assert_eq!(out.label.map(|l| l.kind), Some(Kind::Late));
            assert!(held(&source) <= 50, "{}", held(&source));
        }
    }

    /// Without anomalies, each call makes one ordinary transaction at once.
    #[tokio::test]
    async fn ordinary_transactions_come_one_per_call() {
        let mut source = live(Rates::default(), MAX_HELD);
        for _ in 0..100 {
            let out = source.next_alive(&|| {}).await.unwrap();
            assert_eq!(out.label, None);
        }
    }
}
