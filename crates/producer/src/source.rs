//! What to send next, and when: live (the pacer's times, stamped with the wall clock) or a
//! backfill (the simulated clock, as fast as Kafka takes them), with the anomalies'
//! messages (held until their time) merged in either way.

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

impl Live {
    /// Adds the users that came since the last message: new users files, registrations.
    fn take_new_users(&mut self) {
        if let Some(w) = &mut self.watch
            && Instant::now() >= w.next
        {
            w.next = Instant::now() + w.every;
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
        if let Some(rx) = &mut self.registrations {
            let mut added = 0;
            while let Ok(users) = rx.try_recv() {
                added += self.generator.add_users(&users);
            }
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
