"""Time README's "Your own images" commands, verbatim, on a folder dataset (issue 19).

    python bench/own_images.py --source DIR --name icons --attribute theme \
        --condition theme=Papirus --image PICTURE [--offline]

Reads the CPU command block of README's "Your own images" section, substitutes only its
placeholders (DIR, the name `shop`, the attribute `colour`, the condition `colour=red`, the picture
`my.jpg`) and runs it with bash in the repository root (default roots data/, weights/, results/),
with `python` the interpreter running this script. --offline points every proxy at a closed port and
TORCH_HOME at an empty folder, so a download would fail. Prints the commands, each one's start
(seconds from the first), the total wall and CPU time and the 1-minute load average every 30 s.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Your own images"
BLOCK_AFTER = "On a CPU, offline"


def readme_block() -> str:
    """The first bash block after BLOCK_AFTER in README's own-images section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    rest = section[section.index(BLOCK_AFTER) :]
    return re.search(r"```bash\n(.*?)```", rest, re.S).group(1)


def readme_script(source: Path, name: str, attribute: str, condition: str, image: Path) -> str:
    """README's CPU block with its placeholders replaced: DIR, shop, colour, colour=red, my.jpg."""
    return (
        readme_block()
        .replace("--source DIR", f"--source {shlex.quote(str(source))}")
        .replace("colour=red", shlex.quote(condition))
        .replace("shop:colour", f"{name}:{attribute}")
        .replace("--name shop", f"--name {name}")
        .replace("--dataset shop", f"--dataset {name}")
        .replace("my.jpg", shlex.quote(str(image)))
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--attribute", required=True)
    p.add_argument("--condition", required=True, help="ATTR=CLASS for the --image search")
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--offline", action="store_true")
    args = p.parse_args(argv)
    script = readme_script(args.source, args.name, args.attribute, args.condition, args.image)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` = ours
    scratch = Path(tempfile.mkdtemp(prefix="own_images_"))
    if args.offline:
        closed = "http://127.0.0.1:9"
        env |= {k: closed for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
        env["TORCH_HOME"] = str(scratch / "torch_home")  # no cached weights either
    # bash -x: each command with its start time (set in the script: bash ignores PS4 from the
    # environment when run as root)
    (scratch / "own_images.sh").write_text("PS4='+ $(date +%s.%N) '\n" + script)
    print(script)
    loads, done = [], threading.Event()

    def sample() -> None:
        while not done.wait(30):
            loads.append(os.getloadavg()[0])

    threading.Thread(target=sample, daemon=True).start()
    t0, load0 = time.time(), os.getloadavg()[0]
    proc = subprocess.run(
        ["bash", "-e", "-x", str(scratch / "own_images.sh")],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    total = time.time() - t0
    done.set()
    for line in proc.stderr.splitlines():
        m = re.match(r"\+ (\d+\.\d+) (.*)", line)
        if m and "python" in m.group(2):
            print(f"{float(m.group(1)) - t0:7.1f} s  {m.group(2)}")
        elif not m:
            print(line, file=sys.stderr)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU time: what a busy machine hides
    print(f"exit {proc.returncode}; total {total / 60:.1f} min ({(used.ru_utime + used.ru_stime) / 60:.1f} "
          f"CPU min); load {load0:.1f} at the start, then every 30 s: "
          f"{' '.join(f'{v:.1f}' for v in loads)}")  # fmt: skip
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
