"""The README's screenshot of the explorer (docs/explorer.png), taken in headless chromium.

    python scripts/explorer_screenshot.py [--task synthart-style] [--query 46]
                                          [--condition impressionism] [--lambda-steps -8]
                                          [--out docs/explorer.png]

Opens the explorer on the demo run (after `make demo`; the flags of E3_explore.py's run apply:
--data-root, --weights-root, --run, --database), picks the --query-th image of the query browser, the
condition class --condition of the first condition attribute ("": the page's, another class than
the query's; the defaults draw the demo's pointillism landscape walking to impressionism), moves λ by --lambda-steps marks from the task's (each a quarter octave; negative: less
pull back, a longer walk), hovers the result farthest from the query on the map (its image shows)
and saves the whole page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import E3_explore  # noqa: E402
from scripts.browser import chromium_page  # noqa: E402
from src.cli import run_stage, setup_logging  # noqa: E402
from src.explorer.app import create_app  # noqa: E402
from src.explorer.server import serving  # noqa: E402

FARTHEST = """() => {
  const z = document.getElementById("z0"), zx = +z.getAttribute("cx"), zy = +z.getAttribute("cy");
  const d = [...document.querySelectorAll("#result-dots rect")].map(
    (r) => (+r.getAttribute("x") + 4 - zx) ** 2 + (+r.getAttribute("y") + 4 - zy) ** 2);
  return d.indexOf(Math.max(...d));
}"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="synthart-style")
    p.add_argument("--query", type=int, default=46, help="which image of the browser's first page")
    p.add_argument(
        "--condition", default="impressionism", help="class name of the first condition attribute"
    )
    p.add_argument("--lambda-steps", type=int, default=-8, help="λ slider marks from the task's")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "explorer.png")
    own, rest = p.parse_known_args(argv)
    setup_logging()
    explorer = E3_explore.open_explorer(E3_explore.parse_args(["--task", own.task, *rest]))
    attr = explorer.space.task.conditions[0]
    with serving(create_app(explorer)) as url, chromium_page(1560, 980) as page:
        page.goto(url)
        page.wait_for_selector("#results .tile")
        page.locator("#browser .thumb").nth(own.query).click()
        page.wait_for_selector("body[data-busy='0']")
        if own.condition:
            page.select_option(f"#cond-{attr}", label=own.condition)
            page.wait_for_selector("body[data-busy='0']")
        for _ in range(abs(own.lambda_steps)):
            page.locator("#lam").press("ArrowLeft" if own.lambda_steps < 0 else "ArrowRight")
            page.wait_for_selector("body[data-busy='0']")
        page.wait_for_load_state("networkidle")  # every picture of the grid drawn
        page.locator("#result-dots rect").nth(page.evaluate(FARTHEST)).hover(force=True)
        page.wait_for_timeout(300)
        own.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(own.out), full_page=True)
    print(f"wrote {own.out}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
