"""`ecom`: the one command line for the platform."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer

from ecom_core import config

app = typer.Typer(
    help="ecom-pipeline: a local, deploy-to-AWS-unchanged e-commerce data platform.",
    no_args_is_help=True,
    add_completion=False,
)
etl_app = typer.Typer(help="Batch ETL: raw JSON -> staging CSV -> Glue catalog -> warehouse.", no_args_is_help=True)
app.add_typer(etl_app, name="etl")
query_app = typer.Typer(help="Read the OLTP side through the API (GET routes) and print tables.", no_args_is_help=True)
app.add_typer(query_app, name="query")

DEFAULT_DATA = config.PROJECT_ROOT / "data" / "ecommerce-data.csv.gz"


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _endpoints(cfg: config.Stack) -> dict:
    from bootstrap.deploy import find_api

    try:
        api = find_api(cfg)
    except Exception as exc:  # the emulator is down or unreachable
        fail(f"cannot reach the AWS endpoint {cfg.endpoint_url or '(real AWS)'}: {exc}. Is the stack up? (`ecom up`)")
    if api is None:
        fail("the API is not deployed yet; run `ecom up` (or `ecom bootstrap`)")
    etl = config.etl()
    # The warehouse as the job reaches it: the Redshift Data API (AWS's, or the local stack's own),
    # a workgroup or cluster and a database; the DSN is for psql and BI tools on the local Postgres.
    redshift_data = {
        "endpoint_url": cfg.endpoint_for("redshift-data") or "(real AWS)",
        "workgroup": None if etl.redshift_cluster else etl.redshift_workgroup,
        "cluster": etl.redshift_cluster or None,
        "database": etl.redshift_database,
    }
    return {
        "target": cfg.target,
        "api_url": api["api_url"],
        "events_url": api["api_url"] + "/events",
        "api_key": api["api_key"],
        "aws_endpoint_url": cfg.endpoint_url or "",
        "redshift_data": redshift_data,
        "warehouse_dsn": cfg.warehouse_dsn,
        "postgres": _postgres(cfg),
    }


def _postgres(cfg: config.Stack) -> dict[str, str | None]:
    """Which PostgreSQL serves the warehouse: the binaries the embedded stack started (recorded by
    `ecom up`), the compose image or an external server, and the version the server reports."""
    from bootstrap import stack

    if cfg.warehouse_dsn_override:
        runs = "an external server (WAREHOUSE_DSN)"
    elif cfg.target == "compose":
        runs = "the docker-compose service `postgres` (image postgres:15)"
    else:
        binaries = stack.read_state(cfg).get("pg_binaries")
        runs = (
            stack.PgBinaries(Path(binaries["bindir"]), binaries["source"], binaries["version"]).describe()
            if binaries
            else "unknown (started before this was recorded; `ecom down && ecom up` records it)"
        )
    try:
        from warehouse import db

        with db.connection() as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()[0]
    except Exception:  # down or unreachable: `ecom status` says so under components
        version = None
    return {"binaries": runs, "server_version": version}


def _print_endpoints(info: dict) -> None:
    typer.echo(f"  API (POST events): {info['events_url']}")
    typer.echo(f"  API key (local):   {info['api_key']}")
    typer.echo(f"  AWS endpoint:      {info['aws_endpoint_url'] or '(real AWS)'}")
    rs = info["redshift_data"]
    typer.echo(
        f"  Redshift Data API: {rs['endpoint_url']} ("
        + (f"cluster {rs['cluster']}" if rs["cluster"] else f"workgroup {rs['workgroup']}")
        + f", database {rs['database']})"
    )
    typer.echo(f"  Warehouse DSN:     {info['warehouse_dsn']}")
    server_version = info["postgres"]["server_version"]
    typer.echo(
        f"  PostgreSQL:        {info['postgres']['binaries']}"
        + (f"; server reports {server_version}" if server_version else "")
    )


@app.command()
def up(
    stack_choice: str = typer.Option(
        "embedded", "--stack", envvar="STACK", help="embedded, compose, or auto (compose when a Docker engine answers)"
    ),
) -> None:
    """Start a stack (embedded: MiniStack + private Postgres; compose: LocalStack + Postgres), bootstrap it,
    print the endpoints."""
    import dataclasses

    from bootstrap import compose, stack
    from bootstrap.deploy import deploy

    try:
        chosen, why = compose.choose(stack_choice)
    except compose.ComposeError as exc:
        fail(str(exc))
    typer.echo(f"stack: {chosen} ({why})")
    cfg = dataclasses.replace(config.stack(), target=chosen)
    try:
        if chosen == "compose":
            compose.up()
            started = True
        else:
            started = stack.up(cfg)
    except (stack.StackError, compose.ComposeError) as exc:
        fail(str(exc))
    stack.record_target(cfg, chosen)
    if started and chosen == "embedded":
        typer.echo(
            f"stack up: MiniStack on 127.0.0.1:{cfg.aws_port}, Postgres on 127.0.0.1:{cfg.pg_port}, "
            f"Redshift Data API on 127.0.0.1:{cfg.redshift_data_port} "
            f"(data in {cfg.data_dir}, logs in {cfg.logs_dir})"
        )
        recovery = stack.last_recovery(cfg)
        if recovery and recovery.get("unclean_stop"):
            typer.echo(
                f"recovered from an unclean stop of the emulator: {recovery['records']} stream records back "
                f"from its journal in {recovery['seconds']} s; the trigger delivers the "
                f"{recovery['redelivered']} after its last saved position again, so DynamoDB and S3 get "
                "back what the crash took (idempotently, by event id)"
            )
    elif not started:
        typer.echo("stack already running")
    # Every time, so the stack runs the code of this checkout: the change set is empty (and nothing
    # changes) when the code and settings are those already deployed.
    report = deploy(cfg)
    if chosen == "embedded" and (started or report.changed):
        # The emulator's state saved with this deployment in it: a crash brings back this API id,
        # keys, functions and mappings (bootstrap/local/ministack/durability.py).
        stack.checkpoint(cfg)
    typer.echo(
        f"bootstrap (CloudFormation stack): {len(report.changed)} created, updated or deleted, "
        f"{len(report.actions) - len(report.changed)} unchanged"
        # What changed, when it is a few things (a code change); a first deployment just counts.
        + (
            ": " + ", ".join(f"{what} {action}" for what, action in report.changed)
            if 0 < len(report.changed) <= 10
            else ""
        )
    )
    _print_endpoints(_endpoints(cfg))
    typer.echo("  stop it with: ecom down   (or make down)")


@app.command()
def down() -> None:
    """Stop the stack `ecom up` started (embedded: gracefully, the emulator saves its state in the data dir)."""
    from bootstrap import compose, stack

    cfg = config.stack()
    if cfg.target == "compose":
        try:
            compose.down()
        except compose.ComposeError as exc:
            fail(str(exc))
        stack.record_target(cfg, "embedded")
        typer.echo("compose stack stopped (volumes kept)")
        return
    if stack.down(cfg):
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
def bootstrap(
    target: str | None = typer.Option(
        None, "--target", help="embedded, compose or aws (default: the configured target)"
    ),
    plan_only: bool = typer.Option(
        False,
        "--plan",
        help="print what would be created, changed or deleted (a change "
        "set, not executed); without AWS credentials, the template's "
        "resources",
    ),
    as_json: bool = typer.Option(False, "--json", help="with --plan: machine-readable"),
    template_file: Path | None = typer.Option(
        None,
        "--template",
        help="with --target aws: write the platform as a CloudFormation template (YAML; "
        ".json for JSON) and its Lambda zips beside it; create nothing",
    ),
    artifact_bucket: str | None = typer.Option(
        None,
        "--artifact-bucket",
        envvar="ECOM_ARTIFACT_BUCKET",
        help="S3 bucket for the Lambda zips (created if missing; default ecom-artifacts-<account>[-<region>]); "
        "with --template: upload them there and make it the template's default",
    ),
    stack_name: str | None = typer.Option(
        None, "--stack-name", envvar="ECOM_STACK_NAME", help="the CloudFormation stack (default ecom-pipeline)"
    ),
) -> None:
    """Deploy the platform as one CloudFormation stack through a change set (idempotent: a second run
    changes nothing; a code change updates only the functions whose zip changed)."""
    import dataclasses

    if target is not None and target not in config.TARGETS:
        fail(f"unknown target {target!r}; use one of {', '.join(config.TARGETS)}")
    cfg = config.stack() if target is None else dataclasses.replace(config.stack(), target=target)
    if template_file is not None:
        if cfg.target != "aws":
            fail("--template describes the AWS target: add --target aws (the emulators are bootstrapped directly)")
        from bootstrap.template import upload, write
        from ecom_core import aws

        doc, zips = write(template_file, artifact_bucket=artifact_bucket)
        typer.echo(
            f"wrote {template_file}: {len(doc['Resources'])} resources; Lambda code: " + ", ".join(str(z) for z in zips)
        )
        if artifact_bucket:
            keys = upload(aws.client("s3", cfg), artifact_bucket)
            typer.echo(f"uploaded to s3://{artifact_bucket}/: {', '.join(keys)}")
        typer.echo(
            f"deploy: aws cloudformation deploy --stack-name {stack_name or 'ecom-pipeline'} "
            f"--capabilities CAPABILITY_NAMED_IAM --template-file {template_file}"
            + ("" if artifact_bucket else " --parameter-overrides ArtifactBucket=<bucket holding lambda/*.zip>")
        )
        return
    from bootstrap import deploy as deployment

    if plan_only:
        import boto3

        if cfg.target == "aws" and boto3.session.Session().get_credentials() is None:
            from bootstrap.plan import plan, render

            doc = plan(cfg.region)
            typer.echo(json.dumps(doc, indent=2) if as_json else render(doc))
            return
        try:
            changes = deployment.plan_changes(cfg, artifact_bucket=artifact_bucket, name=stack_name)
        except (deployment.RefusedForAws, deployment.DeployFailed) as exc:
            fail(str(exc))
        if as_json:
            typer.echo(json.dumps([{"resource": r, "action": a, "detail": d} for r, a, d in changes], indent=2))
            return
        typer.echo(f"Change set for stack {stack_name or deployment.stack_name()} (not executed, deleted):")
        for resource, action, detail in changes:
            typer.echo(f"  {action:9} {resource} ({detail})")
        typer.echo(f"{len(changes)} to create, update or delete" if changes else "no changes")
        return
    try:
        report = deployment.deploy(cfg, artifact_bucket=artifact_bucket, name=stack_name)
    except (deployment.RefusedForAws, deployment.DeployFailed) as exc:
        fail(str(exc))
    for resource, action in report.actions:
        typer.echo(f"  {action:9} {resource}")
    typer.echo(f"{len(report.changed)} created, updated or deleted" if report.changed else "unchanged")


@app.command()
def replay(
    file: Path = typer.Argument(DEFAULT_DATA, help="Kaggle CSV, gzip or plain"),
    rows: int | None = typer.Option(None, "--rows", "-n", help="send only the first N rows"),
    one_by_one: bool = typer.Option(False, "--one-by-one", help="one event per request, like the original script"),
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, max=64, help="requests in flight"),
    batch_size: int = typer.Option(500, "--batch-size", min=1, max=500, help="events per request"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="wait until the stream consumer has caught up"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Replay the Kaggle file through POST /events. Event ids come from file + row: replaying twice
    duplicates nothing."""
    from tqdm import tqdm

    from replay.client import ReplayError, Sender
    from replay.client import replay as run_replay
    from replay.source import SourceError, read_rows
    from warehouse.status import wait_for_drain

    cfg = config.stack()
    info = _endpoints(cfg)
    sender = Sender(info["api_url"], info["api_key"])
    from warehouse.reconcile import open_ledger

    bar = tqdm(total=rows, unit="ev", disable=not progress, desc="replay", smoothing=0.1)
    try:
        with open_ledger(cfg, file) as ledger:
            result = run_replay(
                read_rows(file, rows),
                sender,
                batch_size=batch_size,
                concurrency=concurrency,
                one_by_one=one_by_one,
                progress=bar.update,
                ledger=ledger,
            )
    except (SourceError, ReplayError) as exc:
        bar.close()
        fail(str(exc))
    bar.close()
    typer.echo(
        f"rows read {result.rows_read}, accepted {result.accepted}, rejected {len(result.rejected)}, "
        f"{result.requests} requests, {result.retries} retries, {result.seconds:.1f}s, "
        f"{result.events_per_second:,.0f} events/s"
    )
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
    typer.echo(
        f"glue table {result.action} from {result.files} files: " + ", ".join(f"{n} {t}" for n, t in result.columns)
    )


@etl_app.command("load")
def etl_load() -> None:
    """COPY each not-yet-loaded staging file and MERGE it into the warehouse, exactly once."""
    from ecom_core.contract import SchemaDrift
    from etl.load import load

    try:
        result = load(config.stack())
    except SchemaDrift as exc:
        fail(str(exc))
    typer.echo(
        f"loaded {result.files_loaded} files ({result.rows_inserted} new rows, "
        f"{result.rows_updated} already present, {result.rows_rejected} rejected), "
        f"skipped {result.files_skipped}"
    )


@etl_app.command("run")
def etl_run(every: float | None = typer.Option(None, "--every", help="repeat every SECONDS until interrupted")) -> None:
    """transform, catalog and load in one go (optionally repeated), under the same lease as the
    scheduled job: if a scheduled run is busy, this waits for it (ECOM_ETL_MANUAL_WAIT_SECONDS)."""
    from ecom_core.contract import SchemaDrift
    from etl.job import record
    from etl.run import LeaseHeld, run_once

    while True:
        try:
            result = run_once(
                config.stack(), holder=f"manual:{os.getpid()}", wait_for_lease=config.etl().manual_wait_seconds
            )
        except SchemaDrift as exc:
            fail(str(exc))
        except LeaseHeld as exc:
            fail(str(exc))
        record(result, "manual", config.stack())
        t, loaded = result.transform, result.load
        typer.echo(
            f"etl run {result.run_id}: {t.objects} raw objects -> {len(t.csv_keys)} CSV ({t.rows} rows); "
            f"catalog {result.catalog.action}; loaded {loaded.files_loaded} files, "
            f"{loaded.rows_inserted} new rows in {result.seconds:.1f}s"
        )
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


def _etl_job(cfg: config.Stack) -> dict:
    """The scheduled job as the platform sees it: its schedule, the last tick, the next one."""
    from datetime import datetime, timedelta

    from botocore.exceptions import BotoCoreError, ClientError

    from ecom_core import aws
    from etl.job import read_state

    r = config.resources()
    try:
        schedule = aws.client("scheduler", cfg).get_schedule(Name=r.etl_schedule_name)
        expression, state = schedule.get("ScheduleExpression"), schedule.get("State")
    except (BotoCoreError, ClientError):
        expression, state = None, "not deployed"
    tick = read_state(cfg).get("last_tick")
    info = {"schedule": expression, "state": state, "last_tick": tick, "next_tick": None}
    interval = config.Etl(schedule=expression).interval_seconds if expression else None
    if tick and interval and state == "ENABLED" and tick.get("trigger") == "schedule":
        at = datetime.fromisoformat(tick["at"])
        info["next_tick"] = (at + timedelta(seconds=interval)).isoformat(timespec="seconds")
    return info


def _components(cfg: config.Stack) -> dict[str, bool]:
    """Whether each part answers: the emulator, Postgres, the pipeline's functions (the ETL job too)."""
    from bootstrap import stack
    from ecom_core import aws

    up: dict[str, bool] = {}
    if cfg.target == "embedded":
        health = stack.status(cfg)
        up["ministack"], up["postgres"] = health.ministack_up, health.postgres_up
    try:
        from warehouse.redshift_data import DataApi

        # The warehouse as the job and the tools reach it: through the Redshift Data API.
        up["warehouse"] = DataApi(cfg=cfg, timeout=10).query("SELECT 1") == [[1]]
    except Exception:
        up["warehouse"] = False
    r = config.resources()
    try:
        lam = aws.client("lambda", cfg, read_timeout=5)
        for name in (r.ingestion_function, r.trigger_function, r.etl_function):
            up[f"lambda {name}"] = lam.get_function_configuration(FunctionName=name).get("State", "Active") == "Active"
    except Exception:
        up["lambda"] = False
    return up


@app.command()
def report(
    out: Path = typer.Option(
        config.PROJECT_ROOT / "reports", "--out", "-o", help="directory for index.html and one CSV per view"
    ),
) -> None:
    """Write the warehouse report: self-contained HTML with charts (opens offline) + every view as CSV."""
    from botocore.exceptions import BotoCoreError

    from warehouse.redshift_data import RedshiftError
    from warehouse.report import build_report

    try:
        result = build_report(out)
    except (BotoCoreError, RedshiftError) as exc:
        fail(
            f"cannot read the warehouse through the Redshift Data API: {str(exc).strip()}. Is the stack up? (`ecom up`)"
        )
    typer.echo(
        f"report: {result.html_path} ({len(result.charts)} charts, {len(result.csv_paths)} tables as CSV: "
        + ", ".join(f"{view} {rows}" for view, rows in result.rows.items())
        + ")"
    )


@app.command()
def bench(
    file: Path = typer.Argument(DEFAULT_DATA, help="Kaggle CSV, gzip or plain"),
    rows: int | None = typer.Option(None, "--rows", "-n", help="only the first N rows (default: the whole file)"),
    original_rows: int = typer.Option(3000, "--original-rows", min=1, help="slice for the one-by-one original design"),
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, max=64, help="replay requests in flight"),
    as_json: bool = typer.Option(False, "--json", help="print the full results as JSON instead of the table"),
    save: bool = typer.Option(True, "--save/--no-save", help="write bench/results/<time>-<rows>rows.{json,md}"),
    skip_ceiling: bool = typer.Option(False, "--skip-ceiling", help="do not measure the emulator's bare capacity"),
    skip_original: bool = typer.Option(False, "--skip-original", help="do not run the one-by-one original design"),
    keep: bool = typer.Option(False, "--keep", help="keep the temp data directory (logs) afterwards"),
) -> None:
    """Ceiling vs ours vs the original design on a fresh embedded stack; exact reconciliation."""
    from bench import pipeline as benchmark

    def log(message: str) -> None:
        typer.echo(f"[bench {time.strftime('%H:%M:%S')}] {message}", err=True)

    try:
        out = benchmark.run(
            file,
            rows,
            original_rows=original_rows,
            concurrency=concurrency,
            keep=keep,
            skip_ceiling=skip_ceiling,
            skip_original=skip_original,
            log=log,
        )
    except Exception as exc:  # the stack is down again by now (fresh_stack cleans up)
        fail(f"{type(exc).__name__}: {exc}")
    if save:
        log(f"saved {benchmark.save(out)}")
    typer.echo(json.dumps(out, indent=2, default=str) if as_json else benchmark.table(out))
    if not out["reconciliation"]["exact"]:
        raise typer.Exit(1)


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    stream: bool = typer.Option(True, "--stream/--no-stream", help="also read the stream (shard lag)"),
) -> None:
    """The operator's view: components, counts per store, shard lag, dead letters, the last ETL run."""
    from replay.deadletters import top_reasons
    from warehouse.status import permission_denials, store_counts

    cfg = config.stack()
    components = _components(cfg)
    if not all(components.values()):
        if as_json:
            typer.echo(json.dumps({"components": components}, indent=2))
        down = ", ".join(name for name, ok in components.items() if not ok)
        fail(f"not up: {down} (start the stack with `ecom up`)")
    counts = store_counts(cfg, include_stream=stream)
    quarantined, reasons = top_reasons(cfg)
    report = {
        "components": components,
        "postgres": _postgres(cfg),
        **counts,
        "dead_letter_reasons": reasons,
        "etl_job": _etl_job(cfg),
        "permission_denials": permission_denials(cfg),
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    typer.echo("components: " + ", ".join(f"{n} {'up' if ok else 'DOWN'}" for n, ok in components.items()))
    typer.echo(f"  PostgreSQL: {report['postgres']['binaries']}; server reports {report['postgres']['server_version']}")
    labels = [
        ("stream_records", "events on the stream"),
        ("invoice_lines", "DynamoDB invoice lines"),
        ("customer_invoices", "DynamoDB customer->invoice entries"),
        ("raw_objects_pending", "raw objects waiting for the ETL"),
        ("raw_objects_processed", "raw objects processed"),
        ("staging_files", "staging CSV files"),
        ("files_loaded", "files loaded (manifest)"),
        ("warehouse_rows", "warehouse rows"),
        ("quarantined", "quarantined records (dead letters)"),
        ("warehouse_rejects", "rows the warehouse set aside (rejects)"),
    ]
    for key, label in labels:
        if key in counts:
            typer.echo(f"  {label:38} {counts[key]:>10,}")
    for shard, info in counts.get("shards", {}).items():
        typer.echo(f"  {shard}: {info['records']:,} records, consumer behind by {info['behind']:,}")
    for reason, n in reasons:
        typer.echo(f"  dead letters: {n:,} x {reason}")
    for function, denial in report["permission_denials"].items():
        last = time.strftime("%H:%M:%S UTC", time.gmtime(denial["at"] / 1000)) if denial.get("at") else "?"
        typer.echo(
            f"  DENIED: {function} may not {denial['action']} on {denial['resource']} "
            f"({denial['times']:,} log lines in the last 15 min, the latest at {last}; "
            f"its role's policy lacks it)"
        )
    last = counts.get("last_etl_run")
    typer.echo(
        f"  last ETL run: {last['run_id']} {last['outcome']} at {last['finished_at']}"
        + (f" ({last['message']})" if last and last.get("message") else "")
        if last
        else "  last ETL run: none"
    )
    job = report.get("etl_job") or {}
    tick = job.get("last_tick")
    typer.echo(
        f"  ETL job: schedule {job.get('schedule')} ({job.get('state')})"
        + (
            f"; last tick {tick['at']} ({tick.get('trigger')}) {tick['outcome']}"
            + (
                f", {tick.get('files_loaded', 0)} files, {tick.get('rows_inserted', 0)} rows"
                if tick.get("run_id")
                else ""
            )
            + (f"; next about {job['next_tick']}" if job.get("next_tick") else "")
            if tick
            else "; no tick yet"
        )
    )


@app.command()
def reconcile(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    limit: int = typer.Option(20, help="ids to print per stage and kind"),
) -> None:
    """Prove where every accepted event is: per stage counts, missing and duplicated ids. Exit 1 unless exact."""
    from warehouse.reconcile import reconcile as run_reconcile

    result = run_reconcile(config.stack())
    if as_json:
        typer.echo(json.dumps(result.as_dict(limit=limit), indent=2))
    else:
        typer.echo(
            f"accepted by the API (stream since the last reset, raw archive, replay ledgers): "
            f"{len(result.accepted):,}; dead-lettered: {len(result.dead_lettered):,}; "
            f"warehouse rejects: {len(result.warehouse_rejected):,}"
        )
        typer.echo(f"  {'stage':10} {'events':>10} {'rows':>10} {'missing':>8} {'dup':>6} {'unexpected':>10}")
        for stage in result.stages:
            typer.echo(
                f"  {stage.name:10} {len(stage.ids):>10,} {stage.rows:>10,} {len(stage.missing):>8,} "
                f"{len(stage.duplicated):>6,} {len(stage.unexpected):>10,}"
            )
            for kind, ids in (
                ("missing", stage.missing),
                ("duplicated", stage.duplicated),
                ("unexpected", stage.unexpected),
            ):
                for event_id in ids[:limit]:
                    typer.echo(f"      {kind}: {event_id}")
        typer.echo("exact" if result.exact else "NOT exact")
    if not result.exact:
        raise typer.Exit(1)


dlq_app = typer.Typer(
    help="Dead letters: records the stream consumer quarantined, with their reasons.", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every quarantined record: the stream consumer's dead letters (key, reason, shard, sequence
    number, time) and the rows the warehouse load set aside (file, line, event id, reason)."""
    from replay.deadletters import letters
    from warehouse.status import load_rejects

    rows = [{"stage": "stream", **letter.summary()} for letter in letters(config.stack())]
    rejects = load_rejects()
    rows += [
        {
            "stage": "warehouse",
            "key": f"{r['file_key']}#{r['line_no']}",
            "kind": "warehouse reject",
            "reason": r["reason"][:200],
            "event_id": r["event_id"],
            "quarantined_at": r["rejected_at"],
        }
        for r in rejects
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        size = f"  {row['size']}B" if row.get("size") is not None else ""
        typer.echo(f"{row['stage']:9} {row['key']}  {row['quarantined_at']}{size}  {row['reason']}")
    typer.echo(f"{len(rows) - len(rejects)} dead letters, {len(rejects)} warehouse rejects")


@dlq_app.command("show")
def dlq_show(key: str = typer.Argument(..., help="the letter's key or its sequence number")) -> None:
    """One dead letter in full (reason, source, the record's data)."""
    from replay.deadletters import get

    try:
        typer.echo(json.dumps(get(key, config.stack()).body, indent=2, ensure_ascii=False))
    except KeyError as exc:
        fail(str(exc.args[0]))


@dlq_app.command("batches")
def dlq_batches(as_json: bool = typer.Option(False, "--json")) -> None:
    """Batches the mapping gave up on (AWS/LocalStack OnFailure queue): shard and sequence range."""
    from dataclasses import asdict

    from replay.deadletters import failed_batches

    batches = failed_batches(config.stack())
    if as_json:
        typer.echo(
            json.dumps([{k: v for k, v in asdict(b).items() if k != "receipt_handle"} for b in batches], indent=2)
        )
        return
    for b in batches:
        typer.echo(f"{b.shard_id} {b.start_sequence}..{b.end_sequence} ({b.batch_size} records, {b.condition})")
    typer.echo(f"{len(batches)} discarded batches")


@dlq_app.command("redrive")
def dlq_redrive(
    keys: list[str] = typer.Argument(None, help="keys or sequence numbers; none with --all"),
    all_letters: bool = typer.Option(False, "--all", help="redrive every dead letter"),
    batches: bool = typer.Option(False, "--batches", help="redrive every discarded batch instead"),
) -> None:
    """Re-submit dead letters to the stream (after fixing the cause); each moves to redriven/."""
    from replay.deadletters import failed_batches, get, letters, redrive, redrive_batch

    cfg = config.stack()
    if batches:
        # Hidden while we work on them (5 min), deleted once their records are back on the stream.
        chosen_batches = failed_batches(cfg, visibility=300)
        total = sum(redrive_batch(b, cfg) for b in chosen_batches)
        typer.echo(f"{len(chosen_batches)} batches redriven ({total} records re-put)")
        return
    if not keys and not all_letters:
        fail("name the letters to redrive (keys or sequence numbers) or pass --all")
    try:
        chosen = list(letters(cfg)) if all_letters else [get(k, cfg) for k in keys]
    except KeyError as exc:
        fail(str(exc.args[0]))
    for letter in chosen:
        sequence = redrive(letter, cfg)
        typer.echo(f"redrove {letter.key} -> sequence {sequence}")
    typer.echo(f"{len(chosen)} redriven")


@app.command()
def token(
    customer_id: str = typer.Argument(..., help="the customer id the token speaks for (its `sub`)"),
    ttl: int = typer.Option(3600, "--ttl", min=1, help="seconds until it expires"),
) -> None:
    """Mint a local bearer token (HS256 JWT) for a customer: `Authorization: Bearer $(ecom token 14911)`."""
    from handlers.auth import CUSTOMER_ID, mint

    auth = _stored_auth()
    if not CUSTOMER_ID.fullmatch(customer_id):
        fail(f"customer id {customer_id!r} is not a positive integer")
    if ttl > auth.max_token_ttl_seconds:
        fail(f"--ttl {ttl} is longer than the allowed {auth.max_token_ttl_seconds} s (ECOM_JWT_MAX_TTL_SECONDS)")
    typer.echo(mint(customer_id, ttl_seconds=ttl, auth=auth))


def _stored_auth() -> config.Auth:
    """Token settings whose keys come from the stack's Secrets Manager (what the deployed functions
    verify with), or the configured values when the stack has no secrets yet."""
    import dataclasses

    from botocore.exceptions import BotoCoreError, ClientError

    from bootstrap import spec
    from ecom_core import secrets

    r = config.resources()
    # The issuer the deployed authorizer verifies on this target (the production one on AWS).
    stored = dataclasses.replace(
        config.auth(),
        jwt_secret_id=r.jwt_secret_name,
        operator_key_secret_id=r.operator_secret_name,
        jwt_issuer=spec.jwt_issuer(config.stack().target),
    )
    try:
        secrets.jwt_secret(stored)
        secrets.operator_key(stored)
    except (BotoCoreError, ClientError):
        return dataclasses.replace(config.auth(), jwt_issuer=stored.jwt_issuer)
    return stored


secrets_app = typer.Typer(help="The token key and the operator key in Secrets Manager.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("rotate")
def secrets_rotate(
    which: str = typer.Argument(..., help="jwt (the token signing key) or operator (the operator key)"),
) -> None:
    """Write a new random value. Deployed functions pick it up within ECOM_SECRET_CACHE_SECONDS; tokens
    signed with the old key stop working then. (On the emulators `ecom bootstrap` restores the configured value.)"""
    from ecom_core import aws
    from ecom_core.secrets import new_secret_value

    r = config.resources()
    names = {"jwt": r.jwt_secret_name, "operator": r.operator_secret_name}
    if which not in names:
        fail(f"rotate what? {which!r}: say jwt or operator")
    version = aws.client("secretsmanager").put_secret_value(SecretId=names[which], SecretString=new_secret_value())
    typer.echo(f"rotated {names[which]} (version {version['VersionId']}); the value is in Secrets Manager only")


def _read_api(path: str, params: dict, as_customer: str | None, bearer: str | None, follow: bool) -> list[dict]:
    """GET a read route, following `next` when asked. Default credential: the operator key (local)."""
    import requests

    from handlers.auth import mint

    info = _endpoints(config.stack())
    if bearer:
        authorization = f"Bearer {bearer}"
    elif as_customer:
        authorization = f"Bearer {mint(as_customer, ttl_seconds=300, auth=_stored_auth())}"
    else:
        from ecom_core.secrets import operator_key

        authorization = f"Operator {operator_key(_stored_auth())}"
    pages: list[dict] = []
    params = {k: v for k, v in params.items() if v is not None}
    while True:
        try:
            response = requests.get(
                info["api_url"] + path, params=params, timeout=60, headers={"Authorization": authorization}
            )
        except requests.RequestException as exc:
            fail(f"cannot reach the API: {exc}")
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:300]}
        if response.status_code != 200:
            fail(f"{response.status_code}: {body.get('error', body)}")
        pages.append(body)
        if not follow or not body.get("next"):
            return pages
        params["next"] = body["next"]


def _table(rows: list[list], headers: list[str], right: set[int]) -> None:
    widths = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(headers)]

    def fmt(r: list) -> str:
        return "  ".join(
            str(v).rjust(w) if i in right else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
        )

    typer.echo(fmt(headers))
    typer.echo("  ".join("-" * w for w in widths))
    for row in rows:
        typer.echo(fmt(row))


@query_app.command("customer")
def query_customer(
    customer_id: str = typer.Argument(...),
    limit: int | None = typer.Option(None, "--limit", help="invoices per page (1-100, default 20)"),
    follow: bool = typer.Option(True, "--all/--first-page", help="follow `next` to the end"),
    as_customer: bool = typer.Option(
        False, "--as-customer", help="use a token for this customer instead of the operator key"
    ),
    bearer: str | None = typer.Option(None, "--token", help="send this bearer token"),
) -> None:
    """A customer's invoices, newest first: number, date, country, kind, lines, total."""
    pages = _read_api(
        f"/customers/{customer_id}/invoices", {"limit": limit}, customer_id if as_customer else None, bearer, follow
    )
    invoices = [i for p in pages for i in p["invoices"]]
    _table(
        [
            [i["invoiceNo"], i["invoiceDate"], i["country"] or "", i["kind"], i["lineCount"], f"{i['total']:.2f}"]
            for i in invoices
        ],
        ["invoice", "date", "country", "kind", "lines", "total"],
        right={4, 5},
    )
    typer.echo(
        f"{len(invoices)} invoices for customer {customer_id}" + (" (more with --all)" if pages[-1].get("next") else "")
    )


@query_app.command("invoice")
def query_invoice(
    invoice_no: str = typer.Argument(...),
    limit: int | None = typer.Option(None, "--limit", help="lines per page (1-100, default 20)"),
    follow: bool = typer.Option(True, "--all/--first-page", help="follow `next` to the end"),
    as_customer: str | None = typer.Option(None, "--as-customer", help="use a token for this customer id"),
    bearer: str | None = typer.Option(None, "--token", help="send this bearer token"),
) -> None:
    """An invoice: header, lines (stock code, description, quantity, unit price, amount) and total."""
    pages = _read_api(f"/invoices/{invoice_no}", {"limit": limit}, as_customer, bearer, follow)
    head = pages[0]
    typer.echo(
        f"invoice {head['invoiceNo']} ({head['kind']})  customer {head['customerId'] or 'guest'}  "
        f"{head['country']}  {head['invoiceDate']}"
    )
    lines = [line for p in pages for line in p["lines"]]
    _table(
        [
            [
                line["stockCode"],
                (line["description"] or "")[:40],
                line["quantity"],
                f"{line['unitPrice']:.2f}",
                f"{line['amount']:.2f}",
            ]
            for line in lines
        ],
        ["stock code", "description", "qty", "unit price", "amount"],
        right={2, 3, 4},
    )
    typer.echo(
        f"{head['lineCount']} lines, total {head['total']:.2f}"
        + (f" (shown {len(lines)}; more with --all)" if len(lines) < head["lineCount"] else "")
    )


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
