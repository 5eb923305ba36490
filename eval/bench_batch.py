"""``batch embed`` throughput: in-process, then a local Ray with 1 and with 2 actors (one CPU
each) on the same store, each run with a fresh embedding cache (so no run is free), and the
vectors compared with the in-process ones (max abs diff).

The Ray cluster is started here (``ray start --head --num-cpus 2`` under a temp dir of its own)
and only its processes are ended at the end. Exported models are reused from ``--models`` (a
models folder of a ``Settings.home``): only the embedding cache is fresh per run.

Data: SYNTHETIC persona sessions (``behavior_rag.synth.generate``), ``--sessions`` of them.

Usage:  python eval/bench_batch.py [--sessions 2000] [--batch-size 100] [--backend auto]
        [--models .cache/test-home/models] [--out eval/reports/bench_batch.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from behavior_rag.atomic import replace_file  # noqa: E402
from behavior_rag.batch import BatchReport, batch_embed, shard_vectors  # noqa: E402
from behavior_rag.embed import get_embedder  # noqa: E402
from behavior_rag.facts import compute_facts  # noqa: E402
from behavior_rag.ingest.store import open_store, write_store  # noqa: E402
from behavior_rag.render import render  # noqa: E402
from behavior_rag.settings import Settings  # noqa: E402
from behavior_rag.synth import generate  # noqa: E402

TARGET = 1.6


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def fresh_settings(work: Path, name: str, models: Path, backend: str) -> Settings:
    """A home with an empty embedding cache and the exported models of ``models``."""
    home = work / name
    home.mkdir()
    (home / "models").symlink_to(models.resolve(), target_is_directory=True)
    return Settings(home=home, embed={"backend": backend})


def ours(temp_dir: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and temp_dir in (p / "cmdline").read_bytes().decode("utf-8",
                                                                                   "replace"):
                pids.append(int(p.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def stop_cluster(temp_dir: str) -> None:
    """SIGTERM, then SIGKILL, only the processes of the cluster under ``temp_dir``."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for pid in ours(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while ours(temp_dir) and time.monotonic() < end:
            time.sleep(0.2)


def _box_busy() -> float:
    tick = os.sysconf("SC_CLK_TCK")
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / tick  # all but idle and iowait


def _our_cpu(temp_dir: str) -> dict[int, float]:
    """CPU seconds (utime + stime) of each live process of this bench: this process, its
    children, the Ray processes under ``temp_dir`` and their descendants (actors retitle
    themselves, so they are found through their parents)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit():
                stats[int(p.name)] = (p / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
    mine = set(ours(temp_dir)) | {os.getpid()}
    while True:
        more = {pid for pid, st in stats.items() if int(st[1]) in mine} - mine
        if not more:
            break
        mine |= more
    return {p: sum(int(x) for x in stats[p][11:13]) / tick for p in mine if p in stats}


class CpuWatch(threading.Thread):
    """Samples this bench's processes every 0.2 s while a run lasts: an actor that exits
    before the run ends still counts with the CPU time it had at its last sample (a reading
    at the end alone missed exited actors and blamed their work on "other jobs")."""

    def __init__(self, temp_dir: str) -> None:
        super().__init__(daemon=True)
        self.temp_dir, self.first, self.last = temp_dir, _our_cpu(temp_dir), {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.last |= _our_cpu(self.temp_dir)

    def __enter__(self) -> CpuWatch:
        self.busy0 = _box_busy()
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()
        self.last |= _our_cpu(self.temp_dir)
        self.busy = _box_busy() - self.busy0
        self.mine = sum(v - self.first.get(p, 0.0) for p, v in self.last.items())


def start_cluster(temp_dir: str, cpus: int) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--port",
                    str(port), "--num-cpus", str(cpus), "--object-store-memory", "200000000",
                    "--temp-dir", temp_dir, "--include-dashboard", "false",
                    "--disable-usage-stats"], check=True, env=env, capture_output=True,
                   timeout=180)
    return f"127.0.0.1:{port}"


def row(name: str, r: BatchReport, base: float, other: float) -> str:
    busy = r.worker_s / r.workers  # each worker's share of the shard time
    return (f"| {name} | {r.workers} | {r.shards} | {r.seconds:.1f} | {r.sessions_per_s:.1f} | "
            f"{r.sessions_per_s / base:.2f}x | {r.sessions / busy:.1f} | {other:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--models", type=Path, default=ROOT / ".cache" / "test-home" / "models")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "reports" / "bench_batch.md")
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    store = work / "store"
    write_store(generate(a.sessions, seed=2026).sessions, store)
    runs: dict[str, tuple[BatchReport, float]] = {}

    temp_dir = tempfile.mkdtemp(prefix="brb-", dir="/tmp")

    def once(name: str, **kw) -> BatchReport:
        s = fresh_settings(work, f"home-{name}", a.models, a.backend)
        with CpuWatch(temp_dir) as cpu:
            r = batch_embed(store, work / f"out-{name}", settings=s, batch_size=a.batch_size,
                            **kw)
        other = max(0.0, cpu.busy - cpu.mine) / r.seconds
        runs[name] = (r, other)
        print(f"{name}: {r.sessions_per_s:.1f} sessions/s ({r.seconds:.1f} s; other jobs used "
              f"{other:.2f} cores meanwhile)", flush=True)
        return r

    once("in-process")
    try:
        address = start_cluster(temp_dir, 2)
        once("ray-1", ray_address=address, workers=1)
        once("ray-2", ray_address=address, workers=2)
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)

    ids, here = shard_vectors(work / "out-in-process")
    diffs = {n: float(np.abs(shard_vectors(work / f"out-{n}")[1] - here).max())
             for n in ("ray-1", "ray-2") if shard_vectors(work / f"out-{n}")[0] == ids}
    s = fresh_settings(work, "home-whole", a.models, a.backend)
    sessions = open_store(store).get_many(ids)
    texts = [render(x, settings=s, facts=compute_facts(x, tz=s.render.timezone))
             for x in sessions]
    whole = get_embedder(s, cache=False).embed(texts)  # upsert_sessions' one call
    whole_diff = float(np.abs(shard_vectors(work / "out-ray-2")[1] - whole).max())

    r1, r2 = runs["ray-1"][0], runs["ray-2"][0]
    ratio = r2.sessions_per_s / r1.sessions_per_s
    busy_ratio = (r1.worker_s / r1.workers) / (r2.worker_s / r2.workers)
    print(f"2 workers / 1 worker: {ratio:.2f}x (target >= {TARGET}x); shard time "
          f"{busy_ratio:.2f}x; max abs diff vs in-process shards {max(diffs.values()):.2e}, "
          f"vs one whole-store embed call {whole_diff:.2e}")
    replace_file(a.out, report(a, runs, ratio, busy_ratio, diffs, whole_diff, r2))
    shutil.rmtree(work, ignore_errors=True)


def report(a, runs, ratio, busy_ratio, diffs, whole_diff, r2: BatchReport) -> str:
    base = runs["in-process"][0].sessions_per_s
    verdict = "met" if ratio >= TARGET else f"MISSED by {TARGET - ratio:.2f}x"
    lines = [
        "# Batch embed on Ray (`eval/bench_batch.py`)", "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_model()} "
        f"({os.cpu_count()} cores, a shared box: the last column says what other jobs took), Python "
        f"{platform.python_version()}.",
        f"Command: `python eval/bench_batch.py --sessions {a.sessions} --batch-size "
        f"{a.batch_size} --backend {a.backend}`. {a.sessions:,} SYNTHETIC persona sessions; "
        f"embedder {r2.embedder.id} on {r2.embedder.backend}; each run with a fresh, empty "
        "embedding cache; Ray: a local head with 2 CPUs, one CPU (one embedder thread) per "
        "actor. Wall time includes Ray start-up of the actors and their model loads.", "",
        "| run | workers | shards | wall s | sessions/s (wall) | vs in-process | "
        "sessions/s (shard time) | cores used by other jobs |",
        "|---|---|---|---|---|---|---|---|",
        *[row(n, r, base, other) for n, (r, other) in runs.items()], "",
        "Cores used by other jobs: the box's busy CPU time during the run minus this bench's "
        "(its process, the Ray processes and their actors), per wall second. In-process: one "
        "process, the embedder on all cores.", "",
        f"**2 workers vs 1 worker: {ratio:.2f}x** wall (target >= {TARGET}x: {verdict}); "
        f"{busy_ratio:.2f}x on the time the workers spent on shards (start-up excluded).", "",
        "Vectors: max abs diff to the in-process run (same shards): "
        + ", ".join(f"{n} {d:.2e}" for n, d in diffs.items())
        + f"; to one whole-store `embedder.embed` call (what `index_sessions` does): "
        f"{whole_diff:.2e} (openvino in bf16 and onnx-int8 vectors depend on which texts share "
        "a length-sorted batch of 16; torch and onnx fp32 do not).", "",
    ]
    if ratio < TARGET:
        lines += [
            "## Why the target is missed", "",
            "Both actors share the box's 2 cores with the driver, Ray's own processes (raylet, "
            "GCS, the Ray Data executor) and any other job on this shared machine, so the "
            "second worker never gets a whole free core; each actor also loads and compiles "
            "its own model, a fixed cost the wall time includes. The shard-time ratio shows "
            "the scaling of the embedding work itself.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
