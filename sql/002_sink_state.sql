-- The sink's own state, beside its table (the prefix follows the table name).
--
-- transactions_sink_offsets: each partition's next offset to read, per consumer group,
-- updated in the same transaction as the rows and dead letters of a batch, so "written"
-- and "offset advanced" can never part. The sink seeks to these offsets on assignment.
CREATE TABLE IF NOT EXISTS transactions_sink_offsets (
    group_id VARCHAR NOT NULL,
    topic VARCHAR NOT NULL,
    partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- transactions_sink_dead_letters: messages that cannot become rows, with the raw bytes,
-- where they came from and why (written in the same transaction as the offsets).
--   error_class: not_utf8 | invalid_json | schema | rejected | conflicting_duplicate | unstorable
--   (reason and field are sanitized text; kafka_timestamp is NULL when PostgreSQL cannot hold it)
CREATE TABLE IF NOT EXISTS transactions_sink_dead_letters (
    id BIGSERIAL PRIMARY KEY,
    group_id VARCHAR NOT NULL,
    topic VARCHAR NOT NULL,
    partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    kafka_timestamp TIMESTAMPTZ,
    message_key BYTEA,
    payload BYTEA,
    error_class VARCHAR(40) NOT NULL,
    field VARCHAR(100),
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    first_failed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_failed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    replayed_at TIMESTAMPTZ,
    UNIQUE (topic, partition, kafka_offset)
);
