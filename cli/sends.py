"""``segops worker``: the journey/send worker on its own (no HTTP), e.g. next to a read-only API."""
from __future__ import annotations

import signal
import threading

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(poll: float = typer.Option(0.5, help="Seconds between looks for due work when idle")) -> None:
        """Advance journeys and hand off queued emails until interrupted (SIGINT/SIGTERM)."""
        from rich.console import Console

        from cli.common import open_runtime
        from engagement.worker import SendWorker

        runtime = open_runtime(workers=True)
        send_worker = SendWorker(runtime.sends, poll=poll)
        stopping = threading.Event()

        def stop(*_):
            stopping.set()
            send_worker.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        Console(stderr=True).print(f"segops worker: transport={runtime.sends.transport.name} "
                                   f"data={runtime.settings.data_dir}")
        send_worker.start()
        try:
            while not stopping.wait(1.0):
                pass
        finally:
            runtime.stop()
