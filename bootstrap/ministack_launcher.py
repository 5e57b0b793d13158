"""Start MiniStack with our patches applied (`python -m bootstrap.ministack_launcher`).

The patches live in bootstrap/local/ministack/, one module per patched MiniStack module
(kinesis, durability, dynamodb, lambda_svc, lambda_runtime, iam), with the emulator process's settings
(process) and the server (server). Each is checked against MiniStack's own code in
tests/unit/bootstrap/local/test_ministack.py and described in docs/emulator-notes.md. Before anything is patched,
every patch module checks that MiniStack is the pinned release and has every name it replaces or
uses; otherwise the launcher exits non-zero naming what is missing. The embedded stack starts
MiniStack through this module (bootstrap/stack.py); docker-compose runs the image as it is.
"""

from __future__ import annotations

import sys

from bootstrap.local.ministack import durability, dynamodb, iam, kinesis, lambda_runtime, lambda_svc, process
from bootstrap.local.ministack._patching import PatchTargetMissing
from bootstrap.local.ministack.server import serve

# Every patch module, in the order they are applied.
PATCHES = (kinesis, durability, dynamodb, lambda_svc, lambda_runtime, iam)


def check() -> None:
    """Raise PatchTargetMissing naming what every patch module misses (all of them, not the first)."""
    problems = []
    for patch in PATCHES:
        try:
            patch.check()
        except PatchTargetMissing as exc:
            problems.append(str(exc))
    if problems:
        raise PatchTargetMissing("\n".join(problems))


def apply() -> None:
    """Check every patch module, then set up the process and patch; nothing is changed unless all
    the checks pass."""
    check()
    process.apply()
    for patch in PATCHES:
        patch.apply()


def main() -> None:
    try:
        apply()
    except PatchTargetMissing as exc:
        sys.exit(f"bootstrap.ministack_launcher: not starting MiniStack:\n{exc}")
    serve()


if __name__ == "__main__":
    main()
