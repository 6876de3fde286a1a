"""``segops worker``: background job workers on their own (no HTTP), e.g. next to a read-only API, or
as the Spark driver process (``--kinds compute,export`` with ``SEGOPS_QUERY_BACKEND=spark``), so that
Spark's cores do not compete with requests.

The workers are the ones ``Runtime.start_workers`` starts in ``segops serve``, by kind; the flusher
and lake maintenance stay with the process that owns the write-ahead log (one lake writer).
"""
from __future__ import annotations

import signal
import threading

import typer

KINDS = ("compute", "export", "send")


def _start_send(runtime, poll: float) -> str:
    from engagement.worker import SendWorker

    runtime.start_worker(SendWorker(runtime.sends, poll=poll))
    return f"transport={runtime.sends.transport.name}"


def _start_compute(runtime, poll: float) -> str:
    runtime.backends  # noqa: B018 - created first, so they close after the worker stopped
    runtime.start_worker(runtime.compute.worker)
    return f"compute backend={runtime.settings.query_backend}"


def _start_export(runtime, poll: float) -> str:
    runtime.backends  # noqa: B018 - created first, so they close after the worker stopped
    runtime.start_worker(runtime.exports.worker)
    return f"export backend={runtime.settings.query_backend}"


_STARTERS = {"compute": _start_compute, "export": _start_export, "send": _start_send}


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        kinds: str = typer.Option("send", "--kinds", help=f"Comma-separated job kinds to work: {', '.join(KINDS)} "
                                                          "(compute includes the scheduler)"),
        poll: float = typer.Option(0.5, help="Seconds between looks for due journey and send work when idle"),
    ) -> None:
        """Run background workers (default: journeys and sends) until interrupted (SIGINT/SIGTERM)."""
        from rich.console import Console

        from cli.common import fail, open_runtime

        wanted = list(dict.fromkeys(kind.strip() for kind in kinds.split(",") if kind.strip()))
        unknown = [kind for kind in wanted if kind not in KINDS]
        if unknown or not wanted:
            fail(f"--kinds takes {', '.join(KINDS)}, not {kinds!r}")
        runtime = open_runtime(workers=True)
        if runtime.settings.read_only and {"compute", "export"} & set(wanted):
            fail("compute and export workers write the lake; this data directory is read-only (SEGOPS_READ_ONLY)")
        stopping = threading.Event()

        def stop(*_):
            stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            started = [_STARTERS[kind](runtime, poll) for kind in wanted]
            Console(stderr=True).print(f"segops worker: {', '.join(started)} data={runtime.settings.data_dir}")
            while not stopping.wait(1.0):
                pass
        finally:
            runtime.stop()
