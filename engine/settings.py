"""Runtime configuration: one object, read from ``SEGOPS_*`` environment variables and an optional
``.env`` file (pydantic-settings), validated at start so a typo fails with the variable's name.

The embedded default needs nothing set: a local Parquet lake and a SQLite metadata database under
``data/``. Every variable is listed in the README ("Settings"); ``segops settings`` prints the values in
force (secrets masked).
"""
from __future__ import annotations

import ipaddress
import re
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, FilePath, SecretStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from storage.objectstore import write_private


class SettingsError(ValueError):
    """A setting failed validation; the message names the environment variable."""


SPARK_CONF_PREFIX = "SEGOPS_SPARK_CONF_"
_SPARK_MASTER = re.compile(r"local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?|(spark|k8s|mesos)://\S+|yarn")


class _SparkConfSource(PydanticBaseSettingsSource):
    """Every ``SEGOPS_SPARK_CONF_<ANY>`` whose value is ``key=value``, from the environment (winning)
    and the .env file, as (variable, value) pairs in variable order. The key is in the value because
    Spark keys are dotted and case-sensitive, which a variable name cannot carry."""

    def __init__(self, settings_cls: type[BaseSettings], *sources: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._sources = sources  # the env and dotenv sources, highest priority first

    def get_field_value(self, field, field_name):  # required by the base class; __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, str] = {}
        for source in reversed(self._sources):
            found.update((name.upper(), value) for name, value in getattr(source, "env_vars", {}).items()
                         if value and name.upper().startswith(SPARK_CONF_PREFIX))
        return {"spark_conf": sorted(found.items())} if found else {}


class Settings(BaseSettings):
    # A field with a validation_alias reads only the variables it names; populate_by_name keeps the
    # field name valid in Settings(...) (tests, the CLI).
    model_config = SettingsConfigDict(env_prefix="SEGOPS_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", frozen=True, populate_by_name=True,
                                      env_ignore_empty=True)  # `SEGOPS_SECRET_KEY=` means unset, not ""

    data_dir: Path = Field(Path("data"), description="Data directory: lake, WAL, metadata DB, outbox, secrets.")
    lake_url: str | None = Field(
        None, description="`s3://bucket/prefix` puts the lake on S3 (default: `<data_dir>/lake`).")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. `http://127.0.0.1:9000`.")
    s3_access_key_id: str | None = Field(
        None, validation_alias=AliasChoices("SEGOPS_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        description="S3 access key id (falls back to `AWS_ACCESS_KEY_ID`).")
    s3_secret_access_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SEGOPS_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        description="S3 secret key (falls back to `AWS_SECRET_ACCESS_KEY`).")
    s3_region: str = Field("us-east-1", description="S3 region.")
    host: str = Field("127.0.0.1", description="Address `segops serve` binds (`--host`).")
    port: int = Field(8000, ge=1, le=65535, description="Port `segops serve` binds (`--port`).")
    public_base_url: str | None = Field(
        None, description="Base URL in email links and asset URLs (default: `http://<host>:<port>`).")
    run_workers: bool = Field(
        True, description="Run background workers (flusher, scheduler, sends) in the API process.")
    read_only: bool = Field(False, description="Serve lookups from the lake without owning it (no writes).")
    serve_process: bool = Field(False, description="Set by `segops serve`: tune the garbage collector for serving.")
    smtp_url: str | None = Field(
        None, repr=False,
        description="`smtp://host:port` sends mail through SMTP (default: `.eml` files in `<data_dir>/outbox/`).")
    signing_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SEGOPS_SECRET_KEY"), min_length=32,
        description="Secret signing JWTs and email links (default: generated once into `<data_dir>/secret.key`).")
    flush_interval: float = Field(1.0, gt=0, description="Seconds between WAL-to-Parquet flushes.")
    wal_max_bytes: int = Field(
        2 << 30, gt=0, description="WAL size at which ingest answers 503 until the flusher catches up.")
    send_lease_seconds: float = Field(
        60.0, gt=0, description="How long a worker's claim on a send or journey run lasts.")
    send_chunk: int = Field(1000, gt=0, description="Sends claimed and settled per transaction.")
    default_from: str | None = Field(None, description="From address when neither template nor brand kit sets one.")
    login_limit_per_address: int = Field(
        30, ge=1, description="Login attempts per minute from one client address, all API processes together.")
    login_limit_per_email: int = Field(20, ge=1, description="Login attempts per minute for one email address.")
    login_limit_global: int = Field(
        300, ge=1, description="Login attempts per minute in all: bounds the CPU that password hashing may take.")
    invalid_credential_limit_per_address: int = Field(
        60, ge=1, description="Invalid API keys or tokens per minute from one client address; then 429.")
    max_body_bytes: int = Field(
        1 << 20, gt=0, description="Largest request body (bytes) of routes without their own limit; larger answers "
                                   "413 payload_too_large (ingest allows 4 MB, asset uploads 10 MB, templates 16 MiB).")
    log_format: Literal["text", "json"] = Field("text", description="Log lines of `segops serve`: text or json.")
    access_log: bool = Field(True, description="`segops serve` logs one line per request (route template, status, "
                                               "duration, tenant, request id; never credentials or query strings).")
    metrics_token: SecretStr | None = Field(
        None, min_length=16,
        description="Bearer token GET /metrics requires; unset, /metrics answers only SEGOPS_METRICS_CLIENTS.")
    metrics_clients: str = Field(
        "127.0.0.0/8,::1", description="Comma-separated client networks that may read GET /metrics without a "
                                       "token (used only while SEGOPS_METRICS_TOKEN is unset; empty: nobody).")

    query_backend: Literal["duckdb", "spark"] = Field(
        "duckdb", description="Engine of compute jobs and exports: `duckdb` (embedded) or `spark` (see Scale out).")
    preview_backend: Literal["duckdb", "spark"] = Field(
        "duckdb", description="Engine of previews, on-demand evaluation, members pages and profile reads.")
    spark_master: str = Field(
        "local[*]", description="Spark master of the `spark` backend: `local[*]`, `local[N]`, `spark://host:port`, "
                                "`yarn` or `k8s://https://host:port`.")
    spark_defaults_file: FilePath | None = Field(
        None, description="A `spark-defaults.conf` file (`key value` per line) for the `spark` backend's session.")
    spark_conf: dict[str, str] = Field(
        default_factory=dict, repr=False, validation_alias=AliasChoices(f"{SPARK_CONF_PREFIX}*"),
        description="Spark conf, one `key=value` per variable of any suffix, e.g. "
                    "`SEGOPS_SPARK_CONF_MEM=spark.executor.memory=8g`; wins over the defaults file.")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, _SparkConfSource(settings_cls, env_settings,
                                                                               dotenv_settings), file_secret_settings)

    @field_validator("spark_master")
    @classmethod
    def _spark_master(cls, value: str) -> str:
        if not _SPARK_MASTER.fullmatch(value):
            raise PydanticCustomError("spark_master", "not a Spark master URL (local[*], local[N], spark://host:port, "
                                                      "yarn, k8s://https://host:port)")
        return value

    @field_validator("spark_conf", mode="before")
    @classmethod
    def _spark_conf(cls, value: Any) -> Any:
        """(variable, "key=value") pairs from the environment become {key: value}; a dict passes as is."""
        if isinstance(value, dict):
            return value
        conf = {}
        for variable, text in value:
            key, sep, item = text.partition("=")
            if not sep or not key.strip() or any(c.isspace() for c in key.strip()):
                # the value is not echoed: it may hold a credential
                raise PydanticCustomError("spark_conf", "{variable} must be key=value, e.g. spark.executor.memory=8g",
                                          {"variable": variable})
            conf[key.strip()] = item.strip()
        return conf

    @field_validator("metrics_clients")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            ipaddress.ip_network(part, strict=False)  # ValueError names the bad network
        return value

    @property
    def metrics_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in self.metrics_clients.split(",")
                     if p.strip())

    @property
    def base_url(self) -> str:
        """Where links point. Without SEGOPS_PUBLIC_BASE_URL: this server's address, a wildcard bind
        (0.0.0.0, ::) as loopback (no recipient can open a wildcard) and an IPv6 host in brackets."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def lake_root(self) -> str:
        return self.lake_url or str((self.data_dir / "lake").resolve())

    @property
    def metadata_path(self) -> Path:
        return self.data_dir / "meta.sqlite"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    @property
    def dead_letter_dir(self) -> Path:
        """Records the flusher could not write to the lake (storage.dead_letters)."""
        return self.data_dir / "dead-letter"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    def ensure_data_dir(self) -> None:
        """Create the data directory owner-only (0700): it holds keys, the WAL and every tenant's data.
        An existing one is made owner-only too (the repository's own data/ is checked out 0755)."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.data_dir.stat().st_mode & 0o077:
            self.data_dir.chmod(0o700)

    @property
    def secret_key(self) -> str:
        """Signing secret for JWTs and unsubscribe links, created once per data dir, readable by its owner only."""
        if self.signing_secret is not None:
            return self.signing_secret.get_secret_value()
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.ensure_data_dir()
            write_private(path, secrets.token_urlsafe(48).encode(), durable=True)
        elif path.stat().st_mode & 0o077:  # written by an older version (0644)
            path.chmod(0o600)
        return path.read_text().strip()

    @classmethod
    def from_env(cls, data_dir: str | Path | None = None, **overrides) -> "Settings":
        """Settings from the environment (and .env), raising SettingsError that names the variable."""
        if data_dir is not None:
            overrides["data_dir"] = Path(data_dir)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise SettingsError("; ".join(
                f"{_variable(err['loc'])}: {err['msg']}" for err in exc.errors())) from None


def _variable(loc: tuple) -> str:
    name = str(loc[0]) if loc else "?"
    if name in Settings.model_fields:
        return _field_variable(name)
    return name if name.startswith(("SEGOPS_", "AWS_")) else f"SEGOPS_{name.upper()}"


def _field_variable(name: str) -> str:
    """The variable a field is documented under: its first alias, else SEGOPS_<NAME>."""
    alias = Settings.model_fields[name].validation_alias
    return alias.choices[0] if isinstance(alias, AliasChoices) else f"SEGOPS_{name.upper()}"


def describe_settings() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the README's table and `segops settings`."""
    rows = []
    for name, field in Settings.model_fields.items():
        variable = _field_variable(name)
        default = field.get_default(call_default_factory=True)
        default = "" if default is None or default == {} else str(default)
        rows.append((variable, default, field.description or ""))
    return rows


_URL_PASSWORD = re.compile(r"(://[^/:@]*:)[^/@]*@")
_SECRET_CONF_KEY = re.compile(r"secret|password|key", re.I)  # spark.hadoop.fs.s3a.secret.key, ...


def shown(value: object) -> str:
    """A value as printed: secrets and passwords in URLs masked, None as empty."""
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return "****"
    if isinstance(value, dict):  # SEGOPS_SPARK_CONF_*: key=value pairs, credential-like keys masked
        return "; ".join(f"{key}={'****' if _SECRET_CONF_KEY.search(key) else shown(item)}"
                        for key, item in sorted(value.items()))
    return _URL_PASSWORD.sub(r"\1****@", str(value))
