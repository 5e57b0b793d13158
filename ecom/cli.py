"""`ecom`: the one command line for the platform."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from ecom import config

app = typer.Typer(help="ecom-pipeline: a local, deploy-to-AWS-unchanged e-commerce data platform.",
                  no_args_is_help=True, add_completion=False)
etl_app = typer.Typer(help="Batch ETL: raw JSON -> staging CSV -> Glue catalog -> warehouse.", no_args_is_help=True)
app.add_typer(etl_app, name="etl")

DEFAULT_DATA = config.PROJECT_ROOT / "data" / "ecommerce-data.csv.gz"


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _endpoints(cfg: config.Stack) -> dict[str, str]:
    from bootstrap.deploy import find_api

    try:
        api = find_api(cfg)
    except Exception as exc:  # the emulator is down or unreachable
        fail(f"cannot reach the AWS endpoint {cfg.endpoint_url or '(real AWS)'}: {exc}. Is the stack up? (`ecom up`)")
    if api is None:
        fail("the API is not deployed yet; run `ecom up` (or `ecom bootstrap`)")
    return {"target": cfg.target, "api_url": api["api_url"], "events_url": api["api_url"] + "/events",
            "api_key": api["api_key"], "aws_endpoint_url": cfg.endpoint_url or "", "warehouse_dsn": cfg.warehouse_dsn}


def _print_endpoints(info: dict[str, str]) -> None:
    typer.echo(f"  API (POST events): {info['events_url']}")
    typer.echo(f"  API key (local):   {info['api_key']}")
    typer.echo(f"  AWS endpoint:      {info['aws_endpoint_url'] or '(real AWS)'}")
    typer.echo(f"  Warehouse DSN:     {info['warehouse_dsn']}")


@app.command()
def up() -> None:
    """Start the embedded stack (MiniStack + private Postgres), bootstrap it, print the endpoints."""
    from bootstrap.deploy import deploy
    from ecom import stack

    cfg = config.stack()
    try:
        started = stack.up(cfg)
    except stack.StackError as exc:
        fail(str(exc))
    if started:
        typer.echo(f"stack up: MiniStack on 127.0.0.1:{cfg.aws_port}, Postgres on 127.0.0.1:{cfg.pg_port} "
                   f"(data in {cfg.data_dir}, logs in {cfg.logs_dir})")
        report = deploy(cfg)
        typer.echo(f"bootstrap: {len(report.changed)} created or updated, "
                   f"{len(report.actions) - len(report.changed)} unchanged")
    else:
        typer.echo("stack already up (nothing to do)")
    _print_endpoints(_endpoints(cfg))
    typer.echo("  stop it with: ecom down   (or make down)")


@app.command()
def down() -> None:
    """Stop the embedded stack gracefully (the emulator saves its state under the data directory)."""
    from ecom import stack

    if stack.down():
        typer.echo("stack stopped")
    else:
        typer.echo("stack was not running (nothing to do)")


@app.command()
def endpoints(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Print the API URL, the local API key and the warehouse DSN."""
    info = _endpoints(config.stack())
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        _print_endpoints(info)


@app.command()
def bootstrap() -> None:
    """Create every resource (idempotent: a second run creates nothing and changes nothing)."""
    from bootstrap.deploy import deploy

    report = deploy(config.stack())
    for resource, action in report.actions:
        typer.echo(f"  {action:9} {resource}")
    typer.echo(f"{len(report.changed)} created or updated")


@app.command()
def replay(
    file: Path = typer.Argument(DEFAULT_DATA, help="Kaggle CSV, gzip or plain"),
    rows: Optional[int] = typer.Option(None, "--rows", "-n", help="send only the first N rows"),
    one_by_one: bool = typer.Option(False, "--one-by-one", help="one event per request, like the original script"),
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, max=64, help="requests in flight"),
    batch_size: int = typer.Option(500, "--batch-size", min=1, max=500, help="events per request"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="wait until the stream consumer has caught up"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Replay the Kaggle file through POST /events. Event ids come from file + row: replaying twice duplicates nothing."""
    from tqdm import tqdm

    from replay.client import ReplayError, Sender, replay as run_replay
    from replay.source import SourceError, read_rows
    from warehouse.status import wait_for_drain

    cfg = config.stack()
    info = _endpoints(cfg)
    sender = Sender(info["api_url"], info["api_key"])
    bar = tqdm(total=rows, unit="ev", disable=not progress, desc="replay", smoothing=0.1)
    try:
        result = run_replay(read_rows(file, rows), sender, batch_size=batch_size, concurrency=concurrency,
                            one_by_one=one_by_one, progress=bar.update)
    except (SourceError, ReplayError) as exc:
        bar.close()
        fail(str(exc))
    bar.close()
    typer.echo(f"rows read {result.rows_read}, accepted {result.accepted}, rejected {len(result.rejected)}, "
               f"{result.requests} requests, {result.retries} retries, {result.seconds:.1f}s, "
               f"{result.events_per_second:,.0f} events/s")
    if wait and result.high_water:
        clock = time.perf_counter()
        if not wait_for_drain(result.high_water, cfg):
            fail("the stream consumer did not catch up within 600 s; see `ecom status` and .data/logs/")
        typer.echo(f"stream consumer caught up in {time.perf_counter() - clock:.1f}s")
    if result.rejected:
        for rejection in result.rejected[:50]:
            typer.echo(f"  rejected: {file}: row {rejection.row}: {rejection.field}: {rejection.error}", err=True)
        if len(result.rejected) > 50:
            typer.echo(f"  ... and {len(result.rejected) - 50} more", err=True)
        raise typer.Exit(1)


@etl_app.command("transform")
def etl_transform() -> None:
    """Raw JSON Lines -> UTF-8 CSV in the staging bucket; raw objects move to processed/."""
    from etl.transform import transform

    result = transform(config.stack())
    typer.echo(f"transformed {result.objects} raw objects, {result.rows} rows")
    for error in result.errors:
        typer.echo(f"  left in place: {error}", err=True)
    if result.errors:
        raise typer.Exit(1)


@etl_app.command("catalog")
def etl_catalog() -> None:
    """Infer the staging CSV schema and create or update the Glue table."""
    from etl.catalog import crawl

    result = crawl(config.stack())
    typer.echo(f"glue table {result.action} from {result.files} files: "
               + ", ".join(f"{n} {t}" for n, t in result.columns))


@etl_app.command("load")
def etl_load() -> None:
    """COPY each not-yet-loaded staging file and MERGE it into the warehouse, exactly once."""
    from etl.contract import SchemaDrift
    from etl.load import load

    try:
        result = load(config.stack())
    except SchemaDrift as exc:
        fail(str(exc))
    typer.echo(f"loaded {result.files_loaded} files ({result.rows_inserted} new rows, "
               f"{result.rows_updated} already present), skipped {result.files_skipped}")


@etl_app.command("run")
def etl_run(every: Optional[float] = typer.Option(None, "--every", help="repeat every SECONDS until interrupted")) -> None:
    """transform, catalog and load in one go (optionally repeated)."""
    from etl.contract import SchemaDrift
    from etl.run import run_once

    while True:
        try:
            result = run_once(config.stack())
        except SchemaDrift as exc:
            fail(str(exc))
        t, l = result.transform, result.load
        typer.echo(f"etl run {result.run_id}: {t.objects} raw objects -> {len(t.csv_keys)} CSV ({t.rows} rows); "
                   f"catalog {result.catalog.action}; loaded {l.files_loaded} files, {l.rows_inserted} new rows "
                   f"in {result.seconds:.1f}s")
        for error in t.errors:
            typer.echo(f"  left in place: {error}", err=True)
        if every is None:
            if t.errors:
                raise typer.Exit(1)
            return
        try:
            time.sleep(every)
        except KeyboardInterrupt:
            return


@app.command()
def bench(
    file: Path = typer.Argument(DEFAULT_DATA, help="Kaggle CSV, gzip or plain"),
    rows: Optional[int] = typer.Option(None, "--rows", "-n", help="only the first N rows (default: the whole file)"),
    original_rows: int = typer.Option(3000, "--original-rows", min=1, help="slice for the one-by-one original design"),
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, max=64, help="replay requests in flight"),
    as_json: bool = typer.Option(False, "--json", help="print the full results as JSON instead of the table"),
    save: bool = typer.Option(True, "--save/--no-save", help="write bench/results/<time>-<rows>rows.{json,md}"),
    skip_ceiling: bool = typer.Option(False, "--skip-ceiling", help="do not measure the emulator's bare capacity"),
    skip_original: bool = typer.Option(False, "--skip-original", help="do not run the one-by-one original design"),
    keep: bool = typer.Option(False, "--keep", help="keep the temp data directory (logs) afterwards"),
) -> None:
    """Ceiling vs ours vs the original design on a fresh embedded stack; exact reconciliation."""
    from ecom import bench as benchmark

    def log(message: str) -> None:
        typer.echo(f"[bench {time.strftime('%H:%M:%S')}] {message}", err=True)

    try:
        out = benchmark.run(file, rows, original_rows=original_rows, concurrency=concurrency, keep=keep,
                            skip_ceiling=skip_ceiling, skip_original=skip_original, log=log)
    except Exception as exc:  # the stack is down again by now (fresh_stack cleans up)
        fail(f"{type(exc).__name__}: {exc}")
    if save:
        log(f"saved {benchmark.save(out)}")
    typer.echo(json.dumps(out, indent=2, default=str) if as_json else benchmark.table(out))
    if not out["reconciliation"]["exact"]:
        raise typer.Exit(1)


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
           stream: bool = typer.Option(True, "--stream/--no-stream", help="also count records on the stream")) -> None:
    """Counts in every store: stream, DynamoDB, raw and staging buckets, warehouse, dead letters."""
    from ecom import stack
    from warehouse.status import store_counts

    cfg = config.stack()
    health = stack.status(cfg) if cfg.target == "embedded" else None
    if health is not None and not health.up:
        report = {"ministack_up": health.ministack_up, "postgres_up": health.postgres_up}
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        fail("the stack is not up (`ecom up`)")
    counts = store_counts(cfg, include_stream=stream)
    if as_json:
        typer.echo(json.dumps(counts, indent=2, default=str))
        return
    labels = [("stream_records", "events on the stream"), ("invoice_lines", "DynamoDB invoice lines"),
              ("customer_invoices", "DynamoDB customer->invoice entries"),
              ("raw_objects_pending", "raw objects waiting for the ETL"),
              ("raw_objects_processed", "raw objects processed"), ("staging_files", "staging CSV files"),
              ("files_loaded", "files loaded (manifest)"), ("warehouse_rows", "warehouse rows"),
              ("quarantined", "quarantined records (dead letters)")]
    for key, label in labels:
        if key in counts:
            typer.echo(f"  {label:38} {counts[key]:>10,}")
    last = counts.get("last_etl_run")
    typer.echo(f"  last ETL run: {last['run_id']} {last['outcome']} at {last['finished_at']}" if last
               else "  last ETL run: none")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
