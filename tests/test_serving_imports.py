"""The serving modules import no pandas at start-up. When one built a pa.scalar from a datetime at
import (pyarrow converts datetimes through pandas), HTTP ingest's paced p99 tripled (bench_ingest
--rate 120000: 35 ms -> 90-150 ms); pyarrow still imports pandas lazily at the first request."""
import subprocess
import sys
from pathlib import Path


def test_loading_the_app_imports_no_pandas(tmp_path):
    code = ("import sys\nfrom api.app import create_app\nimport storage.duck, engine.ingest.service\n"
            "print('pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.stdout.strip() == "False"
