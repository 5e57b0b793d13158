"""The Lambda zips (bootstrap/package.py): reproducible, self-contained, and importable where only
the standard library exists, as on the Lambda runtime. No stack needed."""

from __future__ import annotations

import importlib.metadata
import io
import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from bootstrap import package
from bootstrap.spec import platform

FUNCTIONS = platform().functions


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """An interpreter with the standard library and nothing else: a virtualenv made here from the
    base interpreter, without pip and without the system's or this project's site-packages."""
    where = tmp_path_factory.mktemp("bare-venv")
    venv.EnvBuilder(with_pip=False, system_site_packages=False, symlinks=True).create(where)
    python = where / "bin" / "python"
    probe = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u; print([m for m in ('boto3', 'psycopg2', "
            "'typer', 'pandas') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]", probe.stdout  # really bare
    return python


def _unpack(blob: bytes, where: Path) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        archive.extractall(where)
        return archive.namelist()


def test_zips_are_reproducible_and_sorted():
    for fn in FUNCTIONS:
        first, second = package.function_zip(fn), package.function_zip(fn)
        assert first == second and package.code_sha256(first) == package.code_sha256(second), fn.name
        names = zipfile.ZipFile(io.BytesIO(first)).namelist()
        assert names == sorted(names)
        infos = zipfile.ZipFile(io.BytesIO(first)).infolist()
        assert {(i.date_time, i.external_attr >> 16) for i in infos} == {(package.FIXED_DATE, 0o100644)}


def test_each_zip_holds_what_its_handler_imports_and_the_pinned_boto3():
    zips = {fn.name: set(zipfile.ZipFile(io.BytesIO(package.function_zip(fn))).namelist()) for fn in FUNCTIONS}
    r = platform().resources
    ours = {name: {n for n in names if n.split("/")[0] in package.SHIPPED} for name, names in zips.items()}
    # Only its own handler: the authorizer's zip holds no ingestion code, and no zip holds tooling.
    assert "handlers/ingestion.py" in ours[r.ingestion_function]
    assert "handlers/ingestion.py" not in ours[r.authorizer_function]
    assert "handlers/stream_trigger.py" not in ours[r.reads_function]
    assert {"etl/job.py", "warehouse/redshift.py", "warehouse/schema.sql", "warehouse/analytics.sql"} <= ours[
        r.etl_function
    ]
    assert not any(n.startswith("handlers/") for n in ours[r.etl_function])
    # The Postgres dialect and driver stay on the operator's machine.
    assert "warehouse/db.py" not in ours[r.etl_function]
    for name, names in zips.items():
        tops = {n.split("/")[0] for n in names}
        assert not tops & {"ecom", "bench", "bootstrap", "replay", "tests", "psycopg2", "typer", "pandas", "ministack"}
        assert {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py"} <= tops, name
        assert f"boto3-{importlib.metadata.version('boto3')}.dist-info/METADATA" in names
        assert not any(n.endswith((".pyc", "/RECORD", "/INSTALLER", ".so")) for n in names), name


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.name)
def test_every_module_of_every_zip_imports_in_a_bare_interpreter(fn, bare_python, tmp_path):
    """Each zip, unpacked as /var/task is, in an interpreter with only the standard library: every
    module of ours it holds imports, the handler the template names is a callable, and boto3 is
    the bundled one at the pinned version (so the code runs on the botocore it was tested with)."""
    names = _unpack(package.function_zip(fn), tmp_path)
    modules = sorted(
        n[:-3].replace("/", ".").removesuffix(".__init__")
        for n in names
        if n.endswith(".py") and n.split("/")[0] in package.SHIPPED
    )
    module, attribute = fn.handler.rsplit(".", 1)
    code = f"""
import importlib, json, sys
sys.path.insert(0, {str(tmp_path)!r})
for name in {modules!r}:
    importlib.import_module(name)
handler = getattr(importlib.import_module({module!r}), {attribute!r})
import boto3, botocore
outside = sorted(n for n, m in sys.modules.items() if getattr(m, "__file__", None)
                 and not m.__file__.startswith({str(tmp_path)!r}) and not m.__file__.startswith(sys.base_prefix))
print(json.dumps({{"callable": callable(handler), "boto3": boto3.__version__, "botocore": botocore.__version__,
                   "outside": outside}}))
"""
    out = subprocess.run(
        [bare_python, "-I", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer == {
        "callable": True,
        "boto3": importlib.metadata.version("boto3"),
        "botocore": importlib.metadata.version("botocore"),
        "outside": [],
    }


def test_a_shipped_module_importing_a_local_only_library_fails_the_build(tmp_path):
    """The zip contract is checked while building: a handler importing psycopg2 (present in this
    virtualenv, absent on Lambda) is refused, naming the module and the import."""
    for name in ("handlers", "ecom_core"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / "ecom_core" / "util.py").write_text("import json\nimport psycopg2\n")
    (tmp_path / "handlers" / "bad.py").write_text(
        "from ecom_core import util\ntry:\n    import orjson\nexcept ImportError:\n    orjson = None\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pandas\n"
    )
    with pytest.raises(package.ZipContractError, match=r"ecom_core\.util imports psycopg2"):
        package.function_zip("handlers.bad.handler", root=tmp_path)
    # Guarded and type-checking-only imports are not dependencies.
    (tmp_path / "ecom_core" / "util.py").write_text("import json\n")
    assert package.check_contract("handlers.bad", root=tmp_path) == [
        "ecom_core",
        "ecom_core.util",
        "handlers",
        "handlers.bad",
    ]


def test_a_changed_module_changes_only_the_zips_that_hold_it(tmp_path):
    import shutil

    for name in package.SHIPPED:
        shutil.copytree(package.PROJECT_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    before = {fn.name: package.function_zip(fn, root=tmp_path) for fn in FUNCTIONS}
    reads = tmp_path / "handlers" / "reads.py"
    reads.write_text(reads.read_text() + "\n# changed\n")
    after = {fn.name: package.function_zip(fn, root=tmp_path) for fn in FUNCTIONS}
    assert {name for name in before if before[name] != after[name]} == {platform().resources.reads_function}


def test_the_declared_runtime_is_what_the_zips_are_built_for():
    assert platform().runtime == "python3.12"
    assert sys.version_info[:2] <= (3, 12)  # the build checks against this interpreter's standard library
    assert "distutils" in package.REMOVED_IN_312 and not package.allowed_external("distutils")
