//! The store's transaction rules, driven directly against the real PostgreSQL.

use pipeline_tests::*;
use sink::store::{Message, OffsetAdvance, Outcome, Store};
use txn_model::Transaction;

fn messages(partition: i32, first_offset: i64, txs: &[Transaction]) -> Vec<Message> {
    txs.iter()
        .enumerate()
        .map(|(i, t)| Message {
            received: i as u64,
            partition,
            offset: first_offset + i as i64,
            key: Some(t.user_id.as_bytes().to_vec()),
            payload: t.to_json(),
            timestamp_ms: Some(t.timestamp.timestamp_millis()),
            decoded: Ok(t.clone()),
        })
        .collect()
}

#[tokio::test]
async fn a_stale_owner_rolls_back_instead_of_writing() -> anyhow::Result<()> {
    let stack = stack();
    let table = unique("sink_stale");
    let store = Store::connect(&stack.pg, &table).await?;
    let db = pg(&stack).await?;
    let mut generator =
        txn_model::Generator::new(txn_model::load_users(&users_dir())?.ids, Some(1))?;
    let txs: Vec<Transaction> = (0..10).map(|_| generator.next_now()).collect();
    let (group, topic) = ("g", "t");

    // owner A writes offsets 0..5 of partition 0: nothing stored yet, so it expects none
    let first = messages(0, 0, &txs[..5]);
    let advance = |expected, next| {
        [OffsetAdvance {
            partition: 0,
            expected,
            next,
        }]
    };
    assert!(matches!(
        store
            .write_batch(group, topic, &first, &advance(None, 5))
            .await?,
        Outcome::Committed(_)
    ));

    // a stale owner that still believes nothing is stored (or that 0..5 is next) is refused,
    // and its rows are not written
    let second = messages(0, 5, &txs[5..]);
    assert_eq!(
        store
            .write_batch(group, topic, &second, &advance(None, 10))
            .await?,
        Outcome::Stale(vec![0])
    );
    assert_eq!(
        store
            .write_batch(group, topic, &second, &advance(Some(3), 10))
            .await?,
        Outcome::Stale(vec![0])
    );
    assert_eq!(count_rows(&db, &table).await?, 5);

    // the owner that knows the stored offset goes on
    assert!(matches!(
        store
            .write_batch(group, topic, &second, &advance(Some(5), 10))
            .await?,
        Outcome::Committed(_)
    ));
    assert_eq!(count_rows(&db, &table).await?, 10);
    assert_eq!(
        store.load_offsets(group, topic, &[0, 1]).await?,
        [(0, 10)].into_iter().collect()
    );
    // another group keeps its own positions
    assert!(store.load_offsets("other", topic, &[0]).await?.is_empty());
    drop_tables(&db, &table).await
}

#[tokio::test]
async fn rows_dead_letters_and_offsets_commit_together() -> anyhow::Result<()> {
    let stack = stack();
    let table = unique("sink_atomic");
    let store = Store::connect(&stack.pg, &table).await?;
    let db = pg(&stack).await?;
    let mut generator =
        txn_model::Generator::new(txn_model::load_users(&users_dir())?.ids, Some(2))?;
    let txs: Vec<Transaction> = (0..4).map(|_| generator.next_now()).collect();
    let mut batch = messages(2, 100, &txs);
    batch[1].payload = b"garbage".to_vec();
    batch[1].decoded = Transaction::from_json(b"garbage");
    let advance = [OffsetAdvance {
        partition: 2,
        expected: None,
        next: 104,
    }];

    // a concurrent lock on the dead-letter table makes the batch fail half-way: nothing of it
    // may remain, neither rows nor offsets
    let mut locker = pg(&stack).await?;
    let lock = locker.transaction().await?;
    lock.batch_execute(&format!(
        "LOCK TABLE {table}_dead_letters IN ACCESS EXCLUSIVE MODE"
    ))
    .await?;
    let write = store.write_batch("g", "t", &batch, &advance);
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(500), write)
        .await
        .is_err();
    assert!(timed_out, "the write waits on the dead-letter table");
    // the half-done batch shows nothing: no rows, no offsets
    assert_eq!(count_rows(&db, &table).await?, 0);
    let offsets: i64 = db
        .query_one(&format!("SELECT count(*) FROM {table}_offsets"), &[])
        .await?
        .get(0);
    assert_eq!(offsets, 0);
    lock.rollback().await?;
    // (the abandoned write's transaction is rolled back when its connection is reused or dropped)
    let outcome = store.write_batch("g", "t", &batch, &advance).await?;
    let Outcome::Committed(w) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((w.inserted, w.dead_letters), (3, 1));
    assert_eq!(count_rows(&db, &table).await?, 3);
    assert_eq!(
        store.load_offsets("g", "t", &[2]).await?,
        [(2, 104)].into_iter().collect()
    );
    let parked: i64 = db
        .query_one(
            &format!("SELECT kafka_offset FROM {table}_dead_letters"),
            &[],
        )
        .await?
        .get(0);
    assert_eq!(parked, 101);
    drop_tables(&db, &table).await
}
