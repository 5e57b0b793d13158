-- The warehouse, in the SQL Redshift runs (locally the stack's Redshift Data API runs it on Postgres).
-- Idempotent: safe to run on every load. No ON CONFLICT, no SERIAL, quoted-free simple names.
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
    loaded_at     timestamp     NOT NULL DEFAULT CURRENT_TIMESTAMP,
    -- Derived by the load from the columns above (etl/load.py), so analysts never re-derive them.
    product_code     varchar(32)   NOT NULL,  -- upper(stock_code): 85099b and 85099B are one product
    date_key         integer       NOT NULL,  -- YYYYMMDD of invoice_ts -> dw.dim_date
    amount           numeric(18,3) NOT NULL,  -- quantity * unit_price (exact: price has 3 decimals)
    is_cancellation  boolean       NOT NULL,  -- invoice_no C...: negative quantity, its own invoice
    is_adjustment    boolean       NOT NULL,  -- invoice_no A...: bad-debt adjustment, price may be negative
    is_guest         boolean       NOT NULL,  -- no customer_id
    is_zero_price    boolean       NOT NULL,  -- unit_price = 0 (write-offs, free samples)
    -- True for the 2nd+ event whose 8 source fields equal an earlier one's (a repeated source row).
    -- Kept because each source row is its own event; recomputed by every load for the groups it touches.
    is_duplicate_row boolean       NOT NULL DEFAULT FALSE
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

-- Rows a staging file held that the warehouse refuses (a NUL in text, an amount beyond numeric(18,3),
-- a malformed number or date: records that never passed the API's rules, e.g. another producer or an
-- old version), set aside with the reason, like Redshift's STL_LOAD_ERRORS. Written in the same
-- transaction as the file's good rows and its manifest entry; `ecom dlq list` shows them and
-- `ecom reconcile` counts them as quarantined. raw_line is JSON with non-ASCII escaped, so any
-- bytes can be kept.
CREATE TABLE IF NOT EXISTS dw.load_rejects (
    file_key     varchar(512)   NOT NULL,
    line_no      integer        NOT NULL,  -- line in the staging CSV (the header is line 1; 0: the whole file)
    event_id     varchar(256),
    reason       varchar(1000)  NOT NULL,
    raw_line     varchar(65535),
    rejected_at  timestamp      NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (file_key, line_no)
);

-- The ETL lease (warehouse/lease.py): at most one run at a time, scheduled or manual. A run that
-- dies stops renewing it; the first tick after expires_at takes over.
CREATE TABLE IF NOT EXISTS dw.etl_lease (
    name            varchar(64)   NOT NULL PRIMARY KEY,
    holder          varchar(128),
    acquired_at     timestamp     NOT NULL,
    expires_at      timestamp     NOT NULL
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

-- Dimensions: natural keys (no sequences: MERGE on the key is exactly-once on both engines), upserted
-- by the same transaction as the facts, so a fact never points at a missing dimension row.

-- One row per product code, case-insensitive. description = the most recent non-empty description,
-- preferring lines with a positive price (a later write-off note like "damaged" or "?" is not a name);
-- ties broken by the later invoice_ts, then the greater text. description_rank/description_ts keep
-- that choice order-independent: files may load in any order.
CREATE TABLE IF NOT EXISTS dw.dim_product (
    product_code      varchar(32)   NOT NULL PRIMARY KEY,
    description       varchar(1000),
    description_rank  smallint      NOT NULL,  -- 2: priced line, 1: unpriced line, 0: no description seen
    description_ts    timestamp     NOT NULL,
    product_type      varchar(32)   NOT NULL,  -- product, postage, manual, discount, samples, fee, gift_voucher, adjustment
    is_product        boolean       NOT NULL,  -- false for service codes (POST, DOT, M, C2, D, S, BANK CHARGES, ...)
    first_seen_ts     timestamp     NOT NULL,
    last_seen_ts      timestamp     NOT NULL
);

-- Customers with an id (guest lines have none and no row here). country = the one on the customer's
-- latest line (ties: the greater name): 8 customers appear under two countries.
CREATE TABLE IF NOT EXISTS dw.dim_customer (
    customer_id       bigint        NOT NULL PRIMARY KEY,
    country           varchar(64)   NOT NULL,
    first_invoice_ts  timestamp     NOT NULL,
    last_invoice_ts   timestamp     NOT NULL
);

-- Countries as the source spells them (the fact's key), with a readable name for charts.
CREATE TABLE IF NOT EXISTS dw.dim_country (
    country           varchar(64)   NOT NULL PRIMARY KEY,
    country_name      varchar(64)   NOT NULL,  -- EIRE -> Ireland, RSA -> South Africa, USA -> United States
    is_specific       boolean       NOT NULL   -- false for Unspecified and European Community
);

-- Days that have sales lines (sparse: a calendar generator is engine-specific; BI tools fill gaps).
CREATE TABLE IF NOT EXISTS dw.dim_date (
    date_key          integer       NOT NULL PRIMARY KEY,  -- YYYYMMDD
    calendar_date     date          NOT NULL,
    year              smallint      NOT NULL,
    quarter           smallint      NOT NULL,
    month             smallint      NOT NULL,
    month_label       varchar(7)    NOT NULL,  -- YYYY-MM
    day_of_month      smallint      NOT NULL,
    day_of_week       smallint      NOT NULL,  -- 0 = Sunday .. 6 = Saturday
    day_name          varchar(3)    NOT NULL,
    is_weekend        boolean       NOT NULL
);

-- Which version of each part of the schema the warehouse holds: the checksum of analytics.sql its
-- views were made from (warehouse/schema.py re-creates them when the file changes, not every run).
CREATE TABLE IF NOT EXISTS dw.schema_version (
    part        varchar(32)   NOT NULL PRIMARY KEY,
    checksum    varchar(64)   NOT NULL,
    applied_at  timestamp     NOT NULL DEFAULT CURRENT_TIMESTAMP
);
