"""Is this run's setting the paper's? The facts behind a task's numbers beside src/paper.SETTINGS.

A Δ against the paper means something only when data, split, encoder recipe and queries are the
paper's; REPORT.md puts a banner over a task whose run differs and marks each of its Δ with MARK.
"""

from __future__ import annotations

import re
from typing import Any

from src.paper import SETTINGS, PaperSetting
from src.report.protocol import is_release
from src.tasks import Task

MARK = "†"  # beside every Δ of a task whose setting is not the paper's
COUNT_TOLERANCE = 0.001  # the authors' CUB alignment bug drops 1 of 11,788 images (SPEC §2)


def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _count_differs(ours: Any, paper: int) -> bool:
    return isinstance(ours, int) and abs(ours - paper) > COUNT_TOLERANCE * paper


def _n(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def setting_differences(
    task: Task, data_cfg: Any, enc_cfg: Any, queries_meta: Any = None
) -> list[str]:
    """What in this run's setting differs from the paper's for the task's dataset, one phrase each
    ("10 classes of species (paper: 200)"); empty when it is the paper's or there is no paper
    setting (SynthArt). Imported runs (the authors' release) have the paper's setting except the
    encoder configuration their config records (backbone, E)."""
    paper: PaperSetting | None = SETTINGS.get(task.dataset)
    if paper is None or task.paper_column is None:
        return []
    data_cfg, enc_cfg, queries_meta = _dict(data_cfg), _dict(enc_cfg), _dict(queries_meta)
    enc = _dict(enc_cfg.get("encoder"))
    recipe = {**_dict(enc_cfg.get("args")), **_dict(enc_cfg.get("recipe"))}
    out: list[str] = []
    imported = is_release(data_cfg) or is_release(enc_cfg)
    if not imported:
        counts = _dict(data_cfg.get("counts"))
        if all(isinstance(counts.get(s), int) for s in ("train", "test")):
            images = counts["train"] + counts["test"]
            if _count_differs(images, paper.images):
                out.append(f"{_n(images)} images (paper: {_n(paper.images)})")
            for s, n in paper.split.items():
                if _count_differs(counts[s], n):
                    out.append(f"{s} split {_n(counts[s])} (paper: {_n(n)})")
        for attr, n in paper.classes.items():
            ours = _dict(enc.get("num_classes")).get(attr)
            if isinstance(ours, int) and ours != n:
                out.append(f"{ours} classes of {attr} (paper: {n})")
    if "backbone" in recipe and recipe["backbone"] != paper.backbone:
        out.append(f"backbone {recipe['backbone']} (paper: {paper.backbone})")
    e = enc.get("embedding_size", recipe.get("embedding_size"))
    if isinstance(e, int) and e != paper.embedding_size:
        out.append(f"E = {e} (paper: {paper.embedding_size})")
    if enc.get("frozen"):
        out.append("backbone frozen (paper: fine-tuned)")
    if not imported:
        pretrained = recipe.get("pretrained")
        if pretrained is not None and str(pretrained) != paper.pretrained:
            out.append(f"pretrained {pretrained} (paper: {paper.pretrained} weights)")
        size = enc.get("image_size", recipe.get("image_size"))
        if isinstance(size, int) and size != paper.image_size:
            out.append(f"{size} px input (paper: {paper.image_size} px)")
        epochs = recipe.get("epochs")
        if isinstance(epochs, int) and epochs != paper.epochs:
            out.append(f"{epochs} epochs (paper: {paper.epochs})")
        n_q = queries_meta.get("n_queries", queries_meta.get("num_queries"))
        if isinstance(n_q, int) and n_q != paper.queries:
            out.append(f"{_n(n_q)} queries (paper: {_n(paper.queries)})")
    return out


def setting_banner(differences: list[str]) -> list[str]:
    """The markdown lines at the top of a task's section whose setting is not the paper's."""
    if not differences:
        return []
    return [
        f"> **{MARK} Not the paper's setting**: {'; '.join(differences)}. Every Δ marked {MARK} "
        "sets numbers from a different setting beside the paper's: read it as context, not as "
        "a reproduction gap.",
        "",
    ]


_CELL = re.compile(r"^[+−-]\d")  # a difference: the tables write Δ values signed


def mark_deltas(markdown: str) -> str:
    """Every Δ value of a markdown table (a Δ column's or a Δ row's numbers) gets MARK."""
    out: list[str] = []
    header: list[str] | None = None  # the current table's header cells
    for line in markdown.split("\n"):
        if not line.startswith("|"):
            header = None
            out.append(line)
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None or set("".join(cells)) <= set("-: "):  # header or separator line
            header = cells if header is None else header
            out.append(line)
            continue
        row_delta = cells[0].startswith("Δ")
        marked = [
            f"{c} {MARK}"
            if _CELL.match(c) and (row_delta or (i < len(header) and header[i].startswith("Δ")))
            else c
            for i, c in enumerate(cells)
        ]
        out.append("| " + " | ".join(marked) + " |")
    return "\n".join(out)
