"""One page of bench/explorer_latency.py, as its own process (a browser is one too): it sends the
explorer its interactions in turn on one kept-alive connection and times each.

    python bench/explorer_page.py PORT < plan.json > asked.json

The plan (stdin) is a JSON list of {"body": a search, "kind": what it times or null}; the answer
(stdout) is {"asked": [[kind, seconds, answer], …] for each timed one, "cpu_s": this process's
CPU time over its interactions}. Standard library only: the page's own cost stays small, and it
holds no lock of the server's (a client thread inside the server's process shared its GIL).
"""

from __future__ import annotations

import http.client
import json
import sys
import time


def main() -> None:
    port, plan = int(sys.argv[1]), json.load(sys.stdin)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    asked, cpu0 = [], time.process_time()
    for step in plan:
        t0 = time.perf_counter()
        conn.request("POST", "/api/search", json.dumps(step["body"]), JSON)
        answer = json.loads(conn.getresponse().read())
        seconds = time.perf_counter() - t0
        if "error" in answer:
            raise SystemExit(f"explorer_page: {answer['error']}")
        if step["kind"] is not None:
            asked.append([step["kind"], seconds, answer])
    cpu = time.process_time() - cpu0
    conn.close()
    json.dump({"asked": asked, "cpu_s": cpu}, sys.stdout)


JSON = {"Content-Type": "application/json"}

if __name__ == "__main__":
    main()
