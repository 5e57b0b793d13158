-- The analyst-facing views, schema `analytics`. Recreated by `ensure_schema` whenever this file
-- changes (the schema comment holds its checksum), so the schema belongs to the pipeline: put
-- your own views elsewhere.
--
-- Definitions (the same everywhere):
--   revenue              = sum of quantity x unit_price over all lines unless a column says otherwise:
--                          cancellations (negative) and adjustments included, repeated source rows
--                          included (each is an event; exclude them with is_duplicate_row).
--   sales invoice        = an invoice that is neither a cancellation (C...) nor an adjustment (A...).
--   stock_code           = the product code, upper-cased (85099b and 85099B are one product).
--   real product         = dim_product.is_product (not POST, DOT, M, C2, D, S, BANK CHARGES, AMAZONFEE,
--                          CRUK, gift vouchers, B).
-- Views are Redshift SQL that Postgres also runs once the local Data API has translated it (only
-- DATEADD, in customer_rfm); the one change a Redshift version may need is noted inline (date arithmetic).
CREATE SCHEMA analytics;

-- Every line with its dimensions: the one table a BI tool needs for ad-hoc questions.
CREATE VIEW analytics.sales_line AS
SELECT f."event_id", f."invoice_no", f."invoice_ts", d."calendar_date" AS "invoice_date",
       d."month_label" AS "month", d."day_name", f."stock_code", f."product_code",
       p."description" AS "product_description", f."description" AS "line_description",
       p."product_type", p."is_product", f."quantity", f."unit_price", f."amount" AS "revenue",
       f."customer_id", f."is_guest", f."country", c."country_name", c."is_specific" AS "is_specific_country",
       f."is_cancellation", f."is_adjustment", f."is_zero_price", f."is_duplicate_row", f."source_file"
FROM dw."fact_sales_line" AS f
JOIN dw."dim_product" AS p ON p."product_code" = f."product_code"
JOIN dw."dim_date" AS d ON d."date_key" = f."date_key"
JOIN dw."dim_country" AS c ON c."country" = f."country";

-- Per product code, all codes (service codes included, see product_type).
CREATE VIEW analytics.product_sales AS
SELECT "product_code" AS "stock_code", "product_description" AS "description", "product_type", "is_product",
       SUM("quantity") AS "net_quantity",
       SUM("revenue") AS "revenue",
       SUM(CASE WHEN NOT "is_cancellation" AND "quantity" > 0 THEN "quantity" ELSE 0 END) AS "sold_quantity",
       -SUM(CASE WHEN "is_cancellation" THEN "quantity" ELSE 0 END) AS "cancelled_quantity",
       -- negative lines outside cancellations: stock write-offs ("damaged", "?"), price 0
       SUM(CASE WHEN NOT "is_cancellation" AND "quantity" < 0 THEN "quantity" ELSE 0 END) AS "written_off_quantity",
       COUNT(*) AS "lines",
       COUNT(DISTINCT "invoice_no") AS "invoices"
FROM analytics.sales_line
GROUP BY "product_code", "product_description", "product_type", "is_product";

-- "Which items had the most purchases": real products, net of cancellations and write-offs.
CREATE VIEW analytics.top_products AS
SELECT "stock_code", "description", "net_quantity", "revenue", "sold_quantity", "cancelled_quantity",
       "written_off_quantity", "lines", "invoices",
       ROW_NUMBER() OVER (ORDER BY "net_quantity" DESC, "stock_code") AS "quantity_rank",
       ROW_NUMBER() OVER (ORDER BY "revenue" DESC, "stock_code") AS "revenue_rank"
FROM analytics.product_sales
WHERE "is_product"
ORDER BY "quantity_rank";

-- The same over every code, for finance (postage, fees and vouchers are revenue too).
CREATE VIEW analytics.top_products_all_codes AS
SELECT "stock_code", "description", "product_type", "net_quantity", "revenue", "sold_quantity",
       "cancelled_quantity", "written_off_quantity", "lines", "invoices",
       ROW_NUMBER() OVER (ORDER BY "net_quantity" DESC, "stock_code") AS "quantity_rank",
       ROW_NUMBER() OVER (ORDER BY "revenue" DESC, "stock_code") AS "revenue_rank"
FROM analytics.product_sales
ORDER BY "revenue_rank";

-- revenue = sales_revenue + cancelled_revenue + adjustment_revenue.
CREATE VIEW analytics.revenue_by_month AS
SELECT "month",
       SUM("revenue") AS "revenue",
       SUM(CASE WHEN "is_product" THEN "revenue" ELSE 0 END) AS "product_revenue",
       SUM(CASE WHEN NOT "is_cancellation" AND NOT "is_adjustment" THEN "revenue" ELSE 0 END) AS "sales_revenue",
       SUM(CASE WHEN "is_cancellation" THEN "revenue" ELSE 0 END) AS "cancelled_revenue",
       SUM(CASE WHEN "is_adjustment" THEN "revenue" ELSE 0 END) AS "adjustment_revenue",
       SUM(CASE WHEN "is_duplicate_row" THEN 0 ELSE "revenue" END) AS "revenue_excluding_repeated_rows",
       COUNT(DISTINCT CASE WHEN NOT "is_cancellation" AND NOT "is_adjustment" THEN "invoice_no" END)
           AS "sales_invoices",
       COUNT(DISTINCT "customer_id") AS "customers",
       COUNT(*) AS "lines"
FROM analytics.sales_line
GROUP BY "month"
ORDER BY "month";

CREATE VIEW analytics.revenue_by_country AS
SELECT "country", "country_name",
       SUM("revenue") AS "revenue",
       SUM(CASE WHEN "is_guest" THEN "revenue" ELSE 0 END) AS "guest_revenue",
       COUNT(DISTINCT "customer_id") AS "customers",
       COUNT(DISTINCT CASE WHEN NOT "is_cancellation" AND NOT "is_adjustment" THEN "invoice_no" END)
           AS "sales_invoices",
       COUNT(*) AS "lines"
FROM analytics.sales_line
GROUP BY "country", "country_name"
ORDER BY "revenue" DESC, "country";

-- Cancellations carry no link to the invoice they cancel, so a month's rate compares the month's
-- cancellations with the month's sales (a December cancellation of a November sale counts in December).
CREATE VIEW analytics.cancellation_rate_by_month AS
SELECT "month", "sales_invoices", "cancellation_invoices",
       ROUND(CAST("cancellation_invoices" AS NUMERIC(18,6)) / NULLIF("sales_invoices", 0), 4)
           AS "invoice_cancellation_rate",
       "sold_revenue", "cancelled_revenue",
       ROUND("cancelled_revenue" / NULLIF("sold_revenue", 0), 4) AS "revenue_cancellation_rate"
FROM (SELECT "month",
             COUNT(DISTINCT CASE WHEN NOT "is_cancellation" AND NOT "is_adjustment" THEN "invoice_no" END)
                 AS "sales_invoices",
             COUNT(DISTINCT CASE WHEN "is_cancellation" THEN "invoice_no" END) AS "cancellation_invoices",
             SUM(CASE WHEN NOT "is_cancellation" AND NOT "is_adjustment" AND "quantity" > 0
                      THEN "revenue" ELSE 0 END) AS "sold_revenue",
             -SUM(CASE WHEN "is_cancellation" THEN "revenue" ELSE 0 END) AS "cancelled_revenue"
      FROM analytics.sales_line
      GROUP BY "month") AS m
ORDER BY "month";

-- Real products; the rate can exceed 1 when goods sold before the data starts are cancelled in it.
CREATE VIEW analytics.cancellation_rate_by_product AS
SELECT "stock_code", "description", "sold_quantity", "cancelled_quantity",
       ROUND(CAST("cancelled_quantity" AS NUMERIC(18,6)) / NULLIF("sold_quantity", 0), 4) AS "cancellation_rate",
       "lines"
FROM analytics.product_sales
WHERE "is_product"
ORDER BY "cancelled_quantity" DESC, "stock_code";

-- RFM per customer with an id. Recency counts days from the last purchase (a non-cancellation line)
-- to the reference date ("snapshot_date"), not to today: the data ends in 2011. frequency = sales
-- invoices; monetary = revenue net of the customer's cancellations. Scores 1-5 (5 = best) are
-- ceil(5 x cumulative share of customers at or below this value): equal values always get equal
-- scores, so a score can be empty when many customers tie (e.g. frequency 1). Customers with only
-- cancellations have no recency and rank as least recent.
-- The reference date is the latest calendar day that
--   (1) counts only lines not dated after the day they were loaded (loaded_at, the load's SYSDATE,
--       UTC) plus one day of grace, as invoice times are the shop's local time: a line dated in the
--       future of its own load is impossible, however many such lines there are (a 2099-12-31
--       batch), and
--   (2) has at least 1% as many such lines as the busiest day: one stray line (or a few) dated a
--       plausible day after the real data cannot move it either.
-- The plain last day in the data (MAX(invoice_ts)) let one line dated 2099-12-31 make every
-- customer "at risk". On the source file the rule changes nothing: every day has at least 279
-- lines, the busiest 5,331, and the last (2011-12-09) 1,632. On a live feed the date moves to a
-- new day once that day has 1% of the busiest day's lines.
-- Redshift: write DATEDIFF(day, last_purchase, snapshot) for the date subtraction.
CREATE VIEW analytics.customer_rfm AS
WITH "plausible_days" AS (
    SELECT CAST("invoice_ts" AS DATE) AS "day", COUNT(*) AS "lines"
    FROM dw."fact_sales_line"
    WHERE CAST("invoice_ts" AS DATE) <= CAST(DATEADD(day, 1, "loaded_at") AS DATE)
    GROUP BY CAST("invoice_ts" AS DATE)
), "snapshot" AS (
    SELECT MAX(p."day") AS "snapshot_date"
    FROM "plausible_days" AS p
    WHERE 100 * p."lines" >= (SELECT MAX(b."lines") FROM "plausible_days" AS b)
), "per_customer" AS (
    SELECT "customer_id",
           MIN(CASE WHEN NOT "is_cancellation" THEN "invoice_ts" END) AS "first_purchase_ts",
           MAX(CASE WHEN NOT "is_cancellation" THEN "invoice_ts" END) AS "last_purchase_ts",
           COUNT(DISTINCT CASE WHEN NOT "is_cancellation" THEN "invoice_no" END) AS "frequency",
           COUNT(DISTINCT CASE WHEN "is_cancellation" THEN "invoice_no" END) AS "cancellation_invoices",
           SUM("revenue") AS "monetary"
    FROM analytics.sales_line
    WHERE "customer_id" IS NOT NULL
    GROUP BY "customer_id"
), "scored" AS (
    SELECT c.*, s."snapshot_date" - CAST(c."last_purchase_ts" AS DATE) AS "recency_days",
           CAST(CEIL(5 * CUME_DIST() OVER (ORDER BY s."snapshot_date" - CAST(c."last_purchase_ts" AS DATE)
                                                    DESC NULLS FIRST)) AS INTEGER) AS "r_score",
           CAST(CEIL(5 * CUME_DIST() OVER (ORDER BY c."frequency")) AS INTEGER) AS "f_score",
           CAST(CEIL(5 * CUME_DIST() OVER (ORDER BY c."monetary")) AS INTEGER) AS "m_score",
           ROW_NUMBER() OVER (ORDER BY c."monetary" DESC, c."customer_id") AS "monetary_rank"
    FROM "per_customer" AS c CROSS JOIN "snapshot" AS s
)
SELECT x."customer_id", x."recency_days", x."frequency", x."monetary",
       x."r_score", x."f_score", x."m_score",
       CAST(x."r_score" AS VARCHAR(1)) || CAST(x."f_score" AS VARCHAR(1)) || CAST(x."m_score" AS VARCHAR(1))
           AS "rfm_cell",
       CASE WHEN x."r_score" >= 4 AND x."f_score" >= 4 AND x."m_score" >= 4 THEN 'champions'
            WHEN x."r_score" >= 3 AND x."f_score" >= 4 THEN 'loyal'
            WHEN x."r_score" >= 4 AND x."f_score" <= 2 THEN 'new or promising'
            WHEN x."r_score" <= 2 AND x."f_score" >= 3 THEN 'at risk'
            WHEN x."r_score" <= 2 THEN 'hibernating'
            ELSE 'needs attention' END AS "segment",
       x."monetary_rank", d."country", x."first_purchase_ts", x."last_purchase_ts", x."cancellation_invoices"
FROM "scored" AS x
JOIN dw."dim_customer" AS d ON d."customer_id" = x."customer_id"
ORDER BY x."monetary_rank";

CREATE VIEW analytics.rfm_segments AS
SELECT "segment", COUNT(*) AS "customers", SUM("monetary") AS "monetary",
       ROUND(AVG(CAST("recency_days" AS NUMERIC(18,6))), 1) AS "avg_recency_days",
       ROUND(AVG(CAST("frequency" AS NUMERIC(18,6))), 2) AS "avg_frequency"
FROM analytics.customer_rfm
GROUP BY "segment"
ORDER BY "monetary" DESC, "segment";

-- Lines per sales invoice, bucketed (empty buckets shown with 0).
CREATE VIEW analytics.invoice_size_distribution AS
WITH "invoices" AS (
    SELECT "invoice_no", COUNT(*) AS "lines", SUM("revenue") AS "revenue"
    FROM analytics.sales_line
    WHERE NOT "is_cancellation" AND NOT "is_adjustment"
    GROUP BY "invoice_no"
), "buckets" AS (
    -- UNION ALL rather than a VALUES list: Redshift has no VALUES table constructor.
    SELECT 1 AS "bucket_order", CAST('1' AS VARCHAR(8)) AS "size_bucket", 1 AS "min_lines",
           CAST(1 AS INTEGER) AS "max_lines"
    UNION ALL SELECT 2, '2-5', 2, 5
    UNION ALL SELECT 3, '6-10', 6, 10
    UNION ALL SELECT 4, '11-20', 11, 20
    UNION ALL SELECT 5, '21-50', 21, 50
    UNION ALL SELECT 6, '51-100', 51, 100
    UNION ALL SELECT 7, '101-200', 101, 200
    UNION ALL SELECT 8, '201-500', 201, 500
    UNION ALL SELECT 9, '501+', 501, CAST(NULL AS INTEGER)
)
SELECT b."bucket_order", b."size_bucket", b."min_lines", b."max_lines",
       COUNT(i."invoice_no") AS "invoices",
       COALESCE(SUM(i."revenue"), 0) AS "revenue",
       ROUND(CAST(COUNT(i."invoice_no") AS NUMERIC(18,6))
             / NULLIF((SELECT COUNT(*) FROM "invoices"), 0), 4) AS "share_of_invoices"
FROM "buckets" AS b
LEFT JOIN "invoices" AS i
  ON i."lines" >= b."min_lines" AND (b."max_lines" IS NULL OR i."lines" <= b."max_lines")
GROUP BY b."bucket_order", b."size_bucket", b."min_lines", b."max_lines"
ORDER BY b."bucket_order";

-- How much of the data each trap covers: what an analyst should know before trusting a total.
CREATE VIEW analytics.data_quality AS
SELECT "measure_order", "measure", "lines", "revenue" FROM (
    SELECT 1 AS "measure_order", 'all lines' AS "measure", COUNT(*) AS "lines", COALESCE(SUM("amount"), 0) AS "revenue"
    FROM dw."fact_sales_line"
    UNION ALL SELECT 2, 'cancellation lines (C invoices)', COUNT(*), COALESCE(SUM("amount"), 0)
    FROM dw."fact_sales_line" WHERE "is_cancellation"
    UNION ALL SELECT 3, 'adjustment lines (A invoices)', COUNT(*), COALESCE(SUM("amount"), 0)
    FROM dw."fact_sales_line" WHERE "is_adjustment"
    UNION ALL SELECT 4, 'guest lines (no customer id)', COUNT(*), COALESCE(SUM("amount"), 0)
    FROM dw."fact_sales_line" WHERE "is_guest"
    UNION ALL SELECT 5, 'zero-price lines', COUNT(*), COALESCE(SUM("amount"), 0)
    FROM dw."fact_sales_line" WHERE "is_zero_price"
    UNION ALL SELECT 6, 'zero-price lines with a customer', COUNT(*), COALESCE(SUM("amount"), 0)
    FROM dw."fact_sales_line" WHERE "is_zero_price" AND NOT "is_guest"
    UNION ALL SELECT 7, 'negative quantity outside cancellations (write-offs)', COUNT(*), COALESCE(SUM("amount"), 0)
    FROM dw."fact_sales_line" WHERE NOT "is_cancellation" AND "quantity" < 0
    UNION ALL SELECT 8, 'repeated source rows (is_duplicate_row)', COUNT(*), COALESCE(SUM("amount"), 0)
    FROM dw."fact_sales_line" WHERE "is_duplicate_row"
    UNION ALL SELECT 9, 'service-code lines (not a real product)', COUNT(*), COALESCE(SUM(f."amount"), 0)
    FROM dw."fact_sales_line" AS f JOIN dw."dim_product" AS p ON p."product_code" = f."product_code"
    WHERE NOT p."is_product"
    UNION ALL SELECT 10, 'lower-case stock codes', COUNT(*), COALESCE(SUM("amount"), 0)
    FROM dw."fact_sales_line" WHERE "stock_code" <> "product_code"
    UNION ALL SELECT 11, 'missing description', COUNT(*), COALESCE(SUM("amount"), 0)
    FROM dw."fact_sales_line" WHERE "description" IS NULL
    UNION ALL SELECT 12, 'description with leading or trailing spaces', COUNT(*), COALESCE(SUM("amount"), 0)
    FROM dw."fact_sales_line" WHERE "description" <> BTRIM("description")
    UNION ALL SELECT 13, 'country Unspecified or European Community', COUNT(*), COALESCE(SUM(f."amount"), 0)
    FROM dw."fact_sales_line" AS f JOIN dw."dim_country" AS c ON c."country" = f."country"
    WHERE NOT c."is_specific"
) AS q
ORDER BY "measure_order";
