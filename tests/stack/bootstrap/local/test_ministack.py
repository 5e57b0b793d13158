"""MiniStack as the embedded stack runs it, on the running stack: the launcher and its uvicorn
server are what serve it, and Python functions see only their zip and the runtime's libraries
(bootstrap/local/ministack/lambda_runtime.py). The patches checked against MiniStack's own code, without a
stack: tests/unit/bootstrap/local/test_ministack.py."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from bootstrap import stack
from tests.support.helpers import function_zip


@pytest.mark.stack
def test_the_embedded_emulator_runs_with_the_launchers_fixes(stack_env):
    state = stack.read_state(stack_env["cfg"])
    with open(f"/proc/{state['ministack_pid']}/cmdline", "rb") as handle:
        assert b"bootstrap.ministack_launcher" in handle.read()


@pytest.mark.stack
def test_the_embedded_emulator_answers_over_uvicorn_as_over_ministacks_server(stack_env):
    import http.client

    state = stack.read_state(stack_env["cfg"])
    with open(f"/proc/{state['ministack_pid']}/maps") as handle:
        loaded = handle.read()
    assert "httptools" in loaded and "uvloop" in loaded  # the C parser and loop are what serve it
    cfg = stack_env["cfg"]
    connection = http.client.HTTPConnection("127.0.0.1", cfg.aws_port, timeout=10)
    connection.request("GET", "/_localstack/health")
    answer = connection.getresponse()
    body = answer.read()
    assert answer.status == 200 and json.loads(body)["services"]
    names = [name.lower() for name, _ in answer.getheaders()]
    assert names.count("date") == 1 and "server" not in names  # the app's own Date, once
    # Kept alive past uvicorn's default of 5 s: MiniStack keeps idle connections for 75 s, and
    # the trigger's writer threads reuse theirs between batches.
    kept = connection.sock.getsockname()
    time.sleep(6)
    connection.request("GET", "/_localstack/health")
    assert connection.getresponse().status == 200
    assert connection.sock.getsockname() == kept  # the same connection, not a new one
    connection.close()


def _test_role(cfg) -> str:
    """Under AUTH=true (bootstrap/stack.py) a function's role must exist, as on AWS: one that may do
    nothing, made once per stack."""
    from ecom_core import aws

    iam = aws.client("iam", cfg)
    try:
        return iam.get_role(RoleName="isolation-test-role")["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        from bootstrap.policies import LAMBDA_TRUST_POLICY

        return iam.create_role(
            RoleName="isolation-test-role", AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST_POLICY)
        )["Role"]["Arn"]


def _invoke_new_function(cfg, name: str, files: dict[str, str], handler: str = "fn.handler") -> tuple:
    """Create `name` from `files`, invoke it once, delete it: (FunctionError or None, payload)."""
    from ecom_core import aws

    lam = aws.client("lambda", cfg)
    role = _test_role(cfg)
    lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler=handler,
        Code={"ZipFile": function_zip(files)},
        Timeout=30,
    )
    try:
        answer = lam.invoke(FunctionName=name, Payload=b"{}")
        return answer.get("FunctionError"), json.loads(answer["Payload"].read())
    finally:
        lam.delete_function(FunctionName=name)


@pytest.mark.stack
@pytest.mark.parametrize("library", ["psycopg2", "typer", "ecom_core"])
def test_a_function_whose_zip_lacks_a_module_fails_as_on_aws(stack_env, library):
    """The virtualenv has psycopg2, typer and (editable) our own packages; a zip without them fails
    at its first invocation, with the answer AWS gives."""
    function_error, payload = _invoke_new_function(
        stack_env["cfg"],
        f"isolation-lacks-{library.replace('_', '-')}",
        {
            "handlers/__init__.py": "",
            "handlers/x.py": f"import {library}\n\ndef handler(event, context):\n    return 1\n",
        },
        handler="handlers.x.handler",
    )
    assert function_error == "Unhandled"
    assert payload == {
        "errorMessage": f"Unable to import module 'handlers.x': No module named '{library}'",
        "errorType": "Runtime.ImportModuleError",
        "requestId": payload["requestId"],
        "stackTrace": [],
    }
    assert payload["requestId"]


@pytest.mark.stack
def test_a_function_raising_at_init_fails_with_its_own_error_type(stack_env):
    function_error, payload = _invoke_new_function(
        stack_env["cfg"], "isolation-raises-at-init", {"fn.py": "raise KeyError('no table configured')\n"}
    )
    assert function_error == "Unhandled"
    assert (payload["errorType"], payload["errorMessage"]) == ("KeyError", "'no table configured'")
    assert (
        payload["stackTrace"][-1].startswith('  File "') and 'fn.py", line 1, in <module>' in payload["stackTrace"][-1]
    )
    _, payload = _invoke_new_function(stack_env["cfg"], "isolation-no-handler", {"fn.py": "x = 1\n"})
    assert (payload["errorType"], payload["errorMessage"]) == (
        "Runtime.HandlerNotFound",
        "Handler 'handler' missing on module 'fn'",
    )


@pytest.mark.stack
def test_a_function_that_raised_keeps_its_worker_as_on_aws(stack_env):
    """MiniStack killed a worker after every error answer, so an API authorizer refusing tokens
    cold-started on every request (~3 s each); AWS keeps the execution environment after an error
    the runtime reports (bootstrap/local/ministack/lambda_runtime.py). The module's state survives
    the exception, and the error is still the function's error."""
    from ecom_core import aws

    cfg = stack_env["cfg"]
    lam = aws.client("lambda", cfg)
    source = (
        "import os\nSTARTED = os.getpid()\nCALLS = []\n\ndef handler(event, context):\n"
        "    CALLS.append(1)\n    if event.get('fail'):\n        raise ValueError('refused')\n"
        "    return {'pid': STARTED, 'calls': len(CALLS)}\n"
    )
    role = _test_role(cfg)
    lam.create_function(
        FunctionName="keeps-worker",
        Runtime="python3.12",
        Role=role,
        Handler="fn.handler",
        Code={"ZipFile": function_zip({"fn.py": source})},
        Timeout=30,
    )
    try:
        first = json.loads(lam.invoke(FunctionName="keeps-worker", Payload=b"{}")["Payload"].read())
        failed = lam.invoke(FunctionName="keeps-worker", Payload=b'{"fail": true}')
        assert failed.get("FunctionError") == "Unhandled"
        assert "refused" in json.loads(failed["Payload"].read())["errorMessage"]
        after = json.loads(lam.invoke(FunctionName="keeps-worker", Payload=b"{}")["Payload"].read())
        assert after == {"pid": first["pid"], "calls": 3}  # the same process, its state kept
    finally:
        lam.delete_function(FunctionName="keeps-worker")


_REPORTS_ITS_PATH = """
import os, sys
import boto3, botocore, six

def handler(event, context):
    return {"boto3": boto3.__version__, "boto3_file": boto3.__file__, "six_file": six.__file__,
            "six_from_zip": getattr(six, "FROM_ZIP", False), "botocore_file": botocore.__file__,
            "path": sys.path, "cwd": os.getcwd(), "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
            "site": "site" in sys.modules}
"""


@pytest.mark.stack
def test_a_function_on_boto3_alone_runs_on_the_runtimes_libraries(stack_env):
    """sys.path: the code directory, the runtime's libraries, the standard library; no site-packages
    of the virtualenv; MiniStack's environment for the worker kept."""
    import importlib.metadata

    function_error, seen = _invoke_new_function(stack_env["cfg"], "isolation-boto3-only", {"fn.py": _REPORTS_ITS_PATH})
    assert function_error is None, seen
    assert seen["boto3"] == importlib.metadata.version("boto3")
    code_dir, runtime_dir, *stdlib = seen["path"]
    assert code_dir == seen["cwd"] and os.path.basename(runtime_dir) == "runtime"
    assert seen["boto3_file"].startswith(runtime_dir + os.sep) and seen["six_file"].startswith(runtime_dir + os.sep)
    assert not [p for p in seen["path"] if "site-packages" in p] and not seen["site"]
    assert all(p.startswith(sys.base_prefix) for p in stdlib), stdlib
    assert seen["endpoint"] == stack_env["cfg"].endpoint_url.rstrip("/") or seen["endpoint"].startswith(
        "http://127.0.0.1:"
    )


@pytest.mark.stack
def test_a_zip_that_bundles_a_runtime_library_runs_on_its_own_copy(stack_env):
    """As on AWS (/var/task before /var/runtime): the zip's six and boto3 shadow the runtime's."""
    function_error, seen = _invoke_new_function(
        stack_env["cfg"],
        "isolation-bundles-its-own",
        {
            "fn.py": _REPORTS_ITS_PATH,
            "six.py": "FROM_ZIP = True\n",
            "boto3/__init__.py": "__version__ = '0.0.0-from-the-zip'\n",
        },
    )
    assert function_error is None, seen
    code_dir = seen["path"][0]
    assert seen["six_from_zip"] is True and seen["six_file"] == os.path.join(code_dir, "six.py")
    assert seen["boto3"] == "0.0.0-from-the-zip" and seen["boto3_file"].startswith(code_dir + os.sep)
    assert seen["botocore_file"].startswith(seen["path"][1] + os.sep)  # not bundled: the runtime's
