//! The planner: which messages of a batch to write, how far each partition's stored offset
//! advances, and where to seek. Pure (no Kafka, no database), so every rule has a unit test.

use std::collections::{BTreeMap, HashMap};

use crate::message::Message;
use crate::store::OffsetAdvance;

/// Where a partition stands, as far as this sink knows.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Position {
    /// The stored next offset (`None`: nothing stored yet for this group).
    pub(super) next: Option<i64>,
    /// The offset last sought to, so that a seek is issued once.
    pub(super) sought: Option<i64>,
}

/// The smallest gap below the stored offset the consumer is sent across (see [`plan`]).
pub(super) const SEEK_AHEAD_MIN: i64 = 1000;

/// A seek [`plan`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seek {
    pub(super) partition: i32,
    pub(super) offset: i64,
    /// Ahead, past messages already stored (an optimisation: they are filtered anyway);
    /// otherwise back, to the stored offset the consumer is past (required).
    pub(super) ahead: bool,
}

/// What to do with a batch.
#[derive(Debug)]
pub(super) struct Plan {
    /// Messages to write, in order.
    pub(super) accepted: Vec<Message>,
    /// The offset advance of each partition in `accepted`.
    pub(super) advances: Vec<OffsetAdvance>,
    /// Seeks to make (at most one per partition).
    pub(super) seeks: Vec<Seek>,
    /// Partitions whose stored offset (the second) the consumer was found behind, once
    /// per loaded position: to check against the log end.
    pub(super) behind: Vec<(i32, i64)>,
    /// Messages left out because they are already stored.
    pub(super) skipped: u64,
}

/// Keeps the messages at or after each partition's stored position and computes the
/// offset advances; pure, but for recording in `positions` the offsets it asks to seek.
///
/// - A message below the stored offset is already stored: skipped. The consumer is sent
///   ahead to the stored offset only across a gap of [`SEEK_AHEAD_MIN`] or more and when
///   nothing of the partition is accepted in this batch: a seek makes librdkafka fetch
///   again from its target, so a seek to an offset this batch also accepts from would
///   bring those messages back, skipped below the next stored offset, and so on for
///   ever (a seek per batch: the scale-out test showed hundreds). Small gaps are filtered.
/// - When a partition's first message lies beyond the stored offset and no seek there
///   was made yet, the consumer is ahead of what is stored (the broker's committed offset
///   ran ahead of the database): it is sent back, and the partition's messages of this
///   batch are dropped (fetched again after the seek).
/// - After a seek back, a first message beyond the stored offset is accepted: the offsets
///   in between do not exist any more (retention, compaction, transaction markers).
/// - Without a stored offset, every message is accepted.
pub(super) fn plan(positions: &mut HashMap<i32, Position>, batch: Vec<Message>) -> Plan {
    let mut cursor: HashMap<i32, Option<i64>> = HashMap::new();
    let mut dropping: Vec<i32> = Vec::new();
    let mut accepted = Vec::with_capacity(batch.len());
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    let mut seeks = Vec::new();
    let mut behind = Vec::new();
    let mut skipped = 0;
    for m in batch {
        if dropping.contains(&m.partition) {
            continue;
        }
        let pos = positions.entry(m.partition).or_default();
        let first_of_partition = !cursor.contains_key(&m.partition);
        let expected = *cursor.entry(m.partition).or_insert(pos.next);
        match expected {
            Some(n) if m.offset < n => {
                skipped += 1;
                if pos.sought != Some(n) {
                    pos.sought = Some(n);
                    behind.push((m.partition, n));
                    if n - m.offset >= SEEK_AHEAD_MIN {
                        seeks.push(Seek {
                            partition: m.partition,
                            offset: n,
                            ahead: true,
                        });
                    }
                }
                continue;
            }
            Some(n) if m.offset > n && first_of_partition && pos.sought != Some(n) => {
                pos.sought = Some(n);
                seeks.push(Seek {
                    partition: m.partition,
                    offset: n,
                    ahead: false,
                });
                dropping.push(m.partition);
                continue;
            }
            _ => {}
        }
        cursor.insert(m.partition, Some(m.offset + 1));
        last.insert(m.partition, m.offset);
        accepted.push(m);
    }
    // not ahead where this batch accepts messages (see above)
    seeks.retain(|s| !s.ahead || !last.contains_key(&s.partition));
    // a partition sent back has nothing accepted (its messages were dropped)
    let advances = last
        .into_iter()
        .map(|(partition, offset)| OffsetAdvance {
            partition,
            expected: positions.get(&partition).and_then(|p| p.next),
            next: offset + 1,
        })
        .collect();
    Plan {
        accepted,
        advances,
        seeks,
        behind,
        skipped,
    }
}

/// After a stale write (the stored offsets of `parts` moved past the batch: another sink
/// advanced them, or this sink's own commit landed though its answer was lost): forgets
/// their positions (reloaded, and sought, with their next message) and returns the batch
/// without their messages, to be written again for the other partitions.
pub(super) fn forget_stale_write(
    positions: &mut HashMap<i32, Position>,
    batch: Vec<Message>,
    parts: &[i32],
) -> Vec<Message> {
    for p in parts {
        positions.remove(p);
    }
    batch
        .into_iter()
        .filter(|m| !parts.contains(&m.partition))
        .collect()
}

/// After a seek of a plan (`done`: librdkafka took it). A seek that worked clears its
/// retry. A failed seek back forgets the partition's position, so its next message reloads
/// it and seeks again (a later message is never accepted past the gap), and is retried
/// (`reseek`; a quiet partition has no next message). A failed seek ahead is only a lost
/// optimisation: the messages below the stored offset are filtered anyway.
pub(super) fn sought(
    positions: &mut HashMap<i32, Position>,
    reseek: &mut HashMap<i32, i64>,
    seek: &Seek,
    done: bool,
) {
    if done {
        reseek.remove(&seek.partition);
    } else if !seek.ahead {
        positions.remove(&seek.partition);
        reseek.insert(seek.partition, seek.offset);
    }
}

/// After the log-end check of a stored offset the consumer was behind (`known`: the log
/// end could be read; past it the sink stops instead). When it could not be read, the
/// position is forgotten, so the partition's next message loads it and checks again (its
/// messages below the stored offset stay filtered).
pub(super) fn log_end_checked(positions: &mut HashMap<i32, Position>, partition: i32, known: bool) {
    if !known {
        positions.remove(&partition);
    }
}

/// The part of a batch one writer commits: the messages of some partitions and those
/// partitions' offset advances, in one transaction.
#[derive(Debug, Default)]
pub(super) struct Share {
    pub(super) messages: Vec<Message>,
    pub(super) advances: Vec<OffsetAdvance>,
}

/// Fewest messages worth a writer of their own: below this a batch is not split (a lone
/// message, a trickle), since each share costs a transaction.
pub(super) const SPLIT_AT_LEAST: usize = 256;

/// Splits a planned batch into at most `writers` shares that can commit concurrently:
/// every partition's messages (in order) and its advance go to one share, so each
/// partition's rows and stored offset stay in one transaction. Partitions go, largest
/// first, to the share holding the fewest messages; there are at most one share per
/// [`SPLIT_AT_LEAST`] messages (a batch under twice that is not split).
pub(super) fn split(
    accepted: Vec<Message>,
    advances: Vec<OffsetAdvance>,
    writers: usize,
) -> Vec<Share> {
    let mut by_partition: BTreeMap<i32, Vec<Message>> = BTreeMap::new();
    for m in accepted {
        by_partition.entry(m.partition).or_default().push(m);
    }
    let total: usize = by_partition.values().map(Vec::len).sum();
    let ways = writers
        .min(by_partition.len())
        .min(total / SPLIT_AT_LEAST)
        .max(1);
    let mut shares: Vec<Share> = (0..ways).map(|_| Share::default()).collect();
    let mut partitions: Vec<(i32, Vec<Message>)> = by_partition.into_iter().collect();
    partitions.sort_by_key(|(p, ms)| (std::cmp::Reverse(ms.len()), *p));
    let mut home: HashMap<i32, usize> = HashMap::new();
    for (p, ms) in partitions {
        let i = (0..ways)
            .min_by_key(|&i| (shares[i].messages.len(), i))
            .unwrap_or(0);
        shares[i].messages.extend(ms);
        home.insert(p, i);
    }
    for a in advances {
        let i = home.get(&a.partition).copied().unwrap_or(0);
        shares[i].advances.push(a);
    }
    shares.retain(|s| !s.messages.is_empty() || !s.advances.is_empty());
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(partition: i32, offset: i64) -> Message {
        Message::at(partition, offset, None)
    }

    fn accepted_at(plan: &Plan) -> Vec<(i32, i64)> {
        plan.accepted
            .iter()
            .map(|m| (m.partition, m.offset))
            .collect()
    }

    fn stored(next: Option<i64>) -> Position {
        Position { next, sought: None }
    }

    #[test]
    fn plan_without_a_stored_offset_accepts_everything() {
        let mut positions = HashMap::from([(0, stored(None))]);
        let plan = plan(&mut positions, vec![msg(0, 5), msg(0, 6)]);
        assert_eq!(accepted_at(&plan), [(0, 5), (0, 6)]);
        assert_eq!(
            plan.advances,
            [OffsetAdvance {
                partition: 0,
                expected: None,
                next: 7
            }]
        );
        assert!(plan.seeks.is_empty());
    }

    #[test]
    fn plan_skips_what_is_stored_and_seeks_ahead_only_across_a_large_gap_once() {
        let far = 10 + SEEK_AHEAD_MIN;
        let mut positions = HashMap::from([(1, stored(Some(far))), (2, stored(Some(far)))]);
        let plan1 = plan(
            &mut positions,
            vec![msg(1, 7), msg(1, 8), msg(2, 9), msg(2, far)],
        );
        assert_eq!(accepted_at(&plan1), [(2, far)]);
        assert_eq!(plan1.skipped, 3);
        // partition 2 accepts from `far` in this batch: a seek there would fetch it again
        assert_eq!(
            plan1.seeks,
            [Seek {
                partition: 1,
                offset: far,
                ahead: true
            }]
        );
        assert_eq!(
            plan1.behind,
            [(1, far), (2, far)],
            "both checked against the log end"
        );
        // a small gap is filtered, not sought across; checked once
        let mut near = HashMap::from([(3, stored(Some(10)))]);
        let plan_near = plan(&mut near, vec![msg(3, 7)]);
        assert!(plan_near.seeks.is_empty());
        assert_eq!(plan_near.behind, [(3, 10)]);
        assert!(plan(&mut near, vec![msg(3, 8)]).behind.is_empty());
        let far = 10;
        positions.insert(1, stored(Some(far)));
        positions.get_mut(&1).unwrap().sought = Some(far);
        // the same position again: no second seek; from 10 on, accepted
        let plan2 = plan(&mut positions, vec![msg(1, 9), msg(1, 10), msg(1, 11)]);
        assert!(plan2.seeks.is_empty() && plan2.behind.is_empty());
        assert_eq!(plan2.skipped, 1);
        assert_eq!(accepted_at(&plan2), [(1, 10), (1, 11)]);
        assert_eq!(
            plan2.advances,
            [OffsetAdvance {
                partition: 1,
                expected: Some(10),
                next: 12
            }]
        );
    }

    #[test]
    fn plan_sends_a_consumer_ahead_of_the_stored_offset_back_and_drops_its_messages() {
        let mut positions = HashMap::from([(0, stored(Some(10))), (2, stored(Some(3)))]);
        let plan1 = plan(&mut positions, vec![msg(0, 15), msg(2, 3), msg(0, 16)]);
        assert_eq!(
            accepted_at(&plan1),
            [(2, 3)],
            "partition 0 dropped, 2 untouched"
        );
        assert_eq!(
            plan1.seeks,
            [Seek {
                partition: 0,
                offset: 10,
                ahead: false
            }]
        );
        assert_eq!(plan1.advances.len(), 1);
        // after the seek back, a first message past 10 means 10.. no longer exist
        let plan2 = plan(&mut positions, vec![msg(0, 12)]);
        assert_eq!(accepted_at(&plan2), [(0, 12)]);
        assert!(plan2.seeks.is_empty());
        assert_eq!(plan2.advances[0].expected, Some(10));
    }

    #[test]
    fn a_position_forgotten_after_a_failed_seek_back_is_sought_again_never_skipped() {
        let mut positions = HashMap::from([(0, stored(Some(10)))]);
        let plan1 = plan(&mut positions, vec![msg(0, 15)]);
        assert_eq!(plan1.seeks.len(), 1);
        let mut kept = positions.clone();
        assert_eq!(
            accepted_at(&plan(&mut kept, vec![msg(0, 16)])),
            [(0, 16)],
            "a position kept after a failed seek would accept 16, past the gap 10..15"
        );
        // the seek failed: the position is forgotten, and reloaded (10, not sought)
        // before the next batch, so a message past the gap is not accepted
        let mut reseek = HashMap::new();
        sought(&mut positions, &mut reseek, &plan1.seeks[0], false);
        assert!(!positions.contains_key(&0));
        positions.insert(0, stored(Some(10)));
        let plan2 = plan(&mut positions, vec![msg(0, 16)]);
        assert!(plan2.accepted.is_empty());
        assert_eq!(
            plan2.seeks,
            [Seek {
                partition: 0,
                offset: 10,
                ahead: false
            }]
        );
    }

    #[test]
    fn seek_results_forget_positions_only_where_a_gap_could_be_skipped() {
        let back = Seek {
            partition: 0,
            offset: 10,
            ahead: false,
        };
        let ahead = Seek {
            partition: 1,
            offset: 5000,
            ahead: true,
        };
        let mut positions = HashMap::from([(0, stored(Some(10))), (1, stored(Some(5000)))]);
        let mut reseek = HashMap::from([(2, 7)]);
        // failed: the seek back forgets and is retried; the seek ahead changes nothing
        sought(&mut positions, &mut reseek, &back, false);
        sought(&mut positions, &mut reseek, &ahead, false);
        assert!(!positions.contains_key(&0) && positions.contains_key(&1));
        assert_eq!(reseek, HashMap::from([(0, 10), (2, 7)]));
        // retried and done: the retry is cleared
        sought(&mut positions, &mut reseek, &back, true);
        assert_eq!(reseek, HashMap::from([(2, 7)]));
        // a log end that could not be read forgets the position; a known one keeps it
        log_end_checked(&mut positions, 1, true);
        assert!(positions.contains_key(&1));
        log_end_checked(&mut positions, 1, false);
        assert!(!positions.contains_key(&1));
    }

    #[test]
    fn a_gap_after_the_first_message_of_a_batch_is_accepted() {
        // offsets that do not exist (compaction, transaction markers) inside a batch are
        // not a consumer ahead of the database: only the first message is compared with
        // the stored offset
        let mut positions = HashMap::from([(0, stored(Some(10)))]);
        let plan = plan(&mut positions, vec![msg(0, 10), msg(0, 11), msg(0, 15)]);
        assert_eq!(accepted_at(&plan), [(0, 10), (0, 11), (0, 15)]);
        assert!(plan.seeks.is_empty());
        assert_eq!(plan.advances[0].next, 16);
    }

    #[test]
    fn a_stale_write_forgets_its_partitions_and_keeps_the_others_messages() {
        let mut positions = HashMap::from([(0, stored(Some(10))), (1, stored(Some(20)))]);
        let first = plan(&mut positions, vec![msg(0, 10), msg(1, 20), msg(0, 11)]);
        let again = forget_stale_write(&mut positions, first.accepted, &[0]);
        let at: Vec<(i32, i64)> = again.iter().map(|m| (m.partition, m.offset)).collect();
        assert_eq!(at, [(1, 20)]);
        assert!(!positions.contains_key(&0), "partition 0 is reloaded");
        assert_eq!(
            positions[&1].next,
            Some(20),
            "partition 1 keeps its position"
        );
        // written again, partition 1 advances from where it was
        let second = plan(&mut positions, again);
        assert_eq!(accepted_at(&second), [(1, 20)]);
        assert_eq!(second.advances[0].expected, Some(20));
        assert_eq!(second.advances[0].next, 21);
    }

    #[test]
    fn a_batch_splits_by_partition_into_balanced_shares_each_with_its_advances() {
        let mut batch = Vec::new();
        for (p, n) in [(0, 600), (1, 100), (2, 500), (3, 400)] {
            for o in 0..n {
                batch.push(msg(p, o));
            }
        }
        let advances: Vec<OffsetAdvance> = (0..4)
            .map(|p| OffsetAdvance {
                partition: p,
                expected: None,
                next: 1,
            })
            .collect();
        let shares = split(batch.clone(), advances.clone(), 2);
        assert_eq!(shares.len(), 2);
        for share in &shares {
            let parts: std::collections::BTreeSet<i32> =
                share.messages.iter().map(|m| m.partition).collect();
            let advanced: std::collections::BTreeSet<i32> =
                share.advances.iter().map(|a| a.partition).collect();
            // a partition's rows and its offset travel together
            assert_eq!(parts, advanced);
            // and in order
            for p in parts {
                let offsets: Vec<i64> = share
                    .messages
                    .iter()
                    .filter(|m| m.partition == p)
                    .map(|m| m.offset)
                    .collect();
                assert!(offsets.windows(2).all(|w| w[0] < w[1]));
            }
        }
        // 600 + 100 against 500 + 400: as even as whole partitions allow
        let mut sizes: Vec<usize> = shares.iter().map(|s| s.messages.len()).collect();
        sizes.sort();
        assert_eq!(sizes, [700, 900]);
        // every message is in exactly one share
        assert_eq!(sizes.iter().sum::<usize>(), batch.len());
        // more writers than partitions: one share per partition
        assert_eq!(split(batch.clone(), advances.clone(), 8).len(), 4);
        // one writer, or a small batch: not split
        assert_eq!(split(batch.clone(), advances.clone(), 1).len(), 1);
        let small: Vec<Message> = (0..4).map(|p| msg(p, 0)).collect();
        assert_eq!(split(small, advances.clone(), 4).len(), 1);
        // an advance without messages (a partition whose batch was all skipped) still
        // lands in a share
        let shares = split(Vec::new(), advances, 2);
        assert_eq!(shares.iter().map(|s| s.advances.len()).sum::<usize>(), 4);
    }
}
