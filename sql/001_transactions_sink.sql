-- The sink's table: the seed's columns and types, plus three documented extra columns
-- that keep the rest of each message (nullable, so a table created by the seed's own
-- DDL is upgraded in place). Applied by the sink at start-up (with the table name it is
-- configured for) and mounted as an init script into the compose PostgreSQL.
-- tx_id compares bytewise (COLLATE "C"): a UUID's text has no linguistic order, and a
-- linguistic default collation (en_US.utf8, as in the compose image and most managed
-- services) makes the primary key's inserts dearer: ICU en-US took 16-60 % more of
-- PostgreSQL's CPU per row (docs/SCALING.md). The type is still the seed's VARCHAR.
CREATE TABLE IF NOT EXISTS transactions_sink (
    tx_id VARCHAR COLLATE "C" PRIMARY KEY,
    user_id VARCHAR NOT NULL,
    amount DECIMAL(10,2) NOT NULL,
    currency VARCHAR(3) NOT NULL,
    merchant VARCHAR(255) NOT NULL,
    category VARCHAR(100) NOT NULL,
    timestamp TIMESTAMP NOT NULL,
    ingested_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

ALTER TABLE transactions_sink ADD COLUMN IF NOT EXISTS source_system VARCHAR(50);
ALTER TABLE transactions_sink ADD COLUMN IF NOT EXISTS transaction_type VARCHAR(50);
ALTER TABLE transactions_sink ADD COLUMN IF NOT EXISTS processing_time_ms INTEGER;
