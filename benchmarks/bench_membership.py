"""Membership lookups: the in-memory index (two designs) and the HTTP hot path under wrk.

    python -m benchmarks.bench_membership                  # 1M users x 20 computed segments
    python -m benchmarks.bench_membership --users 100000 --duration 5

Targets (one uvicorn worker, uvloop + httptools, wrk in a separate process):
  * 1 connection:   p50 <= 0.5 ms, p99 <= 1 ms
  * 16 connections: >= 5,000 req/s with p99 <= 6 ms

Steps:
  1. Build (once, cached under ``<root>/bench/membership-<users>``) a tenant whose users each
     have one event with two properties ``a``, ``b`` in 0..99, and ``--segments`` segments
     ``a in {...}`` / ``b in {...}`` (the first one matching everyone), computed by
     engine.membership.compute (the real pipeline).
  2. Designs, in-process: the index as built (a bit per segment per user; see engine.membership.index)
     against one interned frozenset of user ids per segment; memory (RSS growth while
     building), build time and lookup time. Both are checked against the generator's own
     membership for a sample of users.
  3. Inside the app: the ASGI callable called directly (no sockets), microseconds per request
     for the hot path and, for comparison, the same lookup written as an idiomatic FastAPI
     route (Depends + Query + dict response).
  4. HTTP: ``segops serve``'s uvicorn settings in a subprocess; wrk with a Lua script drawing
     user ids at random (10% unknown), on both routes. Each figure is measured after a warm-up at
     the same number of connections, in 2-second rounds until two rounds in a row agree on the p50
     within 10% (at most 15 rounds, printed): right after a start, or after building the audience,
     whose files the kernel is still writing back, the first seconds are slower (two runs minutes
     apart once measured 1.12 ms and 0.22 ms at p50 with one connection, after a single warm-up).

wrk (C) and not a Python client: a Python load generator would need most of a core for 5,000 req/s
and take it from the server on a 2-core machine. ``make bench`` installs it when missing (as root,
with apt-get); otherwise ``apt-get install -y wrk`` (Debian/Ubuntu) or ``brew install wrk``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.harness import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
AUDIENCE_VERSION = 2
TARGET_P50_1_MS, TARGET_P99_1_MS = 0.5, 1.0
TARGET_RPS_16, TARGET_P99_16_MS = 5000.0, 6.0
WARMUP_ROUND_S, WARMUP_MAX_ROUNDS, WARMUP_TOLERANCE = 2.0, 15, 0.10
HOT_PATH = "/api/segments/membership/?user_id="
FASTAPI_PATH = "/bench/membership-fastapi/?user_id="
WRK_SCRIPT = """
local ids = {}
for line in io.lines(os.getenv("SEGOPS_BENCH_IDS")) do ids[#ids + 1] = line end
local headers = {["Authorization"] = "ApiKey " .. os.getenv("SEGOPS_BENCH_KEY")}
local path = os.getenv("SEGOPS_BENCH_PATH")
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  return wrk.format("GET", path .. ids[math.random(#ids)], headers)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", latency:percentile(50), latency:percentile(99),
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout))
end
"""


# -- the audience -------------------------------------------------------------------------------
@dataclass
class Audience:
    data_dir: Path
    tenant_id: int
    api_key: str
    users: int
    segments: list[dict]   # {"id", "property", "values"}
    a: np.ndarray          # property a of user i
    b: np.ndarray

    @staticmethod
    def user_id(i: int) -> str:
        return f"user-{i:07d}"

    def expected(self, i: int) -> tuple[int, ...]:
        """The generator's own answer: the segments user i is in."""
        props = {"a": int(self.a[i]), "b": int(self.b[i])}
        return tuple(sorted(s["id"] for s in self.segments if props[s["property"]] in s["values"]))

    @property
    def members_total(self) -> int:
        return sum(int(np.isin(self.a if s["property"] == "a" else self.b, s["values"]).sum()) for s in self.segments)


def ensure_audience(root: Path, users: int, segments: int, seed: int = 7) -> Audience:
    data_dir = root / "bench" / f"membership-{users}"
    manifest = data_dir / "audience.json"
    params = {"version": AUDIENCE_VERSION, "users": users, "segments": segments, "seed": seed}
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved["params"] == params:
            arrays = np.load(data_dir / "audience.npz")
            return Audience(data_dir, saved["tenant_id"], saved["api_key"], users, saved["segments"],
                            arrays["a"], arrays["b"])
        shutil.rmtree(data_dir)
    print(f"building the audience: {users:,} users x {segments} segments in {data_dir} (once)")
    started = time.perf_counter()
    audience = _build(data_dir, params)
    print(f"built in {time.perf_counter() - started:.1f} s")
    return audience


def _build(data_dir: Path, params: dict) -> Audience:
    import pyarrow as pa
    import pyarrow.compute as pc

    from compiler import parse_definition
    from engine.runtime import Runtime
    from common.time import naive_utc_now
    from engine.segments.store import Author, SegmentStore
    from engine.settings import Settings

    users, rng = params["users"], np.random.default_rng(params["seed"])
    a, b = rng.integers(0, 100, users), rng.integers(0, 100, users)
    data_dir.mkdir(parents=True, exist_ok=True)
    runtime = Runtime(Settings(data_dir=data_dir, run_workers=False))
    tenant_id = runtime.accounts.create_tenant("bench-membership", plan="enterprise")
    _, key = runtime.accounts.create_api_key(tenant_id, "bench", ["membership:read", "exports:read"])

    ids = pc.binary_join_element_wise("user-", pc.utf8_lpad(pa.array(np.arange(users)).cast(pa.string()), 7, "0"), "")
    props = pc.binary_join_element_wise('{"a":', pa.array(a).cast(pa.string()), ',"b":',
                                        pa.array(b).cast(pa.string()), "}", "")
    moment = pa.scalar(naive_utc_now().replace(microsecond=0), pa.timestamp("us"))
    runtime.lake.append_events(tenant_id, pa.table({
        "event_id": ids, "tenant_id": pa.array(np.full(users, tenant_id)), "user_id": ids,
        "event_type": pa.array(["visit"] * users), "occurred_at": pa.repeat(moment, users),
        "received_at": pa.repeat(moment, users), "properties": props}))

    store, author, segments = SegmentStore(runtime.meta), Author(None, None), []
    for k in range(params["segments"]):
        prop = "a" if k % 2 == 0 else "b"
        # segment 0 holds everyone (bench_export exports it); the others 10%..90% of the users
        size = 100 if k == 0 else int(rng.integers(10, 90))
        values = sorted(int(v) for v in rng.choice(100, size=size, replace=False))
        definition = parse_definition({"type": "frequency", "event_type": "visit", "operator": "gte", "value": 1,
                                       "where": [{"property": prop, "operator": "in", "value": values}]})
        segment = store.create(tenant_id, name=f"bench-{k}", segment_type="rule", description="",
                               definition=definition, author=author)
        runtime.compute.enqueue(tenant_id, segment["id"], "cli")
        segments.append({"id": segment["id"], "property": prop, "values": values})
    runtime.compute.run_pending()
    failed = runtime.meta.query("SELECT id, error FROM segment_computations WHERE status != 'done'")
    if failed:
        raise SystemExit(f"computations failed: {[dict(row) for row in failed]}")
    runtime.stop()
    runtime.meta.close()
    np.savez(data_dir / "audience.npz", a=a, b=b)
    (data_dir / "audience.json").write_text(json.dumps(
        {"params": params, "tenant_id": tenant_id, "api_key": key, "segments": segments}))
    return Audience(data_dir, tenant_id, key, users, segments, a, b)


# -- designs, in-process --------------------------------------------------------------------------
def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def compare_designs(audience: Audience, lookups: int = 200_000) -> dict:
    import pyarrow.parquet as pq

    from engine.runtime import Runtime
    from engine.settings import Settings

    import engine.membership.index  # noqa: F401 - imports (DuckDB, sqlglot, ...) are not index memory
    import engine.segments.query  # noqa: F401

    runtime = Runtime(Settings(data_dir=audience.data_dir, run_workers=False, read_only=True))
    first = runtime.meta.query_one("SELECT members_key FROM segment_computations WHERE status = 'done'")[0]
    pq.read_table(runtime.lake.store.duckdb_path(first)).to_pylist()  # warm pyarrow (and the pandas it imports)
    rng = random.Random(1)
    sample = [audience.user_id(rng.randrange(audience.users)) if rng.random() < 0.9 else f"unknown-{i}"
              for i in range(lookups)]
    out = {}

    gc.collect()
    before, started = _rss_mb(), time.perf_counter()
    index = runtime.membership
    out["bitmask_build_s"], out["bitmask_rss_mb"] = time.perf_counter() - started, _rss_mb() - before
    tenant = audience.tenant_id
    view = index._views[tenant]  # noqa: SLF001 - the raw lookup, without the SQLite coherence check
    out["bitmask_mb"] = (_dict_bytes(view.rows) + view.universe.nbytes + sum(w.nbytes for w in view.words)) / 2**20
    out["bitmask_lookup_us"] = _per_call_us(lambda u: index.lookup(tenant, u), sample)
    out["bitmask_raw_lookup_us"] = _per_call_us(view.segment_ids, sample)

    gc.collect()
    before, started = _rss_mb(), time.perf_counter()
    canonical: dict[str, str] = {}
    sets = []
    for segment in sorted(audience.segments, key=lambda s: s["id"]):
        row = runtime.meta.query_one(
            "SELECT c.members_key FROM segments s JOIN segment_computations c ON c.id = s.current_computation_id"
            " WHERE s.id = ?", (segment["id"],))
        members = pq.read_table(runtime.lake.store.duckdb_path(row[0])).column("user_id").to_pylist()
        sets.append((segment["id"], frozenset(canonical.setdefault(u, u) for u in members)))
    out["frozenset_build_s"], out["frozenset_rss_mb"] = time.perf_counter() - started, _rss_mb() - before
    out["frozenset_mb"] = (sum(sys.getsizeof(m) for _, m in sets) + sum(map(sys.getsizeof, canonical))) / 2**20
    del canonical
    out["frozenset_lookup_us"] = _per_call_us(lambda u: tuple(s for s, m in sets if u in m), sample)

    for i in random.Random(2).sample(range(audience.users), 2000):
        user, expected = audience.user_id(i), audience.expected(i)
        got = (index.lookup(tenant, user)[0], tuple(s for s, m in sets if user in m))
        if got != (expected, expected):
            raise SystemExit(f"{user}: index {got[0]}, frozensets {got[1]}, generator {expected}")
    runtime.stop()
    return out


def _dict_bytes(rows: dict[str, int]) -> int:
    """A str -> int dict with its keys and (non-cached) int values."""
    return sys.getsizeof(rows) + sum(sys.getsizeof(k) + (sys.getsizeof(v) if v > 256 else 0) for k, v in rows.items())


def _per_call_us(fn, sample: list[str]) -> float:
    started = time.perf_counter()
    for user in sample:
        fn(user)
    return (time.perf_counter() - started) / len(sample) * 1e6


# -- HTTP under wrk ---------------------------------------------------------------------------------
def bench_app():
    """The real app plus the same lookup as an idiomatic FastAPI route, for comparison (with the
    dependencies every router uses; ``get_runtime`` is a sync dependency, so FastAPI runs it in
    its threadpool)."""
    from fastapi import Depends, Query

    from api.app import create_app
    from api.deps import Principal, get_runtime, require

    app = create_app()
    read = require("membership:read")

    @app.get("/bench/membership-fastapi/")
    async def membership_fastapi(user_id: str = Query(..., min_length=1), principal: Principal = Depends(read),
                                 runtime=Depends(get_runtime)) -> dict:
        segment_ids, _ = runtime.membership.lookup(principal.tenant_id, user_id)
        return {"user_id": user_id, "segment_ids": list(segment_ids), "cached": True}

    app.router.routes.insert(0, app.router.routes.pop())  # first in the table: compare handling, not position
    return app


def asgi_figures(audience: Audience, requests: int = 20_000) -> dict:
    """Microseconds per request inside the app (the ASGI callable called directly: no sockets,
    no HTTP parsing), for the hot path and the FastAPI-route version."""
    import asyncio

    os.environ.update(SEGOPS_DATA_DIR=str(audience.data_dir), SEGOPS_RUN_WORKERS="0", SEGOPS_READ_ONLY="1")
    app = bench_app()
    headers = [(b"host", b"bench"), (b"authorization", f"ApiKey {audience.api_key}".encode())]
    rng = random.Random(4)
    queries = [f"user_id={audience.user_id(rng.randrange(audience.users))}".encode() for _ in range(requests)]

    async def call(path: str, query: bytes) -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
                 "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        status = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        return status[0]

    async def measure() -> dict:
        out = {}
        for name, path in (("hot", HOT_PATH.split("?")[0]), ("fastapi", FASTAPI_PATH.split("?")[0])):
            if await call(path, queries[0]) != 200:  # also loads the index
                raise SystemExit(f"{path} did not answer 200")
            started = time.perf_counter()
            for query in queries:
                await call(path, query)
            out[name] = (time.perf_counter() - started) / len(queries) * 1e6
        return out

    figures = asyncio.run(measure())
    app.state.runtime.stop()
    return figures


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVER_PEAK_MB: dict[str, float | None] = {}  # resident high-water mark of the last server served


@contextmanager
def serve(audience: Audience):
    """uvicorn as `segops serve` runs it (one worker, uvloop, httptools, no access log, its GC tuning)."""
    import httpx

    port = _free_port()
    code = ("import uvicorn; uvicorn.run('benchmarks.bench_membership:bench_app', factory=True, "
            f"host='127.0.0.1', port={port}, loop='uvloop', http='httptools', access_log=False, "
            "log_level='warning')")
    env = dict(os.environ, SEGOPS_DATA_DIR=str(audience.data_dir), SEGOPS_RUN_WORKERS="0", SEGOPS_READ_ONLY="1",
               SEGOPS_SERVE_PROCESS="1")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:  # the first lookup loads the index
            try:
                r = httpx.get(base + HOT_PATH + "warmup", headers={"Authorization": f"ApiKey {audience.api_key}"},
                              timeout=300)
                if r.status_code == 200:
                    break
                raise SystemExit(f"warm-up answered {r.status_code}: {r.text}")
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        yield base
    finally:
        SERVER_PEAK_MB["last"] = peak_rss_mb(proc.pid)
        proc.terminate()
        proc.wait(timeout=30)


def wrk(base: str, path: str, audience: Audience, connections: int, seconds: float, ids_file: Path) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    env = dict(os.environ, SEGOPS_BENCH_IDS=str(ids_file), SEGOPS_BENCH_KEY=audience.api_key, SEGOPS_BENCH_PATH=path)
    threads = 1 if connections == 1 else 2
    try:
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
                              "-s", script.name, base], capture_output=True, text=True, env=env, check=True).stdout
    finally:
        os.unlink(script.name)
    line = next(line for line in out.splitlines() if line.startswith("RESULT"))
    p50, p99, requests, duration_us, errors = (int(x) for x in line.split()[1:])
    return {"p50_ms": p50 / 1000, "p99_ms": p99 / 1000, "rps": requests / (duration_us / 1e6),
            "requests": requests, "errors": errors}


def warm(base: str, path: str, audience: Audience, connections: int, ids_file: Path) -> tuple[list[float], bool]:
    """Load the server as the next measurement will until its p50 settles (module docstring, step 4);
    returns the p50 of each round and whether it settled."""
    p50s: list[float] = []
    while len(p50s) < WARMUP_MAX_ROUNDS:
        p50s.append(wrk(base, path, audience, connections, WARMUP_ROUND_S, ids_file)["p50_ms"])
        if len(p50s) >= 2 and abs(p50s[-1] - p50s[-2]) <= WARMUP_TOLERANCE * p50s[-2]:
            return p50s, True
    return p50s, False


def http_figures(audience: Audience, seconds: float) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make bench` installs it (as root), or apt-get install -y wrk "
                         "(Debian/Ubuntu), or brew install wrk")
    os.sync()  # a freshly built audience is still being written back: not while measuring
    rng = random.Random(3)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as ids:
        for i in range(20_000):
            ids.write((audience.user_id(rng.randrange(audience.users)) if rng.random() < 0.9 else f"unknown-{i}") + "\n")
    figures = {}
    try:
        with serve(audience) as base:
            for name, path in (("hot", HOT_PATH), ("fastapi", FASTAPI_PATH)):
                for connections in (1, 16):
                    p50s, settled = warm(base, path, audience, connections, Path(ids.name))
                    print(f"warm-up {name} at {connections} connections, p50 per {WARMUP_ROUND_S:g} s round: "
                          + ", ".join(f"{p50:.3f}" for p50 in p50s) + " ms" + ("" if settled else " (not settled)"))
                    figures[f"{name}_c{connections}"] = wrk(base, path, audience, connections, seconds, Path(ids.name))
    finally:
        os.unlink(ids.name)
    return figures


# -- report -------------------------------------------------------------------------------------------
def _row(metric: str, value: float, unit: str, target: float | None = None, below: bool = True) -> dict:
    row = {"benchmark": "membership", "metric": metric, "value": round(value, 4), "unit": unit}
    if target is not None:
        row["target"] = f"{'<=' if below else '>='} {target:g} {unit}"
        row["meets_target"] = value <= target if below else value >= target
    return row


def run(size: str = "small", dataset=None, runs: int | None = None, *, users: int | None = None, segments: int = 20,
        seconds: float | None = None, root: Path = Path("data")) -> list[dict]:
    """Figures as rows for ``python -m benchmarks``: 1M users and 10 s of load per HTTP
    figure, or 100k users and 2 s at ``--size small`` (the quick run)."""
    users = users or (100_000 if size == "small" else 1_000_000)
    seconds = seconds or (2.0 if size == "small" else 10.0)
    audience = ensure_audience(root, users, segments)
    print(f"audience: {audience.users:,} users, {len(audience.segments)} segments, "
          f"{audience.members_total:,} memberships")
    designs = compare_designs(audience)
    print(f"{'design':<34}{'build s':>9}{'data MB':>9}{'RSS +MB':>9}{'lookup us':>11}")
    print(f"{'bit per segment (engine.membership.index)':<34}{designs['bitmask_build_s']:>9.2f}"
          f"{designs['bitmask_mb']:>9.0f}{designs['bitmask_rss_mb']:>9.0f}{designs['bitmask_lookup_us']:>11.2f}"
          f"   ({designs['bitmask_raw_lookup_us']:.2f} us without the SQLite change check)")
    print(f"{'frozenset per segment':<34}{designs['frozenset_build_s']:>9.2f}"
          f"{designs['frozenset_mb']:>9.0f}{designs['frozenset_rss_mb']:>9.0f}{designs['frozenset_lookup_us']:>11.2f}")

    asgi = asgi_figures(audience)
    print(f"inside the app (no sockets): hot path {asgi['hot']:.1f} us/request, "
          f"FastAPI route {asgi['fastapi']:.1f} us/request ({asgi['fastapi'] / asgi['hot']:.1f}x)")
    http = http_figures(audience, seconds)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wrk and the server share them)")
    print(f"{'route':<10}{'conns':>6}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>10}{'errors':>8}")
    for key, f in http.items():
        name, conns = key.rsplit("_c", 1)
        print(f"{name:<10}{conns:>6}{f['p50_ms']:>9.3f}{f['p99_ms']:>9.3f}{f['rps']:>10,.0f}{f['errors']:>8}")
    one, many = http["hot_c1"], http["hot_c16"]
    print(f"hot path vs targets: p50(1) {one['p50_ms'] / TARGET_P50_1_MS:.2f}x of {TARGET_P50_1_MS} ms, "
          f"p99(1) {one['p99_ms'] / TARGET_P99_1_MS:.2f}x of {TARGET_P99_1_MS} ms, "
          f"req/s(16) {many['rps'] / TARGET_RPS_16:.2f}x of {TARGET_RPS_16:,.0f}, "
          f"p99(16) {many['p99_ms'] / TARGET_P99_16_MS:.2f}x of {TARGET_P99_16_MS} ms")
    print(f"hot path vs FastAPI route: req/s(16) {many['rps'] / http['fastapi_c16']['rps']:.2f}x, "
          f"p50(1) {one['p50_ms'] / http['fastapi_c1']['p50_ms']:.2f}x")
    if any(f["errors"] for f in http.values()):
        raise SystemExit(f"wrk saw errors: {http}")
    return [
        _row("index memory, 1M users x 20 segments" if users == 1_000_000 else "index memory", designs["bitmask_mb"], "MB"),
        _row("frozenset design memory", designs["frozenset_mb"], "MB"),
        _row("index lookup (in-process)", designs["bitmask_lookup_us"], "us"),
        _row("frozenset lookup (in-process)", designs["frozenset_lookup_us"], "us"),
        _row("HTTP p50, 1 connection", one["p50_ms"], "ms", TARGET_P50_1_MS),
        _row("HTTP p99, 1 connection", one["p99_ms"], "ms", TARGET_P99_1_MS),
        _row("HTTP req/s, 16 connections", many["rps"], "req/s", TARGET_RPS_16, below=False),
        _row("HTTP p99, 16 connections", many["p99_ms"], "ms", TARGET_P99_16_MS),
        _row("FastAPI-route req/s, 16 connections", http["fastapi_c16"]["rps"], "req/s"),
        _row("app time per request, hot path (in-process)", asgi["hot"], "us"),
        _row("app time per request, FastAPI route (in-process)", asgi["fastapi"], "us"),
        *([_row("server peak memory (index loaded, under load)", SERVER_PEAK_MB["last"], "MiB")]
          if SERVER_PEAK_MB.get("last") else []),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", help="accepted for `python -m benchmarks`; the audience is --users")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--root", type=Path, default=Path("data"), help="the audience lives in <root>/bench/")
    args = parser.parse_args(argv)
    run(args.size, users=args.users, segments=args.segments, seconds=args.duration, root=args.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
