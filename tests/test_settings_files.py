"""Files that hold secrets are owner-only (issue 12, item 8): secret.key 0600, the data dir 0700."""
from __future__ import annotations

import stat

import pytest

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
    secret = "from-the-environment-" + "x" * 16
    monkeypatch.setenv("SEGOPS_SECRET_KEY", secret)
    settings = Settings(data_dir=tmp_path)
    assert settings.secret_key == secret
    assert not (tmp_path / "secret.key").exists()
    assert secret not in repr(settings)


def test_an_existing_data_dir_and_an_old_secret_file_are_made_owner_only(tmp_path):
    data = tmp_path / "data"  # as a clone checks out the repository's data/ (0755) or an older version left it
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "secret.key").write_text("x" * 64)
    (data / "secret.key").chmod(0o644)
    settings = Settings(data_dir=data)
    settings.ensure_data_dir()
    assert _mode(data) == 0o700
    assert settings.secret_key == "x" * 64 and _mode(data / "secret.key") == 0o600


def test_empty_and_unprefixed_variables_do_not_become_secrets(tmp_path, monkeypatch):
    # an empty line in a .env or compose file means unset: never an empty (public) signing key
    monkeypatch.setenv("SEGOPS_SECRET_KEY", "")
    monkeypatch.setenv("SEGOPS_METRICS_TOKEN", "")
    monkeypatch.setenv("SIGNING_SECRET", "y" * 40)  # not a SEGOPS_ variable
    monkeypatch.setenv("SMTP_URL", "smtp://x:pw@h:25")
    settings = Settings(data_dir=tmp_path)
    assert settings.signing_secret is None and settings.metrics_token is None and settings.smtp_url is None
    assert len(settings.secret_key) >= 48 and settings.secret_key != "y" * 40


def test_a_short_signing_secret_is_refused_naming_the_variable(tmp_path, monkeypatch):
    from engine.settings import SettingsError

    monkeypatch.setenv("SEGOPS_SECRET_KEY", "short")
    with pytest.raises(SettingsError, match="SEGOPS_SECRET_KEY"):
        Settings.from_env(data_dir=tmp_path)


def test_the_smtp_url_password_stays_out_of_repr(tmp_path):
    settings = Settings(data_dir=tmp_path, smtp_url="smtp://mailer:hunter2@mx.test:2525")
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", "http://127.0.0.1:8123"), ("::1", "http://[::1]:8123"), ("0.0.0.0", "http://127.0.0.1:8123"),
    ("::", "http://[::1]:8123"), ("mail.example.com", "http://mail.example.com:8123")])
def test_links_default_to_an_address_a_browser_can_open(tmp_path, host, expected):
    assert Settings(data_dir=tmp_path, host=host, port=8123).base_url == expected
    assert Settings(data_dir=tmp_path, host=host, public_base_url="https://x.test/").base_url == "https://x.test"
