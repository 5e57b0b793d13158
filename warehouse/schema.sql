-- The warehouse (Postgres 15 standing in for Redshift). Idempotent: safe to run on every load.
-- Written in the SQL both engines accept: no ON CONFLICT, no SERIAL, quoted-free simple names.
CREATE SCHEMA IF NOT EXISTS dw;

-- One row per event (order line). event_id is the key: the load MERGEs on it, so a file or an
-- event delivered twice never yields two rows. Redshift does not enforce PRIMARY KEY; the MERGE does.
CREATE TABLE IF NOT EXISTS dw.fact_sales_line (
    event_id      varchar(128)  NOT NULL PRIMARY KEY,
    invoice_no    varchar(32)   NOT NULL,
    stock_code    varchar(32)   NOT NULL,
    description   varchar(1000),
    quantity      integer       NOT NULL,
    unit_price    numeric(14,3) NOT NULL,
    invoice_ts    timestamp     NOT NULL,
    customer_id   bigint,
    country       varchar(64)   NOT NULL,
    source_file   varchar(512)  NOT NULL,
    loaded_at     timestamp     NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Every staging file loaded, written in the same transaction as its rows: exactly-once per file.
CREATE TABLE IF NOT EXISTS dw.load_manifest (
    file_key       varchar(512) NOT NULL PRIMARY KEY,
    etag           varchar(128),
    rows_in_file   integer      NOT NULL,
    rows_inserted  integer      NOT NULL,
    rows_updated   integer      NOT NULL,
    loaded_at      timestamp    NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- One row per ETL run, for `ecom status`.
CREATE TABLE IF NOT EXISTS dw.etl_run (
    run_id         varchar(64)  NOT NULL PRIMARY KEY,
    started_at     timestamp    NOT NULL,
    finished_at    timestamp,
    outcome        varchar(16)  NOT NULL,
    raw_objects    integer      NOT NULL DEFAULT 0,
    staging_files  integer      NOT NULL DEFAULT 0,
    files_loaded   integer      NOT NULL DEFAULT 0,
    rows_inserted  integer      NOT NULL DEFAULT 0,
    message        varchar(2000)
);
