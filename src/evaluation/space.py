"""A task's search space, loaded once for E1, E2 and the explorer so their answers cannot drift:
the database a query is searched in (its embeddings, labels and tags), the trained encoder and
heads, the train-split class centroids and the distilled students.

The database is the test split's tagged images — the paper's protocol (SPEC §7), which E1's tables
always use — or, with `database="all"`, the train and test images together: the whole collection,
for searching your own images. `Queries` are what the methods (src/evaluation/methods.py) rank
against it: the rows of a query file, or an outside picture. Every mismatch between the A1, A2,
B1 and C1 artifacts fails here, naming the stage to re-run.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from src.artifacts import dataset_dir, read_json, require, run_dir
from src.datasets.common import read_labels, read_split
from src.errors import SuiteError
from src.hints import hint
from src.labels import class_ids
from src.method import metrics
from src.method.encoder import Encoder, load_encoder
from src.method.index import Database, Searcher, index_folder, open_or_build
from src.method.student import Student, load_student, student_path
from src.paper import TOP_K
from src.partitions import Partitions, open_partitions, release
from src.quirks import applicable
from src.tags import tag_matrix
from src.tasks import Task, default_run
from src.transforms import image_transform

DATABASES = ("test", "all")  # test: the paper's protocol (E1's tables); all: train + test
DATABASE_TEXT = {
    "test": "the test split (the paper's protocol)",
    "all": "train + test (the whole collection)",
}
log = logging.getLogger(__name__)
MAX_SIDE = 512  # JPEGs are decoded at no less than 4× this side (the transforms resize to ~224)


def stage_hint(stage: str, task: Task, run: str) -> str:
    """How to re-run a per-run stage: by dataset for the default run, else by run name."""
    if run == default_run(task.dataset):
        return hint(stage, "--dataset", task.dataset)
    return hint(stage, "--run", run)


class KeyIndex:
    """Image key → row over millions of keys (a numpy array of str), without a Python object or
    hash entry per key: binary search over the keys in sorted order (an argsort, made on the
    first lookup, only when C1's row order is not already sorted)."""

    def __init__(self, keys: np.ndarray):
        self.keys = np.asarray(keys).astype(str, copy=False)

    @cached_property
    def order(self) -> np.ndarray | None:
        k = self.keys
        return None if bool((k[1:] >= k[:-1]).all()) else np.argsort(k, kind="stable")

    def get_indexer(self, wanted: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
        """The row of each wanted key (the first, were one repeated), -1 where none."""
        w = np.asarray(list(wanted), dtype=str)
        if not len(self.keys) or not len(w):
            return np.full(len(w), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.keys, w, sorter=self.order), len(self.keys) - 1)
        rows = at if self.order is None else self.order[at]
        return np.where(self.keys[rows] == w, rows, -1).astype(np.int64)


@dataclass
class SearchSpace:
    """The database of a task (N tagged images) on one device, and what searches it."""

    task: Task
    run: str
    weights: Path  # weights/<run>
    data_root: Path
    config: dict[str, Any]  # the encoder's (encoder.pt)
    labels: dict[str, list[str]]  # labels.json
    encoder: Encoder  # eval mode; an imported run's has no backbone
    device: torch.device
    database: str  # "test" or "all"
    images: np.ndarray  # (N,) image keys, in C1's row order
    split: np.ndarray  # (N,) "train" or "test"
    db: Database  # the N database rows of C1's partitions, memory-mapped, read in tiles
    searcher: Searcher  # how the database is searched: exact (default) or --index
    label_ids: dict[str, Tensor]  # attr → (N,) class ids, every label attribute C1 stored
    tag_cells: pd.Series  # (N,) '|'-joined tags (Arrow strings: no Python object per row)
    tags: sp.csr_matrix  # N×T binary
    vocab: pd.Index  # the T tags
    embedded: KeyIndex  # every image C1 embedded (train and test), for queries' z0
    store: Partitions  # their embeddings (`store.take(rows)`), memory-mapped
    embedded_labels: dict[str, np.ndarray]  # attr → their class ids
    # attr → C×E train-class means (the centroid shift's μ); {} without train embeddings
    centroids: dict[str, Tensor]
    source: str | None = None  # data/<ds>/config.json "source" (artifacts.is_release: imported)
    image_root: Path | None = None  # E2 --images: the pictures outside data/<dataset>
    students: dict[float, Student | None] = field(default_factory=dict, repr=False)
    counters: dict[tuple[str, ...], metrics.RelevantCounter] = field(
        default_factory=dict, repr=False
    )

    @property
    def heads(self) -> Mapping[str, nn.Module]:
        return self.encoder.heads

    def __len__(self) -> int:
        return len(self.images)

    @property
    def dim(self) -> int:
        """E, the embeddings' size."""
        return self.db.dim

    def vectors(self, rows: np.ndarray | Tensor) -> Tensor:
        """The embeddings of database rows (any order) on the device: only those rows read."""
        rows = rows.cpu().numpy() if isinstance(rows, Tensor) else np.asarray(rows)
        return torch.from_numpy(self.db.take(rows.ravel())).reshape(*rows.shape, -1).to(self.device)

    def describe(self) -> str:
        """The database in words, for logs and figure titles: which splits, how many images, and
        the index when it is not our exact search (with its measured recall@10)."""
        where = f"{DATABASE_TEXT[self.database]}, {len(self):,} images"
        info = self.searcher.info
        return where if info.kind == "exact" else f"{where}; {info.describe()}"

    @cached_property
    def row_index(self) -> KeyIndex:
        """Image key → database row."""
        return KeyIndex(self.images)

    def rows_of(self, keys: Sequence[str]) -> np.ndarray:
        """The database rows of image keys (-1 where an image is not in the database)."""
        return self.row_index.get_indexer(list(keys))

    @cached_property
    def table(self) -> pd.DataFrame:
        """The database as a table for people: image, class name per label attribute, tags, split."""
        return self.table_rows(np.arange(len(self)))

    def table_rows(self, rows: np.ndarray) -> pd.DataFrame:
        """`table`'s rows `rows` (indexed 0 …), only those made: a search's few of millions."""
        rows = np.asarray(rows, dtype=np.int64)
        out = pd.DataFrame({"image": self.images[rows]})
        for a, ids in self.label_ids.items():
            out[a] = np.asarray(self.labels[a], dtype=object)[ids.cpu().numpy()[rows]]
        out["tags"] = self.tag_cells.iloc[rows].to_numpy()
        out["split"] = self.split[rows]
        return out

    def image_path(self, key: str) -> Path:
        """Where the picture of image key `key` (`images/<class>/<file>`, as in test.csv) lies:
        under data/<dataset>, or under --images DIR without the leading `images/`."""
        if self.image_root is None:
            return self.data_root / self.task.dataset / key
        return self.image_root / key.removeprefix("images/")

    def missing_images(self, keys: Sequence[str]) -> list[Path]:
        """The pictures of `keys` that are not on disk (an imported release carries none)."""
        return [p for p in map(self.image_path, keys) if not p.is_file()]

    def relevant_counter(self, attrs: tuple[str, ...]) -> metrics.RelevantCounter:
        """metrics.count_relevant over this database for conditions on `attrs`, its per-class
        counts made once (a query over millions of rows then costs no pass over them)."""
        if attrs not in self.counters:
            self.counters[attrs] = metrics.RelevantCounter(self.label_ids, list(attrs))
        return self.counters[attrs]

    def student_file(self, lam: float) -> Path:
        """weights/<run>/student_<task>_lam<λ>.pt: where D1 writes the task's student at λ."""
        return student_path(self.weights, self.task.name, lam)

    def student(self, lam: float) -> Student | None:
        """D1's student of the task at λ on the device (loaded once), or None when not trained."""
        if lam not in self.students:
            path = self.student_file(lam)
            self.students[lam] = self._checked_student(path, lam) if path.exists() else None
        return self.students[lam]

    def _checked_student(self, path: Path, lam: float) -> Student:
        """The student in `path`, refused in one line when it was distilled for another task,
        label set or embedding size (a file copied or renamed by hand)."""
        student, cfg = load_student(path, self.device)
        d1 = f"{hint('D1', '--task', self.task.name, '--run', self.run)} --lambda {lam:g}"
        have, want = sorted(student.num_classes), sorted(self.task.conditions)
        if have != want:
            raise SuiteError(
                f"{path} is a student for {'+'.join(have)} (task {cfg.get('task', '?')}), but "
                f"{self.task.name} conditions on {'+'.join(want)}; re-run {d1}"
            )
        for a, n in student.num_classes.items():
            if n != len(self.labels[a]):
                raise SuiteError(
                    f"{path} was distilled for {n} {a} classes, labels.json lists "
                    f"{len(self.labels[a])}; re-run {d1}"
                )
        if student.embedding_size != self.dim:
            raise SuiteError(
                f"{path} was distilled on {student.embedding_size}-d embeddings, run {self.run}'s "
                f"are {self.dim}-d; re-run {d1}"
            )
        trained_at = cfg.get("lambda")  # the file's name is λ to 6 digits (student_path)
        if isinstance(trained_at, int | float) and f"{trained_at:g}" != f"{lam:g}":
            raise SuiteError(
                f"{path} was distilled at λ = {trained_at:g} (its config), not at the λ = {lam:g} "
                f"its name says (a file renamed by hand?); re-run {d1}"
            )
        recorded = cfg.get("embeddings_fingerprint")  # none in students older than the record
        if recorded is not None and recorded != self.store.fingerprint:
            log.warning(
                "warning: %s was distilled from other embeddings than %s holds now (C1 re-ran "
                "after D1), so its results are a stale student's; re-run %s",
                path,
                self.store.source,
                d1,
            )
        return student


def _check_heads(task: Task, run: str, space_cfg, heads, labels, emb, c1: str) -> None:
    """Every condition attribute needs a head of the right size and C1's labels."""
    for a in task.conditions:
        if a not in heads:
            raise SuiteError(
                f"task {task.name} conditions on {a!r} but the encoder of run {run} has no head "
                f"for it (heads: {', '.join(heads)}); train it with B1_train_encoder.py"
            )
        n_cls = int(space_cfg["num_classes"][a])
        if n_cls != len(labels.get(a, ())):
            raise SuiteError(
                f"the {a} head of run {run} has {n_cls} classes but labels.json lists "
                f"{len(labels.get(a, ()))}; the encoder was trained on other data: re-run B1, C1"
            )
        if f"label_{a}" not in emb:
            raise SuiteError(f"the embeddings of run {run} have no label_{a}; re-run {c1}")


def class_centroids(
    store: Partitions, rows: np.ndarray, labels: Mapping[str, np.ndarray], sizes: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """Per attribute, the C×E mean embedding of each class over `rows` of the store (the centroid
    shift's μ, of the train split), read partition by partition; a class without rows gets the
    mean of all rows, so that shifting to or from it moves nothing class-specific."""
    sums = {a: np.zeros((n, store.dim), dtype=np.float64) for a, n in sizes.items()}
    for start, z in store.tiles():
        mine = rows[(rows >= start) & (rows < start + len(z))]
        if len(mine):
            chunk = z[mine - start]  # only these rows' pages are read
            for a in sizes:
                np.add.at(sums[a], labels[a][mine], chunk)  # row order: the bits of one pass
        release(z)
    out = {}
    for a, n in sizes.items():
        counts = np.bincount(labels[a][rows], minlength=n)[:, None]
        overall = sums[a].sum(0, keepdims=True) / max(len(rows), 1)
        out[a] = np.where(counts > 0, sums[a] / np.maximum(counts, 1), overall).astype(np.float32)
    return out


def _strings(column: pd.Series) -> pa.ChunkedArray:
    """A table's column as Arrow strings (pandas' own Arrow buffers: no copy per cell)."""
    return pa.chunked_array([pa.array(column, type=pa.large_string())])


def _positions(keys: np.ndarray, images: pa.ChunkedArray) -> np.ndarray:
    """Where each key lies among `images` (-1: not there), hashed in Arrow, not in Python; the
    common case — C1's rows are the tables' rows in order — found by one comparison."""
    step = 1 << 20  # keys compared a million at a time: no second copy of millions of keys
    if len(keys) == len(images) and all(
        pc.all(pc.equal(pa.array(keys[a : a + step], type=pa.large_string()),
                        images.slice(a, step))).as_py() is not False
        for a in range(0, len(keys), step)
    ):  # fmt: skip
        return np.arange(len(keys), dtype=np.int64)
    k = pa.array(keys, type=pa.large_string())
    found = pc.index_in(k, value_set=images.combine_chunks())
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def database_rows(
    emb: Mapping[str, np.ndarray], tables: Mapping[str, pd.DataFrame], c1: str, source: Path
) -> tuple[np.ndarray, pa.Array]:
    """Rows of the embeddings (`source`: C1's partitions or embeddings.npz, their metadata columns
    `emb`) that form the database — images of the splits of `tables` with tags (SPEC §7) — in
    C1's row order (increasing), and their tag cells. Every tagged image of those splits must have
    its embedding: one C1 has not embedded (the data grew after C1) could never be found, so it is
    refused naming the split and the stage to re-run."""
    keys = emb["image"].astype(str, copy=False)
    images = pa.chunked_array([c for t in tables.values() for c in _strings(t["image"]).chunks])
    rows = np.flatnonzero(np.isin(emb["split"], list(tables)))
    pos = _positions(_pick(keys, rows), images)
    if (pos < 0).any():
        raise SuiteError(
            f"{source} holds {'/'.join(tables)} images missing from "
            f"{', '.join(f'{s}.csv' for s in tables)} (e.g. {keys[rows][pos < 0][0]}); the data "
            f"changed after C1: re-run {c1}"
        )
    embedded = np.zeros(len(images), dtype=bool)
    embedded[pos] = True
    start = 0
    for split, table in tables.items():  # the database's images C1 did not embed, per split
        tagged = np.asarray(pc.not_equal(_strings(table["tags"]), ""))
        lost = tagged & ~embedded[start : start + len(table)]
        start += len(table)
        if lost.any() and not (emb["split"] == split).any():  # e.g. trimmed, or a release's
            raise SuiteError(
                f"{source} holds no {split} embeddings, so the {int(lost.sum())} tagged images of "
                f"{split}.csv cannot be searched: re-run {c1}, or search the test split alone "
                "(--database test)"
            )
        if lost.any():
            raise SuiteError(
                f"{int(lost.sum())} of the {int(tagged.sum())} tagged images of {split}.csv have "
                f"no embedding in {source} (e.g. {table['image'].iloc[int(np.argmax(lost))]}): the "
                f"data grew after C1, and a search could never find them; re-run {c1}"
            )
    tags = pa.chunked_array([c for t in tables.values() for c in _strings(t["tags"]).chunks])
    same = len(pos) == len(tags) and bool((pos == np.arange(len(pos))).all())
    cells = tags if same else tags.take(pos)  # no copy of millions of cells when in order
    tagged = np.asarray(pc.not_equal(cells, ""))
    cells = cells if tagged.all() else cells.filter(tagged)
    return rows[tagged], cells.chunk(0) if cells.num_chunks == 1 else cells.combine_chunks()


def check_database_size(n: int, database: str, exclude_query: bool = False) -> None:
    """Retrieval fills a top-10 (one more with the query left out): a smaller database is refused
    in one line that says how to grow it."""
    need = TOP_K + int(exclude_query)
    if n < need:
        where = "test split" if database == "test" else "collection"
        raise SuiteError(
            f"the database ({DATABASE_TEXT[database]}) has {n} tagged images, and retrieval ranks "
            f"the top {TOP_K}{' besides the query' if exclude_query else ''}, so it needs at "
            f"least {need}: give the {where} more tagged images (for your own images: more "
            "pictures, or labels.csv's split column) and re-run A1, then C1"
        )


def _pick(column: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A column's database rows: a view when they are one run of rows (the test split with every
    image tagged), so millions of image keys are held once, not twice."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return column[rows[0] : rows[-1] + 1]
    return column[rows]


def load_space(
    data_root: str | Path,
    weights_root: str | Path,
    task: Task,
    run: str,
    device: torch.device,
    *,
    database: str = "test",
    images: Path | None = None,
    index: str = "exact",
) -> SearchSpace:
    """Read labels, embeddings, the encoder and the database of `task`; check they fit together.

    The embeddings stay on disk, memory-mapped (src/partitions.py): the rows' metadata is read,
    z only in tiles (the search, the centroids) or by row (queries, shown results), so memory
    does not grow with N by E floats. `index`: how the database is searched (method/index.py;
    ivf and ivf-pq built on first use into weights/<run>/index-<kind>-<database>)."""
    if database not in DATABASES:
        raise SuiteError(f"--database {database!r}: choose {' or '.join(DATABASES)}")
    labels = read_labels(data_root, task.dataset)
    rdir = run_dir(weights_root, run)
    c1 = stage_hint("C1", task, run)
    store = open_partitions(rdir, c1)  # partitions or embeddings.npz; refuses NaN or infinite rows
    emb = {c: store.column(c) for c in store.columns if c != "z"}  # the rows' metadata only
    require(rdir / "encoder.pt", stage_hint("B1", task, run))
    encoder, config = load_encoder(rdir, device)
    _check_heads(task, run, config, encoder.heads, labels, emb, c1)
    if store.dim != int(config["embedding_size"]):
        raise SuiteError(  # e.g. embeddings copied from another run
            f"{store.source} holds {store.dim}-d embeddings, but the encoder of run {run} makes "
            f"{config['embedding_size']}-d ones; re-run {c1}"
        )
    label_attrs = [a for a in labels if f"label_{a}" in emb]

    splits = ("test",) if database == "test" else ("train", "test")
    tables = {s: read_split(data_root, task.dataset, s, ["image", "tags"]) for s in splits}
    rows, cells = database_rows(emb, tables, c1, store.source)
    del tables  # the image keys read from the CSV (C1's are kept)
    check_database_size(len(rows), database)
    tags, vocab = tag_matrix(cells)
    train = np.flatnonzero(emb["split"] == "train")
    cfg_path = dataset_dir(data_root, task.dataset) / "config.json"
    data_cfg = (
        read_json(cfg_path, hint("A1", "--dataset", task.dataset)) if cfg_path.is_file() else {}
    )
    all_rows = None if len(rows) == len(store) else rows
    searcher = open_or_build(index, store, all_rows, index_folder(rdir, index, database))
    label_of = {a: emb[f"label_{a}"] for a in label_attrs}
    sizes = {a: len(labels[a]) for a in task.conditions}
    # none without train embeddings (the centroid shift then refuses)
    centroids = class_centroids(store, train, label_of, sizes) if len(train) else {}

    def dev(x: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)  # shares memory on a CPU

    return SearchSpace(
        task=task,
        run=run,
        weights=rdir,
        data_root=Path(data_root),
        config=config,
        labels=labels,
        encoder=encoder,
        device=device,
        database=database,
        images=_pick(emb["image"].astype(str, copy=False), rows),
        split=_pick(emb["split"].astype(str, copy=False), rows),
        db=searcher.db,
        searcher=searcher,
        label_ids={a: dev(_pick(label_of[a], rows)) for a in label_attrs},
        tag_cells=pd.Series(cells, dtype="str"),
        tags=tags,
        vocab=vocab,
        embedded=KeyIndex(emb["image"]),
        store=store,
        embedded_labels=label_of,
        centroids={a: dev(c) for a, c in centroids.items()},
        source=data_cfg.get("source") if isinstance(data_cfg, dict) else None,
        image_root=None if images is None else Path(images),
    )


# ---------------------------------------------------------------------------------------------
# Queries


@dataclass
class Queries:
    """Q query vectors with their conditions: what every method ranks (src/evaluation/methods.py)."""

    z0: Tensor  # Q×E, on the space's device
    conditions: dict[str, Tensor]  # attr → (Q,) target class ids
    own: dict[str, Tensor]  # attr → (Q,) the query image's own class ids ({} for a picture)
    tags: sp.csr_matrix | None  # Q×T' tag sets in the space's vocabulary (None: no tags)
    exclude: Tensor | None  # (Q,) database row of each query image, -1 none (--exclude-query)
    n_relevant: Tensor  # (Q,) database rows carrying every condition label (true mAP's normaliser)
    frame: pd.DataFrame | None = None  # the query file's rows (query_id, image, conditions, tags)
    quirks: tuple[str, ...] = ()  # the authors' E1 quirks applied to these queries' tags

    def __len__(self) -> int:
        return self.z0.shape[0]

    def unreachable(self, labels: Mapping[str, list[str]]) -> tuple[int, list[str]]:
        """How many queries ask for a condition no database image carries (besides the query
        itself when it is left out) — every method scores 0 on them — and those conditions
        (`attr=class`, joined by + for several attributes), each once."""
        none = (self.n_relevant == 0).cpu().numpy()
        ids = {a: c.cpu().numpy()[none] for a, c in self.conditions.items()}
        named = [
            "+".join(f"{a}={labels[a][int(c)]}" for a, c in zip(ids, row, strict=True))
            for row in zip(*ids.values(), strict=True)
        ]
        return int(none.sum()), sorted(set(named))

    def select(self, index: Sequence[int]) -> Queries:
        """The queries at `index` (repeats allowed), e.g. one query once per λ of Fig 5."""
        i = torch.as_tensor(list(index), dtype=torch.long)
        on = i.to(self.z0.device)
        return Queries(
            self.z0[on],
            {a: c[on] for a, c in self.conditions.items()},
            {a: c[on] for a, c in self.own.items()},
            None if self.tags is None else self.tags[i.numpy()],
            None if self.exclude is None else self.exclude[on],
            self.n_relevant[on],
            None if self.frame is None else self.frame.iloc[i.numpy()].reset_index(drop=True),
            self.quirks,
        )


def unreachable_warning(space: SearchSpace, q: Queries) -> str | None:
    """One warning line when some queries ask for a condition no database image carries (every
    method scores 0 on them, which would read as a failure of the methods), else None."""
    n, names = q.unreachable(space.labels)
    if not n:
        return None
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    which = "the query asks" if len(q) == 1 else f"{n} of {len(q)} queries ask"
    return (
        f"warning: {which} for a condition no image of the database ({space.describe()}) "
        f"carries: {', '.join(names[:5])}{more}; every method scores 0 on "
        f"{'it' if len(q) == 1 else 'them'}. Give these classes tagged test images (A1, then C1 "
        "and A2)"
        + (", or search the whole collection (--database all)" if space.database == "test" else "")
    )


def _queries(space: SearchSpace, z0: np.ndarray | Tensor, conditions, own, tags, exclude, **kw):
    dev = space.device
    conditions = {a: torch.as_tensor(c, dtype=torch.long).to(dev) for a, c in conditions.items()}
    exclude = None if exclude is None else torch.as_tensor(exclude, dtype=torch.long).to(dev)
    return Queries(
        z0=torch.as_tensor(z0, dtype=torch.float32).to(dev).reshape(-1, space.dim),
        conditions=conditions,
        own={a: torch.as_tensor(c).to(dev) for a, c in own.items()},
        tags=tags,
        exclude=exclude,
        n_relevant=space.relevant_counter(tuple(conditions))(conditions, exclude),
        **kw,
    )


def file_queries(
    space: SearchSpace,
    frame: pd.DataFrame,
    *,
    exclude_query: bool = False,
    quirks: Sequence[str] = (),
) -> Queries:
    """Queries from rows of a query file (A2's `queries_<task>.csv`: query_id, image, one column
    per condition attribute, tags); their z0 are C1's embeddings of the query images.

    quirks: the authors' E1 quirks (those that change nothing on the dataset are dropped).
    """
    task = space.task
    quirks = applicable(quirks, task.dataset)
    missing = [a for a in task.conditions if a not in frame.columns]
    if missing:
        raise SuiteError(f"the queries of {task.name} lack the {missing[0]!r} column; re-run A2")
    rows = space.embedded.get_indexer(frame["image"].astype(str))
    if (rows < 0).any():
        raise SuiteError(
            f"{int((rows < 0).sum())} query images not in the embeddings (e.g. "
            f"{frame['image'].to_numpy()[rows < 0][0]}); the queries are newer than the "
            f"embeddings: re-run {stage_hint('C1', task, space.run)}"
        )
    where = f"queries_{task.name}.csv"
    conditions = {
        a: class_ids(
            frame[a].astype(str),
            a,
            space.labels[a],
            where,
            f"valid names: {', '.join(space.labels[a])}",
        )
        for a in task.conditions
    }
    own = {a: ids[rows] for a, ids in space.embedded_labels.items()}
    q_tags: Any = frame["tags"].fillna("").astype(str).tolist()
    if "empty-tag-token" in quirks:  # their E1: a query without attributes gets an empty tag
        names = [[space.labels[a][i] for i in ids] for a, ids in own.items()]
        q_tags = metrics.authors_query_tags(q_tags, [list(c) for c in zip(*names, strict=True)])
    tags, _ = tag_matrix(q_tags, space.vocab)
    exclude = space.rows_of(frame["image"].astype(str)) if exclude_query else None
    return _queries(
        space,
        space.store.take(rows),
        conditions,
        own,
        tags,
        exclude,
        frame=frame.reset_index(drop=True),
        quirks=quirks,
    )


def picture_query(space: SearchSpace, z0: Tensor, conditions: Mapping[str, int]) -> Queries:
    """One query from an outside picture's embedding (`embed_image`): no labels, no tags."""
    return _queries(space, z0, {a: [c] for a, c in conditions.items()}, {}, None, None)


# Modes a box-filter reduction averages meaningfully (not palette indices, 1-bit or 16-bit ints)
REDUCIBLE = ("RGB", "RGBX", "RGBA", "L", "LA", "I", "F", "CMYK", "YCbCr")


def _reduced(im: Image.Image) -> Image.Image:
    """A huge decoded picture shrunk by a whole factor, its short side kept ≥ 4 × MAX_SIDE (what
    a JPEG's draft does while decoding), before its mode is converted: that conversion copies
    it, so a 9400² PNG peaks at 0.35 GB instead of 0.7 GB."""
    k = min(im.size) // (4 * MAX_SIDE)
    return im.reduce(k) if k >= 2 and im.mode in REDUCIBLE else im


def embed_image(
    space: SearchSpace,
    path: Path | BinaryIO,
    *,
    name: str | None = None,
    formats: Sequence[str] | None = None,
) -> Tensor:
    """Embed a picture (a file, or an open binary stream such as an upload named `name`) with
    the trained encoder and the test transform (1×E); `formats` limits what Pillow may decode."""
    if not space.encoder.has_backbone:  # checked before the picture is read
        raise SuiteError(
            f"run {space.run} was imported from the authors' release without its backbone, so it "
            "cannot embed a new picture: use a run trained by B1_train_encoder.py"
        )
    name = name or str(path)
    if isinstance(path, Path) and path.exists() and not path.is_file():
        # reading a pipe or a device would never end
        raise SuiteError(f"--image {path} is not a regular file (a folder, pipe or device)")
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=formats) as f:
                f.draft("RGB", (4 * MAX_SIDE,) * 2)  # a huge JPEG: decode at a reduced scale
                im = _reduced(f).convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SuiteError(
            f"{name} is too large to decode (> {Image.MAX_IMAGE_PIXELS} pixels): resize it"
        ) from None
    except (FileNotFoundError, UnidentifiedImageError, OSError, ValueError) as e:
        kinds = f" (it must be {', '.join(formats)})" if formats else ""
        raise SuiteError(f"cannot read image {name}{kinds}: {e}") from None
    x = image_transform(space.config, train=False)(im).unsqueeze(0).to(space.device)
    with torch.no_grad():
        return space.encoder.embed(x)
