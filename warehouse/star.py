"""The star schema's load-time SQL: derived fact columns, duplicate flags and dimension upserts.

Runs inside the load's per-file transaction (etl/load.py), after COPY into the raw staging table, so
facts, flags, dimensions and the manifest commit together or not at all.

Everything here is written for Postgres 15 *and* Redshift:
- MERGE sources are tables (Redshift rejects a subquery or CTE as the MERGE source), so each step
  first materialises its source as a temporary table;
- every MERGE has both WHEN MATCHED and WHEN NOT MATCHED (Redshift requires the pair) and no extra
  conditions on them (Redshift has none): "should this row change?" is decided while building the
  source, which therefore holds only rows that really change something;
- no ON CONFLICT, sequences, IS DISTINCT FROM, FILTER, ::casts or LIKE patterns (psycopg2 would read
  their % as a parameter marker); the target is named, not aliased (Redshift has no target alias).
String comparisons (tie-breaks) are byte order: the embedded cluster is initialised with locale C,
which is also how Redshift compares.
"""

from __future__ import annotations

from typing import Any, Protocol

from ecom_core.contract import WAREHOUSE_COLUMNS


class Cursor(Protocol):
    """What the statements need of a cursor: a DB-API cursor (psycopg2's) or warehouse.recorder's
    RecordingCursor, which the ETL job uses (no driver ships in its zip)."""

    def execute(self, sql: str, params: Any = None, /) -> None: ...

    @property
    def rowcount(self) -> int: ...


FACT = 'dw."fact_sales_line"'
STAGE_FACT = "stage_fact"  # the file's events, deduplicated by event_id, with derived columns
TOUCHED_KEYS = "stage_touched_keys"  # (invoice_no, stock_code, invoice_ts) whose duplicate flags may change
SEEN_INVOICES = "stage_seen_invoices"  # the staged invoices the warehouse already has lines of
REPEATED_EVENTS = "stage_repeated_events"  # event ids the raw stage holds more than once

SOURCE_COLUMNS = list(WAREHOUSE_COLUMNS)  # the staging CSV contract, in its order
# Derived from the source columns of the same row; the fact table declares them in this order.
DERIVED_COLUMNS: dict[str, str] = {
    "product_code": 'UPPER("stock_code")',
    "date_key": "CAST(TO_CHAR(\"invoice_ts\", 'YYYYMMDD') AS INTEGER)",
    "amount": 'CAST("quantity" * "unit_price" AS NUMERIC(18,3))',
    "is_cancellation": "(LEFT(\"invoice_no\", 1) = 'C')",
    "is_adjustment": "(LEFT(\"invoice_no\", 1) = 'A')",
    "is_guest": '("customer_id" IS NULL)',
    "is_zero_price": '("unit_price" = 0)',
}
# Their types as declared in schema.sql (used to add them to a fact table created before them).
DERIVED_COLUMN_TYPES: dict[str, str] = {
    "product_code": "varchar(32)",
    "date_key": "integer",
    "amount": "numeric(18,3)",
    "is_cancellation": "boolean",
    "is_adjustment": "boolean",
    "is_guest": "boolean",
    "is_zero_price": "boolean",
    "is_duplicate_row": "boolean DEFAULT FALSE",
}
# The eight fields of a source row: equal on all eight = a repeated source row.
ROW_FIELDS = [
    "invoice_no",
    "stock_code",
    "description",
    "quantity",
    "invoice_ts",
    "unit_price",
    "customer_id",
    "country",
]
# The coarser key the duplicate flags are refreshed by (the fact table's row-group index on Postgres,
# its sort key on Redshift): rows equal on all eight fields are equal on these three.
ROW_GROUP_KEY = ["invoice_no", "stock_code", "invoice_ts"]

# Codes that are not merchandise (PROFILE.md): postage, manual entries, fees, vouchers, bad debt.
# Keyed on the upper-cased code, so the one lower-case "m" is a manual line too.
PRODUCT_TYPE_SQL = """CASE
        WHEN "product_code" IN ('POST', 'DOT', 'C2') THEN 'postage'
        WHEN "product_code" = 'M' THEN 'manual'
        WHEN "product_code" = 'D' THEN 'discount'
        WHEN "product_code" = 'S' THEN 'samples'
        WHEN "product_code" IN ('BANK CHARGES', 'AMAZONFEE', 'CRUK') THEN 'fee'
        WHEN "product_code" = 'B' THEN 'adjustment'
        WHEN LEFT("product_code", 5) = 'GIFT_' THEN 'gift_voucher'
        ELSE 'product' END"""

COUNTRY_NAME_SQL = """CASE "country"
        WHEN 'EIRE' THEN 'Ireland'
        WHEN 'RSA' THEN 'South Africa'
        WHEN 'USA' THEN 'United States'
        ELSE "country" END"""
NOT_A_COUNTRY = ("Unspecified", "European Community")


def _q(names: list[str], prefix: str = "") -> str:
    return ", ".join(f'{prefix}"{n}"' for n in names)


def _same(names: list[str], left: str, right: str) -> str:
    """`left` and `right` equal on every column of `names` (a join or EXISTS condition)."""
    return " AND ".join(f'{left}."{n}" = {right}."{n}"' for n in names)


def _temp_table(cur: Cursor, name: str, select_sql: str, params: dict | None = None) -> None:
    cur.execute(f"DROP TABLE IF EXISTS {name}")
    cur.execute(f"CREATE TEMPORARY TABLE {name} AS {select_sql}", params)


def _merge(cur: Cursor, target: str, target_name: str, source: str, key: str, columns: list[str]) -> int:
    updates = ", ".join(f'"{c}" = s."{c}"' for c in columns if c != key)
    cur.execute(f"""
        MERGE INTO {target} USING {source} AS s ON {target_name}."{key}" = s."{key}"
        WHEN MATCHED THEN UPDATE SET {updates}
        WHEN NOT MATCHED THEN INSERT ({_q(columns)}) VALUES ({_q(columns, "s.")})""")
    return cur.rowcount


def stage_facts(cur: Cursor, raw_stage: str, files_table: str) -> None:
    """raw_stage (as COPYed, rows tagged with "file_no") -> STAGE_FACT: one row per event_id (the
    highest file number wins, as if the files had loaded one after another), its source file's key
    from files_table ("file_no", "file_key"), derived columns added, and whether the warehouse
    already has the event ("is_new"; then also its stored invoice_no/stock_code/invoice_ts).

    One look-up of each event in the fact table, here: the fact write, the per-file statistics
    and the duplicate-flag keys below all read "is_new" instead of probing the table again.

    Events repeated inside or across the files (a redelivered batch) are the same event: one row
    is kept. They are found first by hashing the event ids (REPEATED_EVENTS, usually empty), and
    only their rows are ranked; every other row passes as it is. Ranking every row instead (a
    window over the whole group) sorted all of the group's wide rows and buffered each partition:
    the largest statement of the load after the fact INSERT (docs/performance.md)."""
    derived = ", ".join(f'{expr} AS "{name}"' for name, expr in DERIVED_COLUMNS.items())
    stored = ", ".join(f't."{c}" AS "stored_{c}"' for c in ROW_GROUP_KEY)
    _temp_table(
        cur,
        REPEATED_EVENTS,
        f"""
        SELECT "event_id", MIN("file_no") AS "first_file_no"
        FROM {raw_stage} GROUP BY "event_id" HAVING COUNT(*) > 1""",
    )
    cur.execute(f"ANALYZE {REPEATED_EVENTS}")
    # "first_file_no": the first file of the group that has the event (it is counted new there).
    one_row_per_event = f"""
        SELECT {_q(SOURCE_COLUMNS)}, "file_no", "file_no" AS "first_file_no" FROM {raw_stage} AS d
        WHERE NOT EXISTS (SELECT 1 FROM {REPEATED_EVENTS} AS r WHERE r."event_id" = d."event_id")
        UNION ALL
        SELECT {_q(SOURCE_COLUMNS)}, "file_no", "first_file_no"
        FROM (SELECT {_q(SOURCE_COLUMNS, "d.")}, d."file_no", r."first_file_no",
                     ROW_NUMBER() OVER (PARTITION BY d."event_id" ORDER BY d."file_no" DESC) AS "rn"
              FROM {raw_stage} AS d JOIN {REPEATED_EVENTS} AS r ON r."event_id" = d."event_id") AS ranked
        WHERE "rn" = 1"""
    _temp_table(
        cur,
        STAGE_FACT,
        f"""
        SELECT s.*, (t."event_id" IS NULL) AS "is_new", {stored}
        FROM (SELECT {_q(SOURCE_COLUMNS, "d.")}, CAST(f."file_key" AS VARCHAR(512)) AS "source_file", {derived},
                     d."first_file_no"
              FROM ({one_row_per_event}) AS d
              JOIN {files_table} AS f ON f."file_no" = d."file_no") AS s
        LEFT JOIN {FACT} AS t ON t."event_id" = s."event_id\"""",
    )
    touched_keys(cur)


def touched_keys(cur: Cursor) -> None:
    """TOUCHED_KEYS: the (invoice_no, stock_code, invoice_ts) keys whose duplicate flags the staged
    events can change, recorded *before* the fact write. A flag changes only where a group gains or
    loses a member next to another one, so only keys that
    - occur more than once among the staged events, or
    - are already in the warehouse under another event, or
    - belong to an event the warehouse already has (its stored key: the group it may leave, and
      its staged key: the group it may join, where it may now be alone and must be unflagged).
    A staged event alone on its key everywhere is inserted unflagged, which is already right: on
    the full file that is almost every event, so the flags are recomputed for a few keys per file
    instead of every key the file touches (docs/performance.md). The warehouse is asked per
    invoice first (a file's ~20 lines per invoice, and an invoice is rarely in two files), then
    per key only for the invoices it already has.

    Those invoices are a table of their own, analysed: the planner then knows how few there are
    (usually none) and probes the fact table's row-group index per staged line of them. Asked in
    one statement it guessed ~half the staged lines and merge-joined them with the whole fact
    table, sorted: a cost per group that grew with the warehouse (0.2 s of a 50,000-line group at
    140,000 rows, sorting all of them)."""
    key = _q(ROW_GROUP_KEY)
    _temp_table(
        cur,
        SEEN_INVOICES,
        f"""
        SELECT "invoice_no" FROM (SELECT DISTINCT "invoice_no" FROM {STAGE_FACT}) AS i
        WHERE EXISTS (SELECT 1 FROM {FACT} AS t WHERE t."invoice_no" = i."invoice_no")""",
    )
    cur.execute(f"ANALYZE {SEEN_INVOICES}")
    _temp_table(
        cur,
        TOUCHED_KEYS,
        f"""
        SELECT {key} FROM {STAGE_FACT} GROUP BY {key} HAVING COUNT(*) > 1
        UNION
        SELECT {_q(ROW_GROUP_KEY, "s.")} FROM {STAGE_FACT} AS s
        JOIN {SEEN_INVOICES} AS seen ON seen."invoice_no" = s."invoice_no"
        WHERE EXISTS (SELECT 1 FROM {FACT} AS t WHERE {_same(ROW_GROUP_KEY, "t", "s")} AND t."event_id" <> s."event_id")
        UNION
        SELECT {key} FROM {STAGE_FACT} WHERE NOT "is_new"
        UNION
        SELECT {_q(["stored_" + c for c in ROW_GROUP_KEY])} FROM {STAGE_FACT} WHERE NOT "is_new\"""",
    )


FACT_WRITE_COLUMNS = SOURCE_COLUMNS + ["source_file"] + list(DERIVED_COLUMNS)


def write_facts(cur: Cursor) -> tuple[int, int]:
    """The staged events into the fact table: the ones it has are updated (the last delivery wins),
    the others inserted. Returns (inserted, updated).

    An UPDATE of the few present events and a plain INSERT of the new ones instead of one MERGE:
    stage_facts already knows which is which, and the INSERT skips MERGE's join of every staged
    event against the fact table (the same two statements run on Redshift).
    is_duplicate_row is left to refresh_duplicate_flags (its default covers the insert).

    Then the fact table is analysed on the columns the load joins it by, in the transaction that
    wrote the rows, so the next statements and the next group plan with its real size. On Postgres
    (the local stack) an automatic ANALYZE that ran while a group's rows were uncommitted recorded
    0 rows for all of the table's pages; the duplicate flags and the next group's invoice look-up
    then nested-looped every fact row over every key (26-188 s instead of 0.1 s in load-alone runs,
    docs/performance.md). Redshift skips the ANALYZE of a table less than 10 % of which changed
    (analyze_threshold_percent), and recommends one after a load."""
    updates = ", ".join(f'"{c}" = s."{c}"' for c in FACT_WRITE_COLUMNS if c != "event_id")
    cur.execute(f"""
        UPDATE {FACT} SET {updates}
        FROM {STAGE_FACT} AS s
        WHERE "fact_sales_line"."event_id" = s."event_id" AND NOT s."is_new\"""")
    updated = cur.rowcount
    cur.execute(f"""
        INSERT INTO {FACT} ({_q(FACT_WRITE_COLUMNS)})
        SELECT {_q(FACT_WRITE_COLUMNS)} FROM {STAGE_FACT} WHERE "is_new\"""")
    inserted = cur.rowcount
    cur.execute(f"ANALYZE {FACT} ({_q(['event_id', *ROW_GROUP_KEY])})")
    return inserted, updated


def refresh_duplicate_flags(cur: Cursor) -> int:
    """Recompute is_duplicate_row for every group of identical source rows this file touched.

    Within a group the 2nd+ event by event_id is flagged. The members are identical in all eight
    fields, so which one stays unflagged changes no number, and ordering by event_id makes the
    choice a function of the set of events, not of the order files arrive in. Returns rows changed."""
    partition = _q(ROW_FIELDS, "f.")
    _temp_table(
        cur,
        "stage_duplicate_flags",
        f"""
        SELECT f."event_id",
               (ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY f."event_id") > 1) AS "is_duplicate_row"
        FROM {FACT} AS f
        JOIN {TOUCHED_KEYS} AS k ON {_same(ROW_GROUP_KEY, "f", "k")}""",
    )
    cur.execute(f"""
        UPDATE {FACT} SET "is_duplicate_row" = d."is_duplicate_row"
        FROM stage_duplicate_flags AS d
        WHERE "fact_sales_line"."event_id" = d."event_id"
          AND "fact_sales_line"."is_duplicate_row" <> d."is_duplicate_row\"""")
    return cur.rowcount


def upsert_dimensions(cur: Cursor, source: str = STAGE_FACT) -> dict[str, int]:
    """Insert or update the dimension rows the facts in `source` need. Returns rows changed per table.

    Each dimension attribute that depends on more than one fact ("most recent", "first seen") is
    kept as a max/min over a total order, so the result is the same whatever order files load in."""
    changed = {}

    # Dates: attributes are a function of the day; only days not yet present.
    _temp_table(
        cur,
        "stage_dim_date",
        f"""
        SELECT "date_key", "calendar_date",
               CAST(EXTRACT(YEAR FROM "calendar_date") AS SMALLINT) AS "year",
               CAST(EXTRACT(QUARTER FROM "calendar_date") AS SMALLINT) AS "quarter",
               CAST(EXTRACT(MONTH FROM "calendar_date") AS SMALLINT) AS "month",
               CAST(TO_CHAR("calendar_date", 'YYYY-MM') AS VARCHAR(7)) AS "month_label",
               CAST(EXTRACT(DAY FROM "calendar_date") AS SMALLINT) AS "day_of_month",
               CAST(EXTRACT(DOW FROM "calendar_date") AS SMALLINT) AS "day_of_week",
               CAST(TO_CHAR("calendar_date", 'Dy') AS VARCHAR(3)) AS "day_name",
               (EXTRACT(DOW FROM "calendar_date") IN (0, 6)) AS "is_weekend"
        FROM (SELECT DISTINCT "date_key", CAST("invoice_ts" AS DATE) AS "calendar_date" FROM {source}) AS s
        WHERE NOT EXISTS (SELECT 1 FROM dw."dim_date" AS d WHERE d."date_key" = s."date_key")""",
    )
    changed["dim_date"] = _merge(
        cur,
        'dw."dim_date"',
        '"dim_date"',
        "stage_dim_date",
        "date_key",
        [
            "date_key",
            "calendar_date",
            "year",
            "quarter",
            "month",
            "month_label",
            "day_of_month",
            "day_of_week",
            "day_name",
            "is_weekend",
        ],
    )

    # Countries: attributes are a function of the name; only names not yet present.
    not_a_country = ", ".join(f"'{c}'" for c in NOT_A_COUNTRY)
    _temp_table(
        cur,
        "stage_dim_country",
        f"""
        SELECT "country", CAST({COUNTRY_NAME_SQL} AS VARCHAR(64)) AS "country_name",
               ("country" NOT IN ({not_a_country})) AS "is_specific"
        FROM (SELECT DISTINCT "country" FROM {source}) AS s
        WHERE NOT EXISTS (SELECT 1 FROM dw."dim_country" AS d WHERE d."country" = s."country")""",
    )
    changed["dim_country"] = _merge(
        cur,
        'dw."dim_country"',
        '"dim_country"',
        "stage_dim_country",
        "country",
        ["country", "country_name", "is_specific"],
    )

    # Customers: country from the latest line (ties: greater name); first/last invoice time.
    # Window functions over one row per (customer, country), not per line: a group's ~55,000 lines
    # are ~2,000 such rows, so the sort is that much smaller and the result the same.
    _temp_table(
        cur,
        "stage_customer_candidates",
        f"""
        SELECT "customer_id", "country", "first_invoice_ts", "last_invoice_ts"
        FROM (SELECT "customer_id", "country",
                     MIN("min_ts") OVER (PARTITION BY "customer_id") AS "first_invoice_ts",
                     MAX("max_ts") OVER (PARTITION BY "customer_id") AS "last_invoice_ts",
                     ROW_NUMBER() OVER (PARTITION BY "customer_id"
                                        ORDER BY "max_ts" DESC, "country" DESC) AS "rn"
              FROM (SELECT "customer_id", "country", MIN("invoice_ts") AS "min_ts", MAX("invoice_ts") AS "max_ts"
                    FROM {source} WHERE "customer_id" IS NOT NULL
                    GROUP BY "customer_id", "country") AS g) AS c
        WHERE "rn" = 1""",
    )
    newer_country = (
        '(d."customer_id" IS NULL OR c."last_invoice_ts" > d."last_invoice_ts" '
        'OR (c."last_invoice_ts" = d."last_invoice_ts" AND c."country" > d."country"))'
    )
    _temp_table(
        cur,
        "stage_dim_customer",
        f"""
        SELECT c."customer_id",
               CASE WHEN {newer_country} THEN c."country" ELSE d."country" END AS "country",
               CASE WHEN d."customer_id" IS NULL OR c."first_invoice_ts" < d."first_invoice_ts"
                    THEN c."first_invoice_ts" ELSE d."first_invoice_ts" END AS "first_invoice_ts",
               CASE WHEN d."customer_id" IS NULL OR c."last_invoice_ts" > d."last_invoice_ts"
                    THEN c."last_invoice_ts" ELSE d."last_invoice_ts" END AS "last_invoice_ts"
        FROM stage_customer_candidates AS c
        LEFT JOIN dw."dim_customer" AS d ON d."customer_id" = c."customer_id"
        WHERE {newer_country} OR c."first_invoice_ts" < d."first_invoice_ts\"""",
    )
    changed["dim_customer"] = _merge(
        cur,
        'dw."dim_customer"',
        '"dim_customer"',
        "stage_dim_customer",
        "customer_id",
        ["customer_id", "country", "first_invoice_ts", "last_invoice_ts"],
    )

    # Products: the best description by (rank, time, text), first/last time seen, the code's type.
    # As for customers: one row per (product, description, rank) before the window functions; the
    # best of a (rank, description) is its latest line, so comparing groups by (rank, latest time,
    # text) picks the same line as comparing lines.
    _temp_table(
        cur,
        "stage_product_candidates",
        f"""
        SELECT "product_code", "description", "description_rank", "description_ts",
               "first_seen_ts", "last_seen_ts"
        FROM (SELECT "product_code", "description", "description_rank", "max_ts" AS "description_ts",
                     MIN("min_ts") OVER (PARTITION BY "product_code") AS "first_seen_ts",
                     MAX("max_ts") OVER (PARTITION BY "product_code") AS "last_seen_ts",
                     ROW_NUMBER() OVER (PARTITION BY "product_code"
                                        ORDER BY "description_rank" DESC, "max_ts" DESC,
                                                 COALESCE("description", '') DESC) AS "rn"
              FROM (SELECT "product_code", "description", "description_rank",
                           MIN("invoice_ts") AS "min_ts", MAX("invoice_ts") AS "max_ts"
                    FROM (SELECT "product_code", "invoice_ts",
                                 CASE WHEN BTRIM("description") = '' THEN NULL
                                      ELSE BTRIM("description") END AS "description",
                                 CAST(CASE WHEN "description" IS NULL OR BTRIM("description") = '' THEN 0
                                           WHEN "unit_price" > 0 THEN 2 ELSE 1 END AS SMALLINT) AS "description_rank"
                          FROM {source}) AS t
                    GROUP BY "product_code", "description", "description_rank") AS g) AS c
        WHERE "rn" = 1""",
    )
    better_description = (
        '(d."product_code" IS NULL OR c."description_rank" > d."description_rank" '
        'OR (c."description_rank" = d."description_rank" AND (c."description_ts" > d."description_ts" '
        'OR (c."description_ts" = d."description_ts" '
        "AND COALESCE(c.\"description\", '') > COALESCE(d.\"description\", '')))))"
    )
    _temp_table(
        cur,
        "stage_dim_product",
        f"""
        SELECT c."product_code",
               CASE WHEN {better_description} THEN c."description" ELSE d."description" END AS "description",
               CASE WHEN {better_description} THEN c."description_rank" ELSE d."description_rank" END
                   AS "description_rank",
               CASE WHEN {better_description} THEN c."description_ts" ELSE d."description_ts" END
                   AS "description_ts",
               CAST({PRODUCT_TYPE_SQL.replace('"product_code"', 'c."product_code"')} AS VARCHAR(32))
                   AS "product_type",
               ({PRODUCT_TYPE_SQL.replace('"product_code"', 'c."product_code"')} = 'product') AS "is_product",
               CASE WHEN d."product_code" IS NULL OR c."first_seen_ts" < d."first_seen_ts"
                    THEN c."first_seen_ts" ELSE d."first_seen_ts" END AS "first_seen_ts",
               CASE WHEN d."product_code" IS NULL OR c."last_seen_ts" > d."last_seen_ts"
                    THEN c."last_seen_ts" ELSE d."last_seen_ts" END AS "last_seen_ts"
        FROM stage_product_candidates AS c
        LEFT JOIN dw."dim_product" AS d ON d."product_code" = c."product_code"
        WHERE {better_description} OR c."first_seen_ts" < d."first_seen_ts"
           OR c."last_seen_ts" > d."last_seen_ts\"""",
    )
    changed["dim_product"] = _merge(
        cur,
        'dw."dim_product"',
        '"dim_product"',
        "stage_dim_product",
        "product_code",
        [
            "product_code",
            "description",
            "description_rank",
            "description_ts",
            "product_type",
            "is_product",
            "first_seen_ts",
            "last_seen_ts",
        ],
    )
    return changed


def rebuild_from_facts(cur: Cursor) -> None:
    """Duplicate flags and dimensions from every fact in the table (after adding the star columns)."""
    _temp_table(cur, TOUCHED_KEYS, f"SELECT DISTINCT {_q(ROW_GROUP_KEY)} FROM {FACT}")
    refresh_duplicate_flags(cur)
    upsert_dimensions(cur, source=FACT)
