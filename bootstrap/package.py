"""The Lambda zips: one per function, self-contained and reproducible.

A function's zip holds
- the modules of ours its handler imports, followed through every import (module-level and inside
  functions) across the packages that may ship (`SHIPPED`), with their packages' `__init__.py`
  and the data files those packages read (the warehouse's SQL);
- boto3 and what it needs (botocore, s3transfer, jmespath, python-dateutil, six, urllib3) at the
  versions the project pins and tests with, copied from the installed distributions. On AWS the
  function then runs on that botocore, not on whatever the runtime bundles: /var/task comes first
  on the runtime's sys.path.

The zip contract, checked while building: a shipped module imports only the standard library (of
the runtime the spec declares), the bundled libraries and modules of ours that are in the zip
itself. psycopg2, typer, pandas, ministack and the like can never reach a zip: a module that needs
one of them is local tooling, and a shipped module that imports it fails the build (ZipContractError)
instead of failing on AWS at the first invocation. Imports guarded by `except ImportError` (an
optional speed-up such as orjson) and `if TYPE_CHECKING:` blocks are not dependencies.

Every bundled library must be pure Python: the zip is built here for the runtime the spec declares
(python3.12, x86_64), and a compiled extension built for this machine's interpreter would not load
there. Entries are sorted, with a fixed timestamp and fixed permissions, so unchanged code always
gives the same bytes and the same CodeSha256: re-deploying it changes nothing, and a change to one
module changes only the zips of the functions that import it.
"""

from __future__ import annotations

import ast
import base64
import functools
import hashlib
import importlib.metadata
import io
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ecom_core.config import PROJECT_ROOT

FIXED_DATE = (1980, 1, 1, 0, 0, 0)
# Our packages a zip may hold. The rest (ecom, bench, bootstrap, replay) is tooling that runs on
# the operator's machine.
SHIPPED = ("ecom_core", "handlers", "etl", "warehouse")
# Files other than modules that a shipped package reads at run time (importlib.resources).
DATA_FILES = {"warehouse": ("*.sql",)}
# The library every function gets, with its own dependencies.
BUNDLED_ROOT = "boto3"
# Removed from the standard library before Python 3.12 (the declared runtime): present in this
# interpreter's list of standard modules, absent on the Lambda runtime.
REMOVED_IN_312 = frozenset({"distutils", "imp", "asynchat", "asyncore", "smtpd"})
# Installer records that differ between installs of the same release; the rest of .dist-info
# (METADATA, licences) ships, so importlib.metadata answers for the bundled libraries.
_INSTALL_RECORDS = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})


class ZipContractError(RuntimeError):
    """A shipped module imports something its zip cannot carry."""


@dataclass(frozen=True)
class Imports:
    """What one module imports: modules of ours (dotted names) and top-level external names."""

    ours: frozenset[str]
    external: frozenset[str]


# ---------------------------------------------------------------- our modules
def module_path(name: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The file of a module of ours (`etl.run` -> etl/run.py, `etl` -> etl/__init__.py), or None."""
    parts = name.split(".")
    if parts[0] not in SHIPPED and parts[0] not in _ALL_OURS:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


_ALL_OURS = ("ecom", "bench", "bootstrap", "replay", "tests")


def _is_optional(handlers: list[ast.ExceptHandler]) -> bool:
    names = set()
    for handler in handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names.update(k.id for k in kinds if isinstance(k, ast.Name))
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names a module imports, skipping optional and type-checking-only imports."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Try) and _is_optional(node.handlers):
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.append(prefix)
            found.extend(f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imports_of(module: str, root: Path = PROJECT_ROOT) -> Imports:
    path = module_path(module, root)
    if path is None:
        raise ZipContractError(f"no module {module} under {root}")
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    ours: set[str] = set()
    external: set[str] = set()
    for name in _imported_names(tree, module, path.name == "__init__.py"):
        top = name.split(".")[0]
        if top in SHIPPED or top in _ALL_OURS:
            # `from ecom_core import aws` names module ecom_core.aws; `from ecom_core.x import f`
            # names a function: keep the longest prefix that is a module.
            parts = name.split(".")
            while parts and module_path(".".join(parts), root) is None:
                parts.pop()
            if parts:
                ours.add(".".join(parts))
        elif top and top != "__future__":
            external.add(top)
    return Imports(frozenset(ours), frozenset(external))


def closure(handler_module: str, root: Path = PROJECT_ROOT) -> tuple[list[str], dict[str, frozenset[str]]]:
    """Every module of ours `handler_module` reaches (with each package on the way), and the
    external names each of them imports."""
    seen: set[str] = set()
    external: dict[str, frozenset[str]] = {}
    todo = [handler_module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # the packages on the way
        found = imports_of(name, root)
        external[name] = found.external
        todo.extend(found.ours - seen)
    return sorted(seen), external


# ---------------------------------------------------------------- the bundled libraries
@functools.cache
def bundled_distributions() -> tuple[importlib.metadata.Distribution, ...]:
    """boto3 and its dependencies (not extras), as installed: the pinned versions."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [BUNDLED_ROOT]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found:
            continue
        dist = importlib.metadata.distribution(name)
        if "Root-Is-Purelib: true" not in (dist.read_text("WHEEL") or ""):
            raise ZipContractError(
                f"{dist.metadata['Name']} is not pure Python: it cannot be bundled for the "
                "runtime the spec declares from this machine"
            )
        found[key] = dist
        todo.extend(
            re.match(r"[A-Za-z0-9_.-]+", req).group(0)  # type: ignore[union-attr]
            for req in dist.requires or []
            if "extra ==" not in req
        )
    return tuple(found[k] for k in sorted(found))


def _bundled_files(dist: importlib.metadata.Distribution) -> list[tuple[str, Path]]:
    files = []
    for entry in dist.files or []:
        posix = PurePosixPath(str(entry))
        if posix.parts[0] == ".." or "__pycache__" in posix.parts or posix.suffix == ".pyc":
            continue
        if posix.parts[0].endswith(".dist-info") and posix.name in _INSTALL_RECORDS:
            continue
        files.append((posix.as_posix(), Path(str(dist.locate_file(entry)))))
    return files


@functools.cache
def bundled_top_level() -> frozenset[str]:
    """The import names the bundled libraries provide (boto3, botocore, dateutil, six, ...)."""
    names = set()
    for dist in bundled_distributions():
        for arcname, _ in _bundled_files(dist):
            top = arcname.split("/")[0]
            if not top.endswith(".dist-info"):
                names.add(top.removesuffix(".py"))
    return frozenset(names)


def allowed_external(name: str) -> bool:
    return (name in sys.stdlib_module_names and name not in REMOVED_IN_312) or name in bundled_top_level()


def check_contract(handler_module: str, root: Path = PROJECT_ROOT) -> list[str]:
    """The modules of ours a function's zip holds; raises ZipContractError naming every import
    the zip could not satisfy."""
    modules, external = closure(handler_module, root)
    outside = [m for m in modules if m.split(".")[0] not in SHIPPED]
    problems = [f"{m} is not a shipped package's module ({', '.join(SHIPPED)})" for m in outside]
    problems += [
        f"{m} imports {name}, which is neither the standard library nor bundled"
        for m in modules
        for name in sorted(external[m])
        if not allowed_external(name)
    ]
    if problems:
        raise ZipContractError(f"{handler_module}: " + "; ".join(problems))
    return modules


# ---------------------------------------------------------------- the zip
def handler_module(handler: str) -> str:
    """`handlers.ingestion.handler` -> `handlers.ingestion`."""
    return handler.rsplit(".", 1)[0]


def function_sources(handler: str, root: Path = PROJECT_ROOT) -> list[tuple[str, Path]]:
    """(name in the zip, file) for one handler: our modules, their data files, the bundled libraries."""
    entries: dict[str, Path] = {}
    modules = check_contract(handler_module(handler), root)
    for module in modules:
        path = module_path(module, root)
        assert path is not None
        entries[path.relative_to(root).as_posix()] = path
    for package, patterns in DATA_FILES.items():
        if package in modules:
            for pattern in patterns:
                entries.update((p.relative_to(root).as_posix(), p) for p in (root / package).glob(pattern))
    for dist in bundled_distributions():
        entries.update(_bundled_files(dist))
    return sorted(entries.items())


def function_zip(function, root: Path = PROJECT_ROOT) -> bytes:
    """The deployment package of a function (a spec.Function, or its handler, e.g. `etl.job.handler`)."""
    handler = function if isinstance(function, str) else function.handler
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for arcname, path in function_sources(handler, root):
            info = zipfile.ZipInfo(arcname, date_time=FIXED_DATE)
            info.external_attr = 0o100644 << 16
            # botocore's service models are gzip files already: deflating them again gains nothing.
            info.compress_type = zipfile.ZIP_STORED if arcname.endswith(".gz") else zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def code_sha256(blob: bytes) -> str:
    """The form Lambda reports as CodeSha256: base64 of the SHA-256 digest."""
    return base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")


def artifact_key(name: str, blob: bytes) -> str:
    """Content-addressed S3 key of a zip: a code change is a new key, unchanged code the same one."""
    return f"lambda/{name}-{hashlib.sha256(blob).hexdigest()[:32]}.zip"
