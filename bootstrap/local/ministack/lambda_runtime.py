"""Patches to MiniStack's Lambda runtime (`ministack.core.lambda_runtime`).

1. Python functions run from their deployed zip alone (`detect_runtime_binary` replaces
   `_detect_runtime_binary`). MiniStack starts every Python worker with its own interpreter
   (`sys.executable`, here the project's virtualenv), so a function saw every package installed
   there (psycopg2, pandas, typer, ministack itself, and our own packages through the editable
   install) and a zip lacking a module still worked locally. Here a Python worker runs
   `<venv python> -I -S _worker.py` (through a two-line `sh` wrapper, since MiniStack passes one
   binary): no site-packages, no PYTHONPATH, no script directory. Its sys.path is the function's
   code directory (extracted zip; MiniStack's layers ahead of it as before), then a directory
   holding exactly the libraries AWS's Python runtime provides (boto3, botocore, s3transfer,
   jmespath, python-dateutil, six, urllib3: symlinks to the virtualenv's installed files, built
   once per emulator process, `build_isolated_python`), then the standard library: the order of
   /var/task, /var/runtime and /var/lang/lib on AWS, so a zip that bundles its own boto3 runs on
   it. The worker's environment is MiniStack's, unchanged (-I only stops Python itself reading
   PYTHON* variables). No upstream proposal.
2. A failed init answers as AWS's Python runtime does (awslambdaric's bootstrap): the worker
   reports `Runtime.ImportModuleError` ("Unable to import module 'm': No module named 'x'",
   stackTrace []) for an ImportError, `Runtime.UserCodeSyntaxError` for a SyntaxError,
   `Runtime.HandlerNotFound` ("Handler 'h' missing on module 'm'") when the module has no such
   name, and any other exception raised at import under its own class name with its stack trace.
   `Worker._spawn` turns MiniStack's `RuntimeError("Worker init failed: ...")` into a
   `FunctionInitError` carrying that error, and lambda_svc.py's patch answers the Invoke with it
   (MiniStack answered `{"errorMessage": "Worker init failed: No module named 'x'", "errorType":
   "RuntimeError"}`). No upstream proposal.
3. `envelope_dumps` (the module's `json`): a Kinesis batch handed to the worker written with
   orjson. No upstream proposal (docs/emulator-notes.md, the row on the worker hand-off).
4. A worker whose handler raised stays up (`keeping_the_worker_after_a_handler_error` on
   `Worker.invoke`): MiniStack killed it after every error answer, so each invocation after one
   cold-started (an API authorizer refusing a token took ~3 s per request). AWS keeps the execution
   environment after an error the runtime reports; a timeout or a crash still replaces the worker.
   No upstream proposal yet.

Checked in tests/unit/bootstrap/local/test_ministack.py, and on the running stack for 1 and 2
in tests/stack/bootstrap/local/test_ministack.py.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import threading
import types
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import orjson

from bootstrap.local.ministack._patching import check as _check
from bootstrap.local.ministack._patching import json_module_with, targets

logger = logging.getLogger("lambda_runtime")

MODULE = "ministack.core.lambda_runtime"
PATCHED = targets(MODULE, "json", kind="module") + targets(
    MODULE, "_detect_runtime_binary", "Worker._spawn", "Worker.invoke"
)
USED = targets(MODULE, "_PYTHON_WORKER_SCRIPT", kind="value")

# What AWS's Python runtimes provide beside the standard library (/var/runtime): boto3 and what it
# needs. Nothing else of the virtualenv is visible to a function.
RUNTIME_DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")

# MiniStack's worker script reports a failed init as {"status": "error", "error": str(e)}; ours
# reports AWS's error object (as JSON text in "error", which MiniStack puts in its RuntimeError).
_INIT_ERROR_LINE = '_real_stdout.write(json.dumps({"status": "error", "error": str(e)}) + "\\n")'
_AWS_INIT_ERROR_LINE = (
    '_real_stdout.write(json.dumps({"status": "error", "error": _ms_init_error(e, module_name, handler_name)}) + "\\n")'
)
# A handler's exception: MiniStack's worker reports it as an error, and `Worker.invoke` then kills
# the worker, so the next invocation cold-starts. AWS keeps the execution environment after an
# error the runtime reports (it resets it after a crash or a timeout). The worker reports it under
# this key of an "ok" answer instead; `keeping_the_worker_after_a_handler_error` turns it back into
# MiniStack's error answer after `invoke`, the worker alive.
HANDLER_ERROR_KEY = "ecom_handler_error"
_HANDLER_ERROR_ANSWER = '{"status": "error", "error": str(e), "trace": traceback.format_exc()}'
_KEPT_HANDLER_ERROR_ANSWER = (
    '{"status": "ok", "' + HANDLER_ERROR_KEY + '": {"error": str(e), "trace": traceback.format_exc()}}'
)

# Put ahead of MiniStack's worker script: the runtime's libraries after what the script inserts
# at sys.path[0] (the code directory, then layers), before the standard library; and the error
# AWS's runtime reports for a failed init (awslambdaric bootstrap.py, `_get_handler` and
# `build_fault_result`).
_WORKER_PREAMBLE = """import sys as _ms_sys
_ms_sys.path.insert(0, __RUNTIME_DIR__)
del _ms_sys


def _ms_init_error(e, module_name, handler_name):
    import json, sys, traceback
    if isinstance(e, ImportError):
        error = {"errorMessage": "Unable to import module '%s': %s" % (module_name, e),
                 "errorType": "Runtime.ImportModuleError", "stackTrace": []}
    elif isinstance(e, SyntaxError):
        error = {"errorMessage": "Syntax error in module '%s': %s" % (module_name, e),
                 "errorType": "Runtime.UserCodeSyntaxError",
                 "stackTrace": ['  File "%s" Line %s\\n    %s' % (e.filename, e.lineno, e.text)]}
    elif (isinstance(e, AttributeError) and sys.modules.get(module_name) is not None
          and not hasattr(sys.modules[module_name], handler_name)):
        error = {"errorMessage": "Handler '%s' missing on module '%s'" % (handler_name, module_name),
                 "errorType": "Runtime.HandlerNotFound", "stackTrace": []}
    else:  # raised while importing the module: its own type, the frames below this script's
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename != __file__]
        error = {"errorMessage": str(e), "errorType": type(e).__name__,
                 "stackTrace": traceback.format_list(frames)}
    return json.dumps(error)


"""


class KinesisBatchEvent(dict):
    """The event of one shard's batch as the poller below builds it: `{"Records": [...]}` of
    `kinesis_event_record`s, so only strings, integers and a finite arrival time (never None, NaN
    or a non-string key). `envelope_dumps` recognises it."""


def envelope_dumps(obj, **kwargs) -> str:
    """MiniStack's worker hand-off writes `json.dumps({"event": event, "ctx": {...}})` to the warm
    Lambda worker's stdin. For a Kinesis batch (5,000 records, ~4.5 MB of JSON) that took ~60 ms of
    the emulator's only interpreter per batch, 8 % of its samples at 200,000 rows (py-spy); orjson
    writes the same values in ~5 ms. Only a KinesisBatchEvent goes to orjson, whose output for such a value
    parses to what json's does (separators aside), and only if it is ASCII, as json's is; every
    other value, and every call with options, is json's."""
    if not kwargs and type(obj) is dict and any(type(value) is KinesisBatchEvent for value in obj.values()):
        members = []
        for key, value in obj.items():
            text = None
            if type(value) is KinesisBatchEvent:
                raw = orjson.dumps(value)
                text = raw.decode("ascii") if raw.isascii() else None
            members.append(f"{json.dumps(key)}: {text if text is not None else json.dumps(value)}")
        return "{" + ", ".join(members) + "}"
    return json.dumps(obj, **kwargs)


def json_with_envelope_dumps() -> types.ModuleType:
    """The json module as MiniStack's lambda_runtime sees it: json itself, dumps as above."""
    return json_module_with(dumps=envelope_dumps)


@dataclass(frozen=True)
class IsolatedPython:
    """What a Python worker runs on: `interpreter` (the `sh` wrapper starting this interpreter with
    -I -S), `runtime_dir` (the runtime's libraries, nothing else) and the worker script."""

    directory: Path
    interpreter: str
    runtime_dir: Path
    worker_script: str


def top_level_entries(dist: importlib.metadata.Distribution) -> list[str]:
    """The names a distribution installs at the top of site-packages (packages, modules, its
    .dist-info), from its RECORD; scripts outside site-packages and caches left out."""
    if not dist.files:
        raise RuntimeError(f"{dist.metadata['Name']}: no RECORD of its installed files")
    names = {PurePosixPath(str(f)).parts[0] for f in dist.files}
    return sorted(n for n in names if n not in ("..", "__pycache__") and not n.endswith(".pth"))


def link_distributions(names: Iterable[str], directory: Path) -> None:
    """`directory` as a site-packages holding exactly these installed distributions: symlinks to
    their top-level entries (the same files, so the same versions the project pins and tests)."""
    for name in names:
        dist = importlib.metadata.distribution(name)
        for entry in top_level_entries(dist):
            source = Path(dist.locate_file(entry))
            if not source.exists():
                raise RuntimeError(f"{name}: {source} is listed in its RECORD but not installed")
            os.symlink(source, directory / entry, target_is_directory=source.is_dir())


def worker_script(runtime_dir: Path) -> str:
    """MiniStack's Python worker script, with the runtime's libraries on its path and AWS's init
    errors (see the module's docstring)."""
    from ministack.core import lambda_runtime

    script = lambda_runtime._PYTHON_WORKER_SCRIPT
    return _WORKER_PREAMBLE.replace("__RUNTIME_DIR__", repr(str(runtime_dir))) + script.replace(
        _INIT_ERROR_LINE, _AWS_INIT_ERROR_LINE
    ).replace(_HANDLER_ERROR_ANSWER, _KEPT_HANDLER_ERROR_ANSWER)


def script_problems() -> list[str]:
    """What our changes to MiniStack's worker script need to find in it, if missing."""
    from ministack.core import lambda_runtime

    script = getattr(lambda_runtime, "_PYTHON_WORKER_SCRIPT", "")
    wanted = {_INIT_ERROR_LINE: 1, "sys.path.insert(0, code_dir)": 1, _HANDLER_ERROR_ANSWER: 1}
    return [
        f"{MODULE}._PYTHON_WORKER_SCRIPT has {script.count(text)} x {text!r}, expected {count}"
        for text, count in wanted.items()
        if script.count(text) != count
    ]


def build_isolated_python(parent: str | None = None) -> IsolatedPython:
    """A directory (under `parent`, else the temp dir: the stack's data dir for the embedded
    emulator) with `runtime/` holding exactly RUNTIME_DISTRIBUTIONS (symlinks to the installed
    files: the same versions the project pins and tests) and `python`, the wrapper. Removed when
    the process exits."""
    directory = Path(tempfile.mkdtemp(prefix="ecom-lambda-python-", dir=parent))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    runtime_dir = directory / "runtime"
    runtime_dir.mkdir()
    link_distributions(RUNTIME_DISTRIBUTIONS, runtime_dir)
    interpreter = directory / "python"
    # -I: no PYTHON* variables, no user site, no script directory on sys.path; -S: no site-packages.
    interpreter.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -S "$@"\n')
    interpreter.chmod(0o755)
    return IsolatedPython(directory, str(interpreter), runtime_dir, worker_script(runtime_dir))


_isolated: IsolatedPython | None = None


def detect_runtime_binary(original):
    """MiniStack's `_detect_runtime_binary`, with Python runtimes on the isolated interpreter."""

    def detect(runtime: str) -> tuple[str, str]:
        if _isolated is not None and isinstance(runtime, str) and runtime.startswith("python"):
            return _isolated.interpreter, _isolated.worker_script
        return original(runtime)

    return detect


class FunctionInitError(RuntimeError):
    """A function's init failed; `error` is what AWS's runtime reports (errorMessage, errorType,
    stackTrace). The message keeps MiniStack's "Worker init failed: " prefix (a SnapStart publish
    shows it as the version's StateReason)."""

    def __init__(self, error: dict):
        super().__init__(f"Worker init failed: {error['errorType']}: {error['errorMessage']}")
        self.error = error


_INIT_FAILED = "Worker init failed: "
# The last init failure on this thread, for lambda_svc.py's patch to answer the Invoke with (a
# worker is spawned on the invoking thread, inside MiniStack's `_execute_function_warm`).
_init_failures = threading.local()


def init_error_of(exc: BaseException) -> dict | None:
    """The AWS error our worker script reported, from MiniStack's RuntimeError; None for any other
    failure (a worker that died, a Node.js worker's own report)."""
    message = str(exc)
    if not message.startswith(_INIT_FAILED + "{"):
        return None
    try:
        error = json.loads(message[len(_INIT_FAILED) :])
    except ValueError:
        return None
    if not (isinstance(error, dict) and {"errorMessage", "errorType", "stackTrace"} <= error.keys()):
        return None
    return error


def take_init_error() -> dict | None:
    """The init failure recorded on this thread since the last call, if any (and forget it)."""
    error = getattr(_init_failures, "error", None)
    _init_failures.error = None
    return error


def spawn_reporting_init_errors(original):
    """`Worker._spawn`, raising FunctionInitError (and recording it for this thread) when the
    worker reported an init failure; every other outcome is MiniStack's."""

    def _spawn(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        except RuntimeError as exc:
            error = init_error_of(exc)
            if error is None:
                raise
            _init_failures.error = error
            raise FunctionInitError(error) from None

    _spawn.__wrapped__ = original
    return _spawn


def check() -> None:
    _check(__name__, PATCHED, USED, script_problems())


def keeping_the_worker_after_a_handler_error(invoke):
    """`Worker.invoke`, with a handler's exception answered as MiniStack answers it (status "error",
    its message and trace) while the worker stays up for the next invocation, as on AWS."""

    def invoke_keeping_the_worker(self, *args, **kwargs):
        response = invoke(self, *args, **kwargs)
        if response.get("status") == "ok" and HANDLER_ERROR_KEY in response:
            error = response.pop(HANDLER_ERROR_KEY)
            response.pop("result", None)
            response.update(status="error", error=error.get("error", ""), trace=error.get("trace", ""))
        return response

    invoke_keeping_the_worker.__wrapped__ = invoke
    return invoke_keeping_the_worker


def apply() -> None:
    """Refuse (PatchTargetMissing) before changing anything unless every name is there, then patch."""
    global _isolated
    check()
    from ministack.core import lambda_runtime

    if os.name == "posix":
        _isolated = build_isolated_python()
    else:  # no sh: MiniStack's interpreter, the virtualenv's packages visible (docs/emulator-notes.md)
        logger.warning("Lambda Python workers are not isolated on %s: they see the emulator's packages", os.name)
    lambda_runtime.json = json_with_envelope_dumps()
    lambda_runtime._detect_runtime_binary = detect_runtime_binary(lambda_runtime._detect_runtime_binary)
    lambda_runtime.Worker._spawn = spawn_reporting_init_errors(lambda_runtime.Worker._spawn)
    lambda_runtime.Worker.invoke = keeping_the_worker_after_a_handler_error(lambda_runtime.Worker.invoke)
