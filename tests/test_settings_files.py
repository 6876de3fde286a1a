"""Files that hold secrets are owner-only (issue 12, item 8): secret.key 0600, the data dir 0700."""
from __future__ import annotations

import stat

from engine.runtime import Runtime
from engine.settings import Settings


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_key_is_written_owner_only_and_kept(tmp_path):
    settings = Settings(data_dir=tmp_path / "fresh")
    secret = settings.secret_key
    path = tmp_path / "fresh" / "secret.key"
    assert _mode(path) == 0o600
    assert _mode(tmp_path / "fresh") == 0o700
    assert len(secret) >= 48 and Settings(data_dir=tmp_path / "fresh").secret_key == secret


def test_a_runtime_creates_its_data_dir_owner_only(tmp_path):
    runtime = Runtime(Settings(data_dir=tmp_path / "d", run_workers=False))
    try:
        assert _mode(tmp_path / "d") == 0o700
    finally:
        runtime.meta.close()


def test_the_environment_secret_wins_and_no_file_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGOPS_SECRET_KEY", "from-the-environment")
    settings = Settings(data_dir=tmp_path)
    assert settings.secret_key == "from-the-environment"
    assert not (tmp_path / "secret.key").exists()
    assert "from-the-environment" not in repr(settings)
