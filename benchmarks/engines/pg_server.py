"""A throwaway PostgreSQL 15 cluster on 127.0.0.1 (Debian package), for the benchmarks and the tests.

``start`` runs ``initdb`` in a temp dir (as the ``postgres`` user when we are root: PostgreSQL
refuses to run as root) and starts the server on a free port with the given settings;
``stop`` stops it and deletes the cluster. Files the server must read (``COPY ... FROM``)
go in ``directory``, which the server can read.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("SEGOPS_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
INSTALL_HINT = "apt-get update && apt-get install -y postgresql-15"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self, settings: dict[str, str] | None = None, prefix: str = "segops-pg-"):
        self.settings = {"listen_addresses": "127.0.0.1", **(settings or {})}
        self.prefix = prefix
        self.directory: Path | None = None
        self.port: int | None = None
        self.started = False

    @staticmethod
    def unavailable() -> str | None:
        """Why no cluster can start here (None when it can), with the command that fixes it."""
        missing = [tool for tool in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / tool).exists()]
        if missing:
            return f"PostgreSQL 15 is not installed ({PG_BIN}/{missing[0]} missing); install it with: {INSTALL_HINT}"
        if os.geteuid() == 0:
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                return f"running as root but there is no 'postgres' user; install the package: {INSTALL_HINT}"
        return None

    def _run(self, *args: str) -> None:
        """Run a PostgreSQL tool, as the postgres user when we are root."""
        as_postgres = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        done = subprocess.run(args, cwd=self.directory, capture_output=True, text=True, **as_postgres)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr or done.stdout}")

    @property
    def cluster(self) -> Path:
        return self.directory / "cluster"

    def start(self) -> None:
        """initdb (UTF8, locale C) and start; raises RuntimeError with the reason if PostgreSQL is missing."""
        reason = self.unavailable()
        if reason:
            raise RuntimeError(reason)
        self.directory = Path(tempfile.mkdtemp(prefix=self.prefix))
        try:
            self.directory.chmod(0o755)
            if os.geteuid() == 0:
                shutil.chown(self.directory, "postgres", "postgres")
            self._run(str(PG_BIN / "initdb"), "-D", str(self.cluster), "-A", "trust", "-U", "postgres",
                      "-E", "UTF8", "--locale=C")
            self.port = free_port()
            options = " ".join([f"-p {self.port}", f"-k {self.directory}",
                                *(f"-c {key}={value}" for key, value in self.settings.items())])
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.cluster), "-o", options,
                      "-l", str(self.directory / "server.log"), "-w", "start")
            self.started = True
        except BaseException:
            self.stop()
            raise

    def connect(self, dbname: str = "postgres", **options) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, **options)

    def stop(self) -> None:
        """Stop the server and delete the cluster (idempotent)."""
        if self.started:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.cluster), "-m", "fast", "-w", "stop")
            self.started = False
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
