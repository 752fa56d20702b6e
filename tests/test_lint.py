import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = Path(sys.executable).with_name("ruff")
    r = subprocess.run(
        [str(ruff), "check", "face_iqa", "workers", "pipeline", "tests", "bench"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_library_and_workers_never_import_ray():
    for folder in ("face_iqa", "workers"):
        for f in (REPO / folder).rglob("*.py"):
            text = f.read_text()
            assert "import ray" not in text and "from ray" not in text, f
