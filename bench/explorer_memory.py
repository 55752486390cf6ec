"""Benchmark: the explorer's memory under a storm of huge uploads, and its searches meanwhile.

    python bench/explorer_memory.py [--task synthart-style] [--uploads 40] [--rounds 2]
                                    [--side 9400] [E3_explore.py's flags: --data-root …]

Starts E3_explore.py as its own process on a free loopback port (after `make demo`), then, per
round, sends --uploads concurrent POST /api/upload of one single-colour PNG of --side × --side
pixels (about 100 KB; 9400² is just under Pillow's decompression-bomb limit, so every one is
decoded) while one client keeps searching (Backward Search, a new λ each time). Reads the server's
resident memory (VmRSS, and its peak VmHWM, from /proc) before, during and after each round, and
times each search. Prints a markdown table and the load average; writes nothing.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = (1 / 16, 0.25, 1.0, 4.0, 16.0)


def big_png(side: int) -> bytes:
    """A single-colour PNG of side × side pixels: tiny on the wire, side² × 4 bytes decoded."""
    b = io.BytesIO()
    Image.new("RGB", (side, side), (120, 80, 200)).save(b, "PNG")
    return b.getvalue()


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of process `pid` in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}
    return kb["VmRSS"] / 1024, kb["VmHWM"] / 1024


def request(port: int, method: str, path: str, body: bytes | None, headers: dict) -> tuple:
    """(status, parsed JSON) of one request on its own connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(method, path, body, headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def start_server(argv: list[str]) -> tuple[subprocess.Popen, int]:
    """E3 on a free loopback port; (its process, the port) once it listens."""
    cmd = [sys.executable, str(ROOT / "E3_explore.py"), "--port", "0", *argv]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in proc.stdout:  # E3 logs to stdout
        found = re.search(r"the explorer is at http://127\.0\.0\.1:(\d+)/", line)
        if found:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain the log
            port, deadline = int(found.group(1)), time.monotonic() + 120
            while time.monotonic() < deadline:  # the socket is bound; uvicorn listens soon after
                try:
                    request(port, "GET", "/api/meta", None, {})
                    return proc, port
                except ConnectionRefusedError:
                    time.sleep(0.1)
    raise SystemExit(f"E3 did not start: {' '.join(cmd)} (exit {proc.wait()})")


def storm(pid: int, port: int, png: bytes, uploads: int, search: dict) -> tuple:
    """`uploads` concurrent uploads of `png` while one client searches: the server's RSS and
    peak RSS after it (MB), the highest RSS seen during it, the uploads answered and the searches'
    times."""
    done = threading.Event()
    statuses: list[int] = []
    latencies: list[float] = []
    json_type = {"Content-Type": "application/json"}

    def upload() -> None:
        headers = {"Content-Type": "image/png", "X-Filename": "big.png"}
        statuses.append(request(port, "POST", "/api/upload", png, headers)[0])

    def searcher() -> None:
        i = 0
        while not done.is_set():
            body = json.dumps({**search, "lam": LAMBDAS[i % len(LAMBDAS)]})
            t0 = time.perf_counter()
            status = request(port, "POST", "/api/search", body, json_type)[0]
            latencies.append(time.perf_counter() - t0)
            assert status == 200, status
            i += 1

    highest = 0.0
    threads = [threading.Thread(target=upload) for _ in range(uploads)]
    watch = threading.Thread(target=searcher)
    t0 = time.perf_counter()
    watch.start()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        highest = max(highest, memory_mb(pid)[0])
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    done.set()
    watch.join()
    time.sleep(1.0)  # what the server keeps once the storm is over
    rss, hwm = memory_mb(pid)
    ok = f"{statuses.count(200)} of {len(statuses)} in {seconds:.0f} s"
    ms = sorted(x * 1000 for x in latencies)
    timing = f"{len(ms)}: median {statistics.median(ms):.0f}, max {ms[-1]:.0f}" if ms else "none"
    return rss, hwm, f"{highest:.0f}", ok, timing


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="synthart-style")
    p.add_argument("--uploads", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--side", type=int, default=9400)
    own, rest = p.parse_known_args(argv)
    png = big_png(own.side)
    proc, port = start_server(["--task", own.task, *rest])
    try:
        meta = request(port, "GET", "/api/meta", None, {})[1]
        cond = {a: 1 % len(meta["attributes"][a]) for a in meta["conditions"]}
        search = {"row": 0, "conditions": cond, "method": "backward_search"}
        json_type = {"Content-Type": "application/json"}
        for lam in LAMBDAS:  # warm: the first answers load what searching needs
            request(port, "POST", "/api/search", json.dumps({**search, "lam": lam}), json_type)
        load_before = os.getloadavg()
        rows = [("started, after 5 searches", *memory_mb(proc.pid), "", "", "")]
        for rnd in range(1, own.rounds + 1):
            rows.append((f"after round {rnd}", *storm(proc.pid, port, png, own.uploads, search)))
        load_after = os.getloadavg()
    finally:
        proc.terminate()
        proc.wait(30)
    print(
        f"\nE3 on {own.task}; per round {own.uploads} concurrent uploads of a {own.side}×{own.side}"
        f" single-colour PNG ({len(png) / 1000:.0f} KB) while one client searches; "
        f"{os.cpu_count()} cores; load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f}\n"
    )
    print(
        "| when | RSS MB | peak RSS (VmHWM) MB | highest RSS seen in the round MB | uploads answered 200 | searches during the round (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for when, rss, hwm, peak, ok, timing in rows:
        print(f"| {when} | {rss:.0f} | {hwm:.0f} | {peak} | {ok} | {timing} |")


if __name__ == "__main__":
    main()
