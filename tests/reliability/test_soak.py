"""The soak test's short form: a few random SIGKILLs and resumes of the debug recipe (scripts/soak.py)."""

import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


def test_short_soak(tmp_path):
    cmd = [sys.executable, str(SOAK), "--work", str(tmp_path), "--cycles", "3", "--steps", "60",
           "--every", "4", "--reference"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "soak passed: 3 cycles" in proc.stdout
    assert proc.stdout.count("killed") == 3, proc.stdout  # every cycle really was killed
