//! What the sink says while rows flow: at low rates one line per stored message (like the
//! producer's per-message line), under load one summary every few seconds. The loop
//! records each committed batch; a window that nothing follows is flushed when due.

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use crate::message::Message;
use crate::store::Written;

/// How often a summary is written under load.
pub const EVERY: Duration = Duration::from_secs(5);

/// The counts since the last line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Window {
    messages: u64,
    inserted: u64,
    duplicates: u64,
    dead_letters: u64,
    batches: u64,
    /// The window's only message, while it has only one: tx_id (when valid), partition, offset.
    single: Option<(Option<String>, i32, i64)>,
}

/// One line to log.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A lone message was written (or parked).
    One {
        /// Its `tx_id`, when it decoded.
        tx_id: Option<String>,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// `stored`, `duplicate` or `dead letter`.
        outcome: &'static str,
    },
    /// A summary of several messages.
    Summary {
        /// Messages accounted for in the window.
        messages: u64,
        /// The window's length.
        secs: f64,
        /// Rows newly inserted.
        inserted: u64,
        /// Redeliveries of stored rows.
        duplicates: u64,
        /// Messages parked.
        dead_letters: u64,
        /// Transactions committed.
        batches: u64,
        /// Messages accounted for since start.
        total: u64,
    },
}

impl Line {
    /// Logs the line at INFO (`event` = `outcome` or `progress`; in JSON logs the fields
    /// are what a reader should rely on).
    pub fn log(&self) {
        match self {
            Line::One {
                tx_id,
                partition,
                offset,
                outcome,
            } => {
                let tx_id = tx_id.as_deref().unwrap_or("-");
                info!(
                    event = "outcome",
                    outcome, tx_id, partition, offset, "{outcome}"
                );
            }
            Line::Summary {
                messages,
                secs,
                inserted,
                duplicates,
                dead_letters,
                batches,
                total,
            } => info!(
                event = "progress",
                messages,
                secs,
                inserted,
                duplicates,
                dead_letters,
                batches,
                total,
                "{messages} messages in {secs:.1} s ({:.0} messages/s)",
                *messages as f64 / secs.max(0.001)
            ),
        }
    }
}

/// The sink's progress reporting.
#[derive(Debug)]
pub struct Progress {
    every: Duration,
    /// When the last line was written (or the window started, after a quiet spell).
    last: Instant,
    window: Window,
    total: u64,
}

impl Progress {
    /// Starts reporting at `now`, a summary at most every `every`.
    pub fn new(every: Duration, now: Instant) -> Progress {
        Progress {
            every,
            last: now,
            window: Window::default(),
            total: 0,
        }
    }

    /// Records a committed batch; returns the line to log, if one is due.
    pub fn record(&mut self, now: Instant, messages: &[Message], w: &Written) -> Option<Line> {
        let n = messages.len() as u64;
        if n == 0 {
            return None;
        }
        self.window.single = match (self.window.messages, messages) {
            (0, [m]) => Some((
                m.decoded.as_ref().ok().map(|t| t.tx_id.to_string()),
                m.partition,
                m.offset,
            )),
            _ => None,
        };
        self.window.messages += n;
        self.window.inserted += w.inserted;
        self.window.duplicates += w.duplicates;
        self.window.dead_letters += w.dead_letters;
        self.window.batches += 1;
        self.total += n;
        if now.duration_since(self.last) >= self.every {
            self.take(now)
        } else {
            None
        }
    }

    /// When the window in hand should be written if nothing else comes (`None`: empty).
    pub fn due(&self) -> Option<Instant> {
        (self.window.messages > 0).then(|| self.last + self.every)
    }

    /// Writes out the window in hand, if any.
    pub fn take(&mut self, now: Instant) -> Option<Line> {
        let w = std::mem::take(&mut self.window);
        let secs = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        match w {
            Window { messages: 0, .. } => None,
            Window {
                single: Some((tx_id, partition, offset)),
                inserted,
                dead_letters,
                ..
            } => Some(Line::One {
                tx_id,
                partition,
                offset,
                outcome: if inserted == 1 {
                    "stored"
                } else if dead_letters == 1 {
                    "dead letter"
                } else {
                    "duplicate"
                },
            }),
            w => Some(Line::Summary {
                messages: w.messages,
                secs,
                inserted: w.inserted,
                duplicates: w.duplicates,
                dead_letters: w.dead_letters,
                batches: w.batches,
                total: self.total,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use txn_model::Transaction;

    fn message(offset: i64, payload: &[u8]) -> Message {
        Message {
            received: 0,
            partition: 2,
            offset,
            key: None,
            payload: payload.to_vec(),
            timestamp_ms: None,
            decoded: Transaction::from_json(payload),
        }
    }

    fn written(inserted: u64, dead_letters: u64) -> Written {
        Written {
            inserted,
            dead_letters,
            ..Written::default()
        }
    }

    #[test]
    fn a_lone_message_after_a_quiet_spell_gets_its_own_line_at_once() {
        let t0 = Instant::now();
        let mut p = Progress::new(EVERY, t0);
        let line = p.record(
            t0 + Duration::from_secs(10),
            &[message(41, b"{}")],
            &written(0, 1),
        );
        assert_eq!(
            line,
            Some(Line::One {
                tx_id: None,
                partition: 2,
                offset: 41,
                outcome: "dead letter"
            })
        );
        assert_eq!(p.due(), None, "nothing left in hand");
    }

    #[test]
    fn under_load_batches_are_summed_every_interval_and_flushed_when_quiet() {
        let t0 = Instant::now();
        let mut p = Progress::new(EVERY, t0);
        // the first batch after start is due at once
        let batch: Vec<Message> = (0..100).map(|o| message(o, b"{}")).collect();
        let first = p.record(t0 + EVERY, &batch, &written(100, 0));
        assert!(
            matches!(first, Some(Line::Summary { messages: 100, .. })),
            "{first:?}"
        );
        // then batches within the interval are held...
        let t1 = t0 + EVERY;
        for i in 1..=4 {
            let at = t1 + Duration::from_secs(i);
            assert_eq!(p.record(at, &batch, &written(90, 10)), None);
        }
        // ...and written once it has passed, with the window's sums and the running total
        let at = t1 + EVERY;
        assert_eq!(
            p.record(at, &batch, &written(100, 0)),
            Some(Line::Summary {
                messages: 500,
                secs: 5.0,
                inserted: 460,
                duplicates: 0,
                dead_letters: 40,
                batches: 5,
                total: 600
            })
        );
        // a window that nothing follows is due one interval after the last line
        assert_eq!(
            p.record(at + Duration::from_secs(1), &batch, &written(100, 0)),
            None
        );
        assert_eq!(p.due(), Some(at + EVERY));
        assert!(matches!(
            p.take(at + EVERY),
            Some(Line::Summary {
                messages: 100,
                total: 700,
                ..
            })
        ));
        assert_eq!(p.due(), None);
    }
}
