"""A local Redshift Data API: the `redshift-data` service's JSON protocol, backed by the stack's
Postgres, taking Redshift SQL (translate.py) and COPY from S3 (copy.py). Local-only: never shipped.

    python -m bootstrap.local.redshift_data --port <port> --dsn <postgres DSN> --s3-endpoint <url>

See docs/local-redshift-data-api.md.
"""
