"""What the patch modules share: the pinned MiniStack release, the check that what a module
patches is there before it patches anything, and two small helpers."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import json
import re
import types
from collections.abc import Iterable
from dataclasses import dataclass

# The release every patch was written and checked against (pyproject.toml pins the same;
# tests/unit/bootstrap/local/test_ministack.py checks the two agree). Another release may have moved, renamed or
# changed what we replace: the launcher refuses to start on it rather than patch it blind.
MINISTACK_VERSION = "1.5.33"


class PatchTargetMissing(RuntimeError):
    """The installed MiniStack is not the one the patches were written for: another release, or a
    name a patch replaces or uses is missing (or is not a function where one is replaced)."""


@dataclass(frozen=True)
class Target:
    """A name in one of MiniStack's modules: `attribute` may be dotted (`Worker._spawn`).
    `kind` is what it must be: "function" (callable), "module", or "value" (anything)."""

    module: str
    attribute: str
    kind: str = "function"

    def __str__(self) -> str:
        return f"{self.module}.{self.attribute}"

    def problem(self) -> str | None:
        """None when the name is there and of its kind; otherwise what is wrong with it."""
        try:
            value = importlib.import_module(self.module)
        except ImportError as exc:
            return f"{self} (module not importable: {exc})"
        for part in self.attribute.split("."):
            if not hasattr(value, part):
                return f"{self} (missing)"
            value = getattr(value, part)
        if self.kind == "function" and not callable(value):
            return f"{self} (not callable: {type(value).__name__})"
        if self.kind == "module" and not isinstance(value, types.ModuleType):
            return f"{self} (not a module: {type(value).__name__})"
        return None


def targets(module: str, *attributes: str, kind: str = "function") -> tuple[Target, ...]:
    return tuple(Target(module, attribute, kind) for attribute in attributes)


def installed_version() -> str | None:
    try:
        return importlib.metadata.version("ministack")
    except importlib.metadata.PackageNotFoundError:
        return None


def check(
    patch: str, patched: Iterable[Target], used: Iterable[Target] = (), extra_problems: Iterable[str] = ()
) -> None:
    """Raise PatchTargetMissing, naming every problem, unless MiniStack is the pinned release and
    every name `patch` replaces (`patched`) or relies on (`used`) is there and of its kind."""
    problems = []
    version = installed_version()
    if version != MINISTACK_VERSION:
        problems.append(
            f"MiniStack {version or '(not installed)'} is installed; these patches are for {MINISTACK_VERSION}"
        )
    missing = [p for p in (t.problem() for t in patched) if p]
    if missing:
        problems.append("names it replaces: " + ", ".join(missing))
    missing_used = [p for p in (t.problem() for t in used) if p]
    if missing_used:
        problems.append("names its replacements use: " + ", ".join(missing_used))
    problems.extend(extra_problems)
    if problems:
        raise PatchTargetMissing(
            f"{patch}: refusing to patch MiniStack {version or '(not installed)'} "
            f"(pinned {MINISTACK_VERSION}): " + "; ".join(problems)
        )


def memoized_for_text(function):
    """`function`, remembering its answers for text arguments (anything else goes straight to it).
    Only for pure functions of their one argument."""
    remembered = functools.lru_cache(maxsize=1 << 16)(function)

    @functools.wraps(function)
    def call(text):
        return remembered(text) if type(text) is str else function(text)

    call.cache_info = remembered.cache_info
    return call


def json_module_with(**replaced) -> types.ModuleType:
    """A copy of the json module with the named functions replaced, to hand to one MiniStack module
    as its `json` (the real module stays as it is for everyone else)."""
    module = types.ModuleType("json")
    module.__dict__.update(json.__dict__)
    module.__dict__.update(replaced)
    return module


_STRICT_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def strictly_base64(data) -> bool:
    """What `b64decode(data, validate=True)` accepts (that alphabet, at most two "=" at the end, a
    multiple of 4 long), without decoding it to find out."""
    return isinstance(data, str) and len(data) % 4 == 0 and _STRICT_BASE64.fullmatch(data) is not None
