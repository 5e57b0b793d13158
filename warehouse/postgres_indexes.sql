-- Postgres-only physical tuning, applied after schema.sql by ensure_schema. Redshift has no indexes:
-- there, SORTKEY("invoice_no", "invoice_ts") on the fact table plays this role (docs/warehouse.md).

-- Each load re-evaluates the repeated-row flags of the (invoice_no, stock_code, invoice_ts) groups
-- its file touches; without this every file scans the whole fact table (100 s of a 150 s full load).
CREATE INDEX IF NOT EXISTS fact_sales_line_row_group ON dw.fact_sales_line (invoice_no, stock_code, invoice_ts);
