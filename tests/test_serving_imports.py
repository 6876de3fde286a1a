"""The serving process stays lean: pandas (pulled in by pyarrow when it converts a datetime to a
scalar) tripled HTTP ingest's p99 when a module built such a scalar at import (bench_ingest)."""
import subprocess
import sys


def test_loading_the_app_and_writing_a_flush_does_not_import_pandas(tmp_path):
    code = (
        "import sys, pyarrow as pa\n"
        "from api.app import create_app\n"
        "from storage import duck\n"
        "duck.check_timestamp_range(pa.array([0, 1], pa.timestamp('us')), 'occurred_at')\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[1])})
    assert out.stdout.strip() == "False"
