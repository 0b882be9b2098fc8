//! The offsets table outside the batch transaction: loading the stored positions, and
//! the operator's reset. (A batch advances its offsets inside its own transaction, in
//! `write_batch`.)

use std::collections::HashMap;

use super::Store;
use crate::error::StoreError;

impl Store {
    /// The stored next offsets of `partitions` for `group` and `topic` (absent: none stored).
    ///
    /// # Errors
    /// [`StoreError`] of the query.
    pub async fn load_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, StoreError> {
        let sql = format!(
            "SELECT partition, next_offset FROM {} WHERE group_id = $1 AND topic = $2 AND partition = ANY($3)",
            self.names.offsets
        );
        self.bounded(async |client| {
            let rows = client.query(&sql, &[&group, &topic, &partitions]).await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
        .await
    }

    /// Sets the stored next offset of `group`'s `partitions` of `topic` (every one stored
    /// when empty) to `to`; returns how many rows changed.
    ///
    /// # Errors
    /// [`StoreError`] of the update.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
        to: i64,
    ) -> Result<Vec<i32>, StoreError> {
        let sql = format!(
            "UPDATE {} SET next_offset = $4, updated_at = now() \
             WHERE group_id = $1 AND topic = $2 AND (cardinality($3::int4[]) = 0 OR partition = ANY($3)) \
             RETURNING partition",
            self.names.offsets
        );
        self.bounded(async |client| {
            let tx = client.transaction().await?;
            let reset: Vec<i32> = tx
                .query(&sql, &[&group, &topic, &partitions, &to])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // all or nothing: a partition asked for and not stored undoes the rest
            if partitions.iter().all(|p| reset.contains(p)) {
                tx.commit().await?;
            }
            Ok(reset)
        })
        .await
    }
}
