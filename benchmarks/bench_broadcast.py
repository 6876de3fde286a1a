"""Broadcast throughput: render and hand 100,000 emails to the outbox transport.

    python -m benchmarks.bench_broadcast                       # 100,000 recipients
    python -m benchmarks.bench_broadcast --recipients 20000

Target: >= 2,000 emails/s from redeem to the last message in the outbox (one process, the
send worker's own loop: claim a chunk, look up profiles and subscription state, render the
template with merge fields, tracking links, open pixel and RFC 8058 headers, build the MIME
bytes, write ``<message-id>.eml`` atomically, settle the chunk). The outbox is then counted
and a sample parsed back, so a fast wrong run cannot pass.

Setup (not timed): a fresh data dir, one tenant, 100,000 profiles (email, first name, plan)
in the lake, 1% of them unsubscribed, a marketing template, and a broadcast prepared for
every profile with an email (an inline segment definition run by the segment engine).
"""
from __future__ import annotations

import argparse
import email
import os
import shutil
import tempfile
import time
from email import policy
from pathlib import Path

TARGET_PER_S = 2000.0
HTML = """<html><body style="font-family:sans-serif">
<h1>Hello {{ first_name }}!</h1>
<p>Your {{ plan }} plan has new features this month. As a {{ plan }} member you get early access.</p>
<p><a href="https://shop.example/launch?utm_source=email&amp;plan={{ plan }}">See what is new</a></p>
<p><a href="https://shop.example/account">Your account</a> &middot; <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>"""
TEXT = "Hello {{ first_name }}!\n\nYour {{ plan }} plan has new features: https://shop.example/launch\n\n" \
       "Unsubscribe: {{ unsubscribe_url }}\n"


def _setup(root: Path, recipients: int):
    from common.time import naive_utc_now
    from engine.runtime import Runtime
    from engine.settings import Settings

    runtime = Runtime(Settings(data_dir=root, run_workers=False))
    tenant_id = runtime.accounts.create_tenant("Bench", plan="enterprise")
    now = naive_utc_now()
    plans = ("free", "pro", "business")
    runtime.lake.upsert_profiles(tenant_id, [
        {"user_id": f"user-{i:07d}", "updated_at": now,
         "traits": {"email": f"user-{i:07d}@example.com", "first_name": f"Name{i}", "plan": plans[i % 3]}}
        for i in range(recipients)])
    sends = runtime.sends
    for i in range(0, recipients, 100):  # 1% unsubscribed: skipped and counted, never rendered
        sends.recipients.set_subscription(tenant_id, f"user-{i:07d}@example.com", "marketing", "unsubscribed", "api")
    template = sends.templates.create(tenant_id, {"name": "Launch", "subject": "News for you, {{ first_name }}",
                                                  "html": HTML, "text": TEXT, "purpose": "marketing"})
    everyone = {"logic": "AND", "conditions": [{"type": "trait", "trait": "email", "operator": "is_set"}]}
    prepared = sends.broadcasts.prepare(tenant_id, template_id=template["id"], audience={"definition": everyone},
                                        name="bench")
    assert prepared["audienceSize"] == recipients, prepared["audienceSize"]
    return runtime, tenant_id, prepared["id"]


def measure(recipients: int, root: Path | None = None) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    workdir = Path(tempfile.mkdtemp(prefix="bench-broadcast-", dir=root))
    try:
        print(f"setting up {recipients:,} profiles and a prepared broadcast in {workdir} ...")
        runtime, tenant_id, broadcast_id = _setup(workdir, recipients)
        sends = runtime.sends
        dispatcher = sends.dispatcher
        started, cpu_started = time.perf_counter(), time.process_time()
        sends.broadcasts.redeem(tenant_id, broadcast_id)
        with Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
            task = bar.add_task("send", total=recipients)
            while claimed := dispatcher.run_once():
                bar.advance(task, claimed)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        progress = sends.broadcasts.get(tenant_id, broadcast_id)["progress"]
        files = sorted((workdir / "outbox").glob("*.eml"))
        sample = email.message_from_bytes(files[len(files) // 2].read_bytes(), policy=policy.default)
        assert sample["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click", "RFC 8058 header missing"
        assert "Hello Name" in sample.get_body(("plain",)).get_content()
        unsubscribed = len(range(0, recipients, 100))
        assert progress["sentCount"] == len(files) == recipients - unsubscribed, (progress, len(files))
        assert progress["skippedUnsubscribedCount"] == unsubscribed
        runtime.stop()
        return {"recipients": recipients, "sent": len(files), "skipped": unsubscribed, "seconds": elapsed,
                "per_s": recipients / elapsed, "per_cpu_s": recipients / cpu, "load": os.getloadavg()[0]}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(size: str = "small", dataset=None, runs: int | None = None, *, recipients: int | None = None,
        root: Path | None = None) -> list[dict]:
    """Figures as rows for ``python -m benchmarks``: 100k recipients (20k at ``--size small``)."""
    recipients = recipients or (20_000 if size == "small" else 100_000)
    f = measure(recipients, root)
    print(f"broadcast: {f['recipients']:,} recipients ({f['sent']:,} sent, {f['skipped']:,} skipped unsubscribed) "
          f"in {f['seconds']:.1f} s = {f['per_s']:,.0f} emails/s; target {TARGET_PER_S:,.0f}/s -> "
          f"{f['per_s'] / TARGET_PER_S:.2f}x (load average {f['load']:.1f} on {os.cpu_count()} cores; "
          f"{f['per_cpu_s']:,.0f} emails per CPU-second of this process, all threads)")
    return [{"benchmark": "broadcast", "metric": f"{recipients:,} recipients to the outbox", "value": round(f["per_s"]),
             "unit": "emails/s", "target": f">= {TARGET_PER_S:g} emails/s", "meets_target": f["per_s"] >= TARGET_PER_S},
            {"benchmark": "broadcast", "metric": "ratio to target", "value": round(f["per_s"] / TARGET_PER_S, 2),
             "unit": "x"},
            {"benchmark": "broadcast", "metric": "emails per CPU-second", "value": round(f["per_cpu_s"]),
             "unit": "emails/s"}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", help="accepted for `python -m benchmarks`; see --recipients")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--root", type=Path, default=None, help="parent of the temporary data dir")
    args = parser.parse_args(argv)
    run(args.size, recipients=args.recipients, root=args.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
