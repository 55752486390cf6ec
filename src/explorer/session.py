"""The explorer's state over one search space, and what one interaction computes — no web here.

An interaction (`Ask`) names a query (a database row, or a picture uploaded earlier), one class per
condition attribute, a method, λ and α; its `Answer` is the top-10 as the page shows it (each
image's condition hit, labels and the tags it shares with the query), the query's precision@10
and mean tag-Jaccard (src/method/metrics.py, E1's), and its walk on the map. A database query is
a one-row query file (`file_queries`, as E1 and E2 read them), so its answer is theirs.
"""

from __future__ import annotations

import dataclasses
import io
import json
import secrets
import socket
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from src.errors import SuiteError
from src.evaluation import registry
from src.evaluation.methods import seen_as
from src.evaluation.shown import shown_rows
from src.evaluation.space import Queries, SearchSpace, embed_image, file_queries, picture_query
from src.explorer.projection import Projection
from src.explorer.searchers import Searchers
from src.explorer.walk import walk
from src.method.student import student_lambdas
from src.tags import split_tags
from src.threads import usable_cpus

MAX_UPLOAD_BYTES = 16 * 2**20  # an upload larger than this is refused before it is decoded
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")  # what Pillow may decode from an upload
MAX_UPLOADS = 32  # embedded uploads kept in memory (the oldest forgotten first); none on disk
RECENT_QUERIES = 64  # queries (one per page, query and condition) kept for the next interaction
LAMBDA_MAX = 64.0  # the slider's range: 0 … 64, as the paper's λ sweep (Fig 6)
ALPHA_MAX = 4.0  # the centroid shift's α: E1 sweeps 0 … 2
PAGE = 48  # database images per page of the query browser


@dataclass(frozen=True)
class Ask:
    """One interaction of the page."""

    conditions: dict[str, int]  # attribute → class id, one per condition attribute of the task
    method: str
    lam: float
    alpha: float = 1.0
    row: int | None = None  # the query: a database row …
    upload: str | None = None  # … or the token of an uploaded picture


@dataclass
class Shown:
    """One retrieved image as the page shows it."""

    rank: int
    row: int
    image: str
    score: float | None  # cosine to the ranked vector (None: a method that ranks by a rule)
    hit: bool  # carries every condition class
    labels: dict[str, str]
    tags: list[str]
    shared: list[str]  # tags the query has too
    jaccard: float | None  # tag-Jaccard with the query (None: the query has no tags)
    is_query: bool  # the query's own image (the protocol keeps it in the database)


@dataclass
class Answer:
    """What the page draws for one interaction."""

    method: str
    lam: float
    alpha: float
    condition: dict[str, str]
    results: list[Shown]
    precision: float  # precision@10, the paper's per-query "mAP@10"
    mean_jaccard: float | None  # mean tag-Jaccard of the top-10 (the query's mTS@10)
    walk: list[list[float]]  # the query's path on the map: z0, …, the ranked vector
    query_as: dict[str, str]  # the heads' classes of z0
    answer_as: dict[str, str]  # the heads' classes of the ranked vector
    iterations: int | None = None
    satisfied_at: int | None = None
    query: dict[str, Any] = field(default_factory=dict)  # row, labels and tags of a database query


def as_json(answer: Answer) -> bytes:
    """The answer as the page reads it: JSON as Starlette's JSONResponse writes it."""
    return json.dumps(
        dataclasses.asdict(answer), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode()


def _number(body: Mapping[str, Any], key: str, low: float, high: float, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SuiteError(f"{key} must be a number, got {_shown(value)}")
    # an int is compared exactly (float() of one with 400 digits would overflow); NaN fails here
    if not (low <= value <= high):
        raise SuiteError(f"{key} = {_shown(value)} is outside {low:g} … {high:g}")
    return float(value)


def _shown(value: Any) -> str:
    """A request's value in a message: its repr, cut short (a number of 400 digits, a long list)."""
    text = repr(value) if not isinstance(value, float) else f"{value:g}"
    return text if len(text) <= 40 else f"{text[:37]}…"


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SuiteError(f"{what} must be an integer, got {_shown(value)}")
    return value


class Explorer:
    """A task's search space, its map, its students and the pictures uploaded so far."""

    def __init__(self, space: SearchSpace, projection: Projection, default_lambda: float):
        self.space = space
        self.projection = projection
        self.default_lambda = float(default_lambda)
        self.student_lambdas = student_lambdas(space.weights, space.task.name)
        self.uploads: OrderedDict[str, Any] = OrderedDict()  # token → 1×E embedding
        # Searches run side by side (each its own tensors; the heads stay in eval mode); the lock
        # guards only the two small dicts they share: the uploads and the recent queries.
        self.lock = threading.Lock()
        # searches in threads of this process, at most one per CPU, unless in_processes was called
        self.searcher = ThreadPoolExecutor(usable_cpus(), thread_name_prefix="E3-search")
        self.searchers: Searchers | None = None
        # Uploaded pictures are decoded one at a time, always in this one thread: a 9400×9400
        # picture takes a third of a GB while it is decoded, and each thread that decodes keeps
        # its own malloc arena, so decoding in many threads kept GBs that were never given back.
        self.decoder = ThreadPoolExecutor(1, thread_name_prefix="E3-upload")
        # the queries of recent interactions: a new λ or method reuses its page's query, also
        # while other pages ask in between
        self.recent: OrderedDict[tuple, Queries] = OrderedDict()
        self.label_ids = {a: ids.cpu().numpy() for a, ids in space.label_ids.items()}
        root = space.image_root or space.data_root / space.task.dataset
        self.image_root = Path(root).resolve()

    # -- what the page loads once ----------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """The task, its attributes and classes, the controls' ranges and defaults."""
        s = self.space
        return {
            "task": s.task.name,
            "run": s.run,
            "database": s.database,
            "size": len(s),
            "searched": s.describe(),  # the index, with its recall@10, when not exact
            "attributes": {a: list(s.labels[a]) for a in self.label_ids},
            "conditions": list(s.task.conditions),
            "default_lambda": self.default_lambda,
            "lambda_max": LAMBDA_MAX,
            "alpha_max": ALPHA_MAX,
            "student_lambdas": self.student_lambdas,
            "methods": {  # the registry's, in its order: the page's method switch
                k: {"label": m.title(), "knob": m.knob and m.knob.key, "trained": m.trained}
                for k, m in registry.METHODS.items()
            },
            "default_method": registry.BACKWARD_SEARCH,
            "uploads": s.encoder.has_backbone,
            "max_upload_bytes": MAX_UPLOAD_BYTES,
        }

    def map_points(self) -> dict[str, Any]:
        """The database on the map, coloured by the first condition attribute's class."""
        attr = self.space.task.conditions[0]
        return {
            "xy": np.round(self.projection.xy, 4).tolist(),
            "attribute": attr,
            "colour": self.label_ids[attr].tolist(),
        }

    def browse(self, filters: Mapping[str, int], offset: int = 0) -> dict:
        """Database rows whose class is `filters[attr]` for every attribute filtered, one page
        of PAGE rows from `offset` (a negative one: the first page)."""
        keep = np.ones(len(self.space), dtype=bool)
        for a, c in filters.items():
            if a not in self.label_ids:
                raise SuiteError(f"no attribute {a!r}; filter by {', '.join(self.label_ids)}")
            keep &= self.label_ids[a] == c
        rows = np.flatnonzero(keep)
        page = rows[max(0, offset) : max(0, offset) + PAGE]
        return {"total": len(rows), "offset": offset, "rows": [self.describe(r) for r in page]}

    def describe(self, row: int) -> dict[str, Any]:
        """A database row for the page: its image key, class names and tags."""
        s = self.space
        return {
            "row": int(row),
            "image": s.images[row],
            "labels": {a: s.labels[a][int(ids[row])] for a, ids in self.label_ids.items()},
            "tags": sorted(split_tags(s.tag_cells[row])),
        }

    def picture(self, row: int) -> Path:
        """The picture file of database row `row`; only files under the image root are served."""
        if not 0 <= row < len(self.space):
            raise SuiteError(f"no database row {row} (0 … {len(self.space) - 1})")
        path = self.space.image_path(self.space.images[row]).resolve()
        if not path.is_relative_to(self.image_root) or not path.is_file():  # no server path said
            raise SuiteError(f"the picture of row {row} is not under the dataset's image folder")
        return path

    # -- interactions ----------------------------------------------------------------------

    def upload(self, data: bytes, name: str) -> dict[str, Any]:
        """Embed an uploaded picture (kept in memory only); its token and how the heads see it."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise SuiteError(f"{name} is larger than {MAX_UPLOAD_BYTES >> 20} MiB: resize it")
        z0 = embed_image(self.space, io.BytesIO(data), name=name, formats=UPLOAD_FORMATS)
        token = secrets.token_hex(8)
        self.keep_upload(token, z0)
        return {"token": token, "name": name, "seen_as": seen_as(self.space, z0)}

    def keep_upload(self, token: str, z0: Any) -> None:
        """Keep an uploaded picture's embedding under `token` (the MAX_UPLOADS newest)."""
        with self.lock:
            self.uploads[token] = z0
            while len(self.uploads) > MAX_UPLOADS:
                self.uploads.popitem(last=False)

    def submit_upload(self, data: bytes, name: str) -> Future:
        """`upload` in the decoder thread, after the uploads sent before it (the web app awaits it)."""
        return self.decoder.submit(self.upload, data, name)

    def in_processes(self, n: int, close: Sequence[socket.socket] = ()) -> None:
        """Search from now on in `n` processes forked from this one (`close`: sockets they must
        not hold): threads of one process take turns on its GIL (src/explorer/searchers.py)."""
        self.searchers = Searchers(self.answer_request, n, close)

    def close(self) -> None:
        """End the search processes, if any (the threads end with this process)."""
        if self.searchers is not None:
            self.searchers.close()
            self.searchers = None

    def submit_answer(self, ask: Ask) -> Future:
        """`ask`'s answer as JSON bytes, from a free search process or thread (in turn)."""
        if self.searchers is None:
            return self.searcher.submit(lambda: as_json(self.answer(ask)))
        request: dict[str, Any] = {"ask": dataclasses.asdict(ask), "z0": None}
        if ask.upload is not None:  # the processes were forked before it came: it goes along
            with self.lock:
                z0 = self.uploads.get(ask.upload)
            if z0 is not None:  # float32 → JSON → float32 is exact
                request["z0"], request["dtype"] = z0.tolist(), str(z0.dtype).split(".")[-1]
        return self.searchers.submit(json.dumps(request).encode())

    def answer_request(self, request: bytes) -> bytes:
        """submit_answer's request answered (in a search process): the answer as JSON bytes."""
        r = json.loads(request)
        ask = Ask(**r["ask"])
        if r["z0"] is not None:
            self.keep_upload(ask.upload, torch.tensor(r["z0"], dtype=getattr(torch, r["dtype"])))
        return as_json(self.answer(ask))

    def ask(self, body: Mapping[str, Any]) -> Ask:
        """An Ask from the page's JSON, every value checked (a bad one: a one-line SuiteError)."""
        if not isinstance(body, Mapping):
            raise SuiteError("the request must be a JSON object")
        s = self.space
        given = body.get("conditions")
        if not isinstance(given, Mapping) or set(given) != set(s.task.conditions):
            raise SuiteError(f"give one class for each of: {', '.join(s.task.conditions)}")
        conditions = {}
        for a in s.task.conditions:
            c = _int(given[a], f"the {a} condition")
            if not 0 <= c < len(s.labels[a]):
                raise SuiteError(f"{a} class {_shown(c)} out of range (0 … {len(s.labels[a]) - 1})")
            conditions[a] = c
        method = registry.method(body.get("method")).key
        row, upload = body.get("row"), body.get("upload")
        if (row is None) == (upload is None):
            raise SuiteError("give the query as a database row or an uploaded picture")
        if row is not None and not 0 <= _int(row, "row") < len(s):
            raise SuiteError(f"no database row {_shown(row)} (0 … {len(s) - 1})")
        if upload is not None and (not isinstance(upload, str) or upload not in self.uploads):
            raise SuiteError("that uploaded picture is no longer here: upload it again")
        lam = _number(body, "lam", 0.0, LAMBDA_MAX, self.default_lambda)
        alpha = _number(body, "alpha", 0.0, ALPHA_MAX, 1.0)
        return Ask(conditions, method, lam, alpha, row, upload)

    def queries(self, ask: Ask) -> Queries:
        """The query of `ask`: a database row as a one-row query file, or an uploaded picture."""
        s = self.space
        if ask.upload is not None:
            with self.lock:
                z0 = self.uploads.get(ask.upload)
            if z0 is None:  # forgotten since `ask` looked (MAX_UPLOADS newer ones came)
                raise SuiteError("that uploaded picture is no longer here: upload it again")
            return picture_query(s, z0, ask.conditions)
        frame = pd.DataFrame(
            {
                "query_id": [ask.row],
                "image": [s.images[ask.row]],
                **{a: [s.labels[a][c]] for a, c in ask.conditions.items()},
                "tags": [s.tag_cells[ask.row]],
            }
        )
        return file_queries(s, frame)

    def answer(self, ask: Ask) -> Answer:
        """Rank the query of `ask` with its method; the top-10 as shown, its scores and walk."""
        s = self.space
        key = (ask.row, ask.upload, tuple(ask.conditions.items()))
        with self.lock:
            q = self.recent.get(key)
            if q is not None:
                self.recent.move_to_end(key)
        if q is None:
            q = self.queries(ask)
            with self.lock:
                self.recent[key] = q
                while len(self.recent) > RECENT_QUERIES:
                    self.recent.popitem(last=False)
        w = walk(s, q, ask.method, ask.lam, ask.alpha)
        r = w.ranking
        top = shown_rows(s, q, ask.method, r.indices, r.scores)[0]
        query_as, answer_as = seen_as(s, w.path[:1]), seen_as(s, w.path[-1:])
        own = set() if ask.row is None else split_tags(s.tag_cells[ask.row])
        shown = []
        for i, row in enumerate(top.rows.tolist()):
            d = self.describe(row)
            shown.append(
                Shown(
                    rank=i + 1,
                    row=row,
                    image=d["image"],
                    score=None if top.scores is None else round(float(top.scores[i]), 4),
                    hit=bool(top.hits[i]),
                    labels=d["labels"],
                    tags=d["tags"],
                    shared=sorted(own & set(d["tags"])),
                    jaccard=None if top.similarity is None else round(float(top.similarity[i]), 4),
                    is_query=row == ask.row,
                )
            )
        return Answer(
            method=ask.method,
            lam=ask.lam,
            alpha=ask.alpha,
            condition={a: s.labels[a][c] for a, c in ask.conditions.items()},
            results=shown,
            precision=float(np.mean(top.hits)),
            mean_jaccard=None if top.similarity is None else float(np.mean(top.similarity)),
            walk=np.round(self.projection.project(w.path), 4).tolist(),
            query_as=query_as,
            answer_as=answer_as,
            iterations=w.iterations,
            satisfied_at=w.satisfied_at,
            query={} if ask.row is None else self.describe(ask.row),
        )
