"""The explorer end to end in a real headless browser: Debian's chromium (Playwright) on a real
uvicorn server on a free loopback port, over the tiny pipeline. Pick a query, pick a condition,
move λ: the top-10 grid and the walk on the map must change. A page of another origin (a second
loopback port) that posts to the explorer is refused. Skipped only without chromium."""

from __future__ import annotations

import io
import re

import pytest
import torch
from PIL import Image
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from scripts.browser import chromium_page, chromium_path, expect
from src.evaluation.space import load_space
from src.explorer.app import create_app
from src.explorer.projection import load_projection
from src.explorer.server import serving
from src.explorer.session import Explorer
from src.tasks import get_task
from tests._pipeline import build_pipeline

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="no chromium (apt-get install -y chromium)"
)
TIMEOUT = 60_000  # ms: CI's 2 busy cores
FARTHEST_FROM_Z0 = """() => {  // the result square least covered by the query's own mark
  const z = document.getElementById("z0"), zx = +z.getAttribute("cx"), zy = +z.getAttribute("cy");
  const d = [...document.querySelectorAll("#result-dots rect")].map(
    (r) => (+r.getAttribute("x") + 4 - zx) ** 2 + (+r.getAttribute("y") + 4 - zy) ** 2);
  return d.indexOf(Math.max(...d));
}"""


def png_bytes() -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 90)).save(b, "PNG")
    return b.getvalue()


def shown(page) -> tuple[str, str]:
    """(the grid's rows, the walk's points) once no request is in flight."""
    page.wait_for_selector("body[data-busy='0']", timeout=TIMEOUT)
    return page.get_attribute("#results", "data-rows"), page.get_attribute("#walk-path", "points")


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    pipe = build_pipeline(tmp_path_factory.mktemp("browser"))
    task = get_task("synthart-style", pipe.data_root)
    space = load_space(pipe.data_root, pipe.weights_root, task, pipe.run, torch.device("cpu"))
    return Explorer(space, load_projection(space), task.default_lambda)


def test_pick_a_query_and_a_condition_then_move_lambda(explorer, tmp_path):
    space = explorer.space
    errors: list[str] = []
    with serving(create_app(explorer)) as url, chromium_page() as page:
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.goto(url, timeout=TIMEOUT)
        page.wait_for_selector("#results .tile", timeout=TIMEOUT)  # the first image, searched
        assert page.locator("#results .tile").count() == 10
        page.locator("#browser .thumb").nth(5).click()  # pick a query …
        first = shown(page)
        own = page.text_content("#query-labels")
        chosen = page.eval_on_selector("#cond-style", "s => s.selectedOptions[0].text")
        style = next(n for n in space.labels["style"] if f"style: {n}" not in own and n != chosen)
        page.select_option("#cond-style", label=style)  # … another condition …
        at_default = shown(page)
        assert at_default != first
        lam = page.locator("#lam")
        lam.focus()
        lam.press("End")  # … and move λ: 64 keeps the query where it is
        far = shown(page)
        assert "λ = 64" in page.text_content("#lam-value")
        lam.press("Home")  # λ = 0: the heads alone decide
        near = shown(page)
        assert "λ = 0" in page.text_content("#lam-value")
        assert near[0] != far[0]  # the grid changed …
        assert near[1] != far[1]  # … and so did the walk
        assert page.locator("#results .tile").count() == 10
        assert page.locator("#walk-steps circle").count() == len(near[1].split()) - 2
        assert page.locator("#result-dots rect").count() == 10
        lam.press("ArrowRight")  # the smallest λ above 0, 1/64, in decimals
        shown(page)
        assert page.text_content("#lam-value") == "λ = 0.0156"
        assert page.evaluate("[0.84, 1.1892, 0.5, 64].map(lamText)") == [
            "0.84",
            "1.19",
            "0.5",
            "64",
        ]
        page.locator("#result-dots rect").nth(page.evaluate(FARTHEST_FROM_Z0)).hover(force=True)
        assert page.is_visible("#tooltip")  # hovering a point shows its image
        assert re.fullmatch(r"/image/\d+", page.get_attribute("#tooltip-img", "src"))
        page.hover("#zfinal")
        assert "the vector ranked" in page.text_content("#tooltip-text")
        bad = {"name": "notes.png", "mimeType": "image/png", "buffer": b"not a picture"}
        page.set_input_files("#upload", files=[bad])  # a bad upload: its line on the page …
        expect(page.locator("#upload-msg")).to_contain_text("cannot read image notes.png")
        assert errors == [
            "Failed to load resource: the server responded with a status of 400 (Bad Request)"
        ]
        errors.clear()  # the refusal is the one expected console line
        good = {"name": "mine.png", "mimeType": "image/png", "buffer": png_bytes()}
        page.set_input_files("#upload", files=[good])  # … and the server goes on
        expect(page.locator("#upload-msg")).to_contain_text("mine.png: the encoder sees")
        uploaded = shown(page)
        assert "mine.png (uploaded" in page.text_content("#query-labels")
        assert uploaded[0] and uploaded != near
        page.screenshot(path=str(tmp_path / "explorer.png"))
    assert not errors, errors
    assert (tmp_path / "explorer.png").stat().st_size > 10_000


# A page of another site: a form that posts a search as text/plain (a body that parses as JSON),
# and a no-cors fetch that posts a picture. A browser sends both without asking the server first.
ATTACK = """<!doctype html><html><body>
<form id="form" method="POST" action="{target}api/search" enctype="text/plain">
<input name='{{"row": 0, "conditions": {{"style": 1}}, "method": "knn", "pad": "' value='"}}'>
</form>
<script>
fetch("{target}api/upload", {{method: "POST", mode: "no-cors",
  body: new Blob([new Uint8Array({png})], {{type: "image/png"}})}})
  .finally(() => document.getElementById("form").submit());
</script></body></html>"""


def test_a_page_of_another_origin_cannot_drive_the_explorer(explorer, monkeypatch):
    asked, uploaded = [], []
    real_ask, real_submit = explorer.ask, explorer.submit_upload
    monkeypatch.setattr(explorer, "ask", lambda body: asked.append(1) or real_ask(body))
    monkeypatch.setattr(explorer, "submit_upload", lambda *a: uploaded.append(1) or real_submit(*a))
    with serving(create_app(explorer)) as url, chromium_page() as page:
        attack = ATTACK.format(target=url, png=list(png_bytes()))
        other = Starlette(routes=[Route("/", lambda request: HTMLResponse(attack))])
        with serving(other) as elsewhere:  # the same machine, another port: another origin
            answers = []
            page.on("response", lambda r: r.url.startswith(url) and answers.append(r))
            page.goto(elsewhere, timeout=TIMEOUT)
            page.wait_for_url(f"{url}api/search", timeout=TIMEOUT)  # the form was sent
            origin = elsewhere.rstrip("/")
            assert f"refused: a page of {origin} may not use this explorer" in page.content()
        assert sorted((a.url.removeprefix(url), a.status) for a in answers) == [
            ("api/search", 403),
            ("api/upload", 403),
        ]
        assert asked == [] and uploaded == []  # refused before the explorer saw them
        page.goto(url, timeout=TIMEOUT)  # the explorer's own page goes on working
        page.wait_for_selector("#results .tile", timeout=TIMEOUT)
        page.set_input_files(
            "#upload", files=[{"name": "a.png", "mimeType": "image/png", "buffer": png_bytes()}]
        )
        expect(page.locator("#upload-msg")).to_contain_text("a.png: the encoder sees")
    assert asked and uploaded == [1]
