"""C1's embeddings on disk: fixed partitions of rows, each written whole as soon as it is done, a
manifest once every one exists, and the set read back memory-mapped.

    weights/<run>/embeddings/              the complete set (the manifest makes it one)
        manifest.json                      rows, E, columns, each partition's rows and SHA-256
        part-00000/z.npy                   float32 rows × E (a .npy: memory-mappable, no pickle)
        part-00000/image.npy, split.npy, label_<attr>.npy    the rows' metadata (.npy, no pickle)
        part-00000/part.json               who wrote it, when, what it holds
    weights/<run>/embeddings.partial/      a set being written: plan.json, the partitions so far

The rows (train.csv's, then test.csv's) are cut into partitions of `Plan.partition_rows` in row
order whatever the number of processes, so the joined set is the same bits however many ranks
wrote it. A partition appears in one rename; `finish` publishes the set (manifest, then one
swap of the folder) when every partition exists, under a lock, so of several ranks finding the
set complete one publishes it and the others see it published. A rerun computes only what is
missing. Runs written by earlier versions as one `embeddings.npz` still load (`open_partitions`).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import mmap
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src.artifacts import file_sha256, load_npy, load_npz, read_json, save_npy, write_json
from src.atomic import clean_stale_temps, new_dir, restore_swap, stage_lock, swap_dir, write_once
from src.errors import SuiteError
from src.hints import C1_HINT
from src.ranks import Rank

log = logging.getLogger(__name__)

FOLDER = "embeddings"  # the complete set
PARTIAL = "embeddings.partial"  # a set being written
LEGACY = "embeddings.npz"  # one file, as written before partitions
MANIFEST, PLAN, PART_INFO = "manifest.json", "plan.json", "part.json"
FORMAT = "partitions-1"
PART = re.compile(r"^part-(\d{5,})$")
FINISH_WAIT_S = 60.0  # how long a rank waits for another one publishing the set


def part_name(p: int) -> str:
    return f"part-{p:05d}"


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class Plan:
    """What one C1 run writes: `rows` rows cut into partitions of `partition_rows` in row order.

    `settings` is everything the values depend on (encoder and data digests, transform, seed,
    batch size): partitions written under other settings are never mixed in. `finish` is the
    command that completes the set (any number of ranks)."""

    rows: int
    partition_rows: int
    settings: dict[str, Any] = field(default_factory=dict)
    finish: str = C1_HINT

    @property
    def count(self) -> int:
        return max(1, -(-self.rows // self.partition_rows))

    def bounds(self, p: int) -> tuple[int, int]:
        """[start, stop) of partition p."""
        start = p * self.partition_rows
        return start, min(start + self.partition_rows, self.rows)

    def mine(self, rank: Rank) -> list[int]:
        """The partitions `rank` writes: every world-th from its rank (a fixed share, whatever
        is already done, so ranks never compete for one)."""
        return list(range(rank.rank, self.count, rank.world))

    def same(self, other: Mapping[str, Any]) -> bool:
        """Whether a recorded plan (plan.json, a manifest's) is this one (the command aside)."""
        mine = {k: v for k, v in asdict(self).items() if k != "finish"}
        return mine == {k: other.get(k) for k in mine}


def begin(run_dir: Path, plan: Plan) -> Path | None:
    """The partial folder to write `plan`'s partitions in (created with plan.json), or None when
    the complete set of this very plan is already published. A partial folder of another plan
    (a killed C1 with other settings, or another C1 writing now) is refused in one line."""
    if published(run_dir, plan):
        return None
    partial = run_dir / PARTIAL
    text = json.dumps(asdict(plan), indent=2, sort_keys=True) + "\n"
    recorded = json.loads(write_once(partial / PLAN, text))
    if not plan.same(recorded):
        theirs = recorded.get("finish", C1_HINT)
        raise SuiteError(
            f"{partial} holds the partitions of an unfinished C1 with other settings "
            f"({_difference(plan, recorded)}): finish it with `{theirs}`, or delete the folder "
            "to start over"
        )
    clean_stale_temps(partial)  # partitions a killed rank was writing
    return partial


def _difference(plan: Plan, recorded: Mapping[str, Any]) -> str:
    mine = {"rows": plan.rows, "partition_rows": plan.partition_rows, **plan.settings}
    theirs = {
        "rows": recorded.get("rows"),
        "partition_rows": recorded.get("partition_rows"),
        **(recorded.get("settings") or {}),
    }
    keys = [k for k in {**mine, **theirs} if mine.get(k) != theirs.get(k)]
    return ", ".join(f"{k} {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in keys[:3])


def done(partial: Path) -> set[int]:
    """The partitions present (each appeared whole, in one rename)."""
    with contextlib.suppress(FileNotFoundError):
        return {int(m[1]) for p in partial.iterdir() if (m := PART.match(p.name))}
    return set()


def missing(partial: Path, plan: Plan) -> list[int]:
    have = done(partial)
    return [p for p in range(plan.count) if p not in have]


def write_partition(
    partial: Path, plan: Plan, p: int, arrays: Mapping[str, np.ndarray], info: Mapping[str, Any]
) -> Path | None:
    """Write partition p (z: float32 rows × E, and its rows' metadata columns) in one rename;
    None when the partial folder is gone (the set was published meanwhile: nothing to add)."""
    if not (partial / PLAN).exists():
        return None
    start, stop = plan.bounds(p)
    z = arrays["z"]
    if z.dtype != np.float32 or z.ndim != 2 or any(len(a) != stop - start for a in arrays.values()):
        raise SuiteError(f"partition {p}: expected {stop - start} rows of every column, float32 z")
    with new_dir(partial / part_name(p)) as tmp:
        for name, a in arrays.items():
            save_npy(tmp / f"{name}.npy", np.ascontiguousarray(a))
        record = {
            "partition": p,
            "start": start,
            "stop": stop,
            "sha256": file_sha256(tmp / "z.npy"),
            "nonfinite": int((~np.isfinite(z).all(axis=1)).sum()),
            **info,
        }
        write_json(tmp / PART_INFO, record)
    return partial / part_name(p)


def published(run_dir: Path, plan: Plan) -> bool:
    """Whether the complete set of `plan` is in place (its manifest records the same plan)."""
    manifest = run_dir / FOLDER / MANIFEST
    with contextlib.suppress(OSError, ValueError):
        return plan.same(json.loads(manifest.read_text(encoding="utf-8"))["plan"])
    return False


def finish(
    run_dir: Path, plan: Plan, before_publish: Callable[[list[dict[str, Any]]], None]
) -> bool:
    """Publish the set when every partition of `plan` exists: `before_publish(part infos)` (C1
    writes metrics.json there), the manifest, one swap of the folder; an earlier version's
    embeddings.npz is removed after. Returns whether the set is published (by us or by a rank
    that got there first); False while partitions are missing."""
    partial = run_dir / PARTIAL
    deadline = time.monotonic() + FINISH_WAIT_S
    while True:
        if published(run_dir, plan) and not partial.exists():
            return True
        if missing(partial, plan):
            return False
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(stage_lock(run_dir / FOLDER))
            except SuiteError:  # another rank publishes right now: wait for it, then look again
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            restore_swap(run_dir / FOLDER)
            if not partial.exists():  # published while we waited for the lock
                return published(run_dir, plan)
            _publish(run_dir, plan, before_publish)
            return True


def _publish(run_dir: Path, plan: Plan, before_publish) -> None:
    partial = run_dir / PARTIAL
    infos = [read_json(partial / part_name(p) / PART_INFO, plan.finish) for p in range(plan.count)]
    z0 = load_npy(partial / part_name(0) / "z.npy", plan.finish, mmap=True)
    columns = sorted(f.stem for f in (partial / part_name(0)).glob("*.npy"))
    parts = [{"name": part_name(i["partition"]), "start": i["start"], "stop": i["stop"],
              "sha256": i["sha256"], "nonfinite": i["nonfinite"]} for i in infos]  # fmt: skip
    manifest = {
        "format": FORMAT,
        "rows": plan.rows,
        "dim": int(z0.shape[1]),
        "columns": columns,
        "plan": {k: v for k, v in asdict(plan).items() if k != "finish"},
        "partitions": parts,
        "fingerprint": _fingerprint(parts, int(z0.shape[1])),
    }
    del z0
    before_publish(infos)
    write_json(partial / MANIFEST, manifest)
    swap_dir(partial, run_dir / FOLDER)
    (run_dir / LEGACY).unlink(missing_ok=True)  # one source of truth: the partitions
    log.info("published %d partitions (%d rows) → %s", len(parts), plan.rows, run_dir / FOLDER)


def _fingerprint(parts: list[Mapping[str, Any]], dim: int) -> str:
    """A digest of what the set holds (each partition's rows and z's SHA-256): an index built
    from other embeddings is stale."""
    h = hashlib.sha256(f"{dim}\n".encode())
    for p in parts:
        h.update(f"{p['start']} {p['stop']} {p['sha256']}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class Part:
    """One partition: rows [start, stop) of the set, z's SHA-256."""

    name: str
    start: int
    stop: int
    sha256: str


class Partitions:
    """A run's embeddings: z (N × E float32) in partitions, each memory-mapped when read, and the
    rows' metadata columns (image, split, label_<attr>). Nothing is loaded whole unless asked
    (`arrays`); `tiles` and `take` read only the pages they touch."""

    def __init__(
        self,
        source: Path,
        parts: tuple[Part, ...],
        dim: int,
        columns: tuple[str, ...],
        hint: str,
        arrays: dict[str, np.ndarray] | None = None,
    ):
        self.source, self.parts, self.dim, self.columns = source, parts, dim, columns
        self.hint = hint
        self._arrays = arrays  # the legacy embeddings.npz, in memory
        self.starts = np.array([p.start for p in parts], dtype=np.int64)
        self.fingerprint = _fingerprint([asdict(p) for p in parts], dim)

    @property
    def rows(self) -> int:
        return self.parts[-1].stop

    def __len__(self) -> int:
        return self.rows

    def z(self, i: int) -> np.ndarray:
        """Partition i's z, memory-mapped read-only (the legacy file's: the array in memory)."""
        if self._arrays is not None:
            return self._arrays["z"]
        part = self.parts[i]
        path = self.source / part.name / "z.npy"
        z = load_npy(path, self.hint, mmap=True)
        if z.dtype != np.float32 or z.shape != (part.stop - part.start, self.dim):
            raise SuiteError(
                f"{path} holds {z.dtype} {z.shape}, the manifest says float32 "
                f"{(part.stop - part.start, self.dim)}; re-run {self.hint}"
            )
        return z

    def tiles(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, z) of each partition in row order, memory-mapped."""
        for i, part in enumerate(self.parts):
            yield part.start, self.z(i)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """z of `rows` (any order, repeats allowed) as float32 in memory: one gather per
        partition touched, reading only their pages."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.rows):
            raise SuiteError(f"rows outside 0 … {self.rows - 1} asked of {self.source}")
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        for i in np.unique(which):
            sel = which == i
            out[sel] = self.z(int(i))[rows[sel] - self.parts[i].start]
        return out

    def column(self, name: str) -> np.ndarray:
        """One column over all rows, in memory (z included: use tiles/take for big sets)."""
        if name not in self.columns:
            raise SuiteError(f"{self.source} has no column {name!r}; re-run {self.hint}")
        if self._arrays is not None:
            return self._arrays[name]
        if name == "z":
            return np.concatenate([np.asarray(z) for _, z in self.tiles()])
        return np.concatenate(
            [load_npy(self.source / p.name / f"{name}.npy", self.hint) for p in self.parts]
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Every column in memory: the arrays embeddings.npz held."""
        return {c: self.column(c) for c in self.columns}

    def verify(self) -> None:
        """Re-hash every partition's z.npy against the manifest (a damaged or replaced file)."""
        if self._arrays is not None:
            return
        for part in self.parts:
            path = self.source / part.name / "z.npy"
            if file_sha256(path) != part.sha256:
                raise SuiteError(
                    f"{path} is not the file C1 wrote (its SHA-256 differs); re-run {self.hint}"
                )


REQUIRED = ("image", "split", "z")


def open_partitions(run_dir: str | Path, hint: str = C1_HINT) -> Partitions:
    """The embeddings of a run: the partitions of weights/<run>/embeddings/, else an earlier
    version's embeddings.npz. An unfinished set is refused in one line naming the partitions
    missing and the command that finishes it; none at all: "run C1 first"."""
    run_dir = Path(run_dir)
    folder, partial = run_dir / FOLDER, run_dir / PARTIAL
    if (folder / MANIFEST).exists():
        store = _open_manifest(folder, hint)
    elif (run_dir / LEGACY).exists():
        store = _open_legacy(run_dir / LEGACY, hint)
    elif partial.exists():
        raise SuiteError(_unfinished(partial, hint))
    else:
        raise SuiteError(f"{folder} not found: run {hint} first")
    if partial.exists():
        log.warning("reading %s; %s (a newer C1, unfinished) is ignored", store.source, partial)
    return store


def _unfinished(partial: Path, hint: str) -> str:
    recorded = read_json(partial / PLAN, f"{hint} (delete {partial} first)")
    try:
        plan = Plan(int(recorded["rows"]), int(recorded["partition_rows"]), recorded["settings"],
                    str(recorded["finish"]))  # fmt: skip
    except (KeyError, TypeError, ValueError):
        raise SuiteError(
            f"{partial / PLAN} is damaged; delete {partial} and re-run {hint}"
        ) from None
    lost = missing(partial, plan)
    if not lost:
        return f"{partial} is complete but was not published (C1 killed while publishing): run `{plan.finish}`"
    names = ", ".join(part_name(p) for p in lost[:5]) + (", …" if len(lost) > 5 else "")
    return (
        f"{partial} is unfinished: {len(lost)} of {plan.count} partitions missing ({names}); "
        f"finish them with `{plan.finish}` (under torchrun or srun too, any number of ranks)"
    )


def _open_manifest(folder: Path, hint: str) -> Partitions:
    m = read_json(folder / MANIFEST, hint)
    try:
        parts = tuple(Part(p["name"], int(p["start"]), int(p["stop"]), str(p["sha256"]))
                      for p in m["partitions"])  # fmt: skip
        dim, columns = int(m["dim"]), tuple(m["columns"])
        bad = sum(int(p.get("nonfinite", 0)) for p in m["partitions"])
    except (KeyError, TypeError, ValueError):
        raise SuiteError(f"{folder / MANIFEST} is damaged; re-run {hint}") from None
    lacking = [c for c in REQUIRED if c not in columns]
    contiguous = all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))
    if lacking or not parts or parts[0].start != 0 or not contiguous:
        raise SuiteError(f"{folder / MANIFEST} is damaged (columns or partitions); re-run {hint}")
    if bad:
        raise SuiteError(
            f"{folder} holds NaN or infinite embeddings ({bad} rows): a diverged encoder? "
            f"re-train with B1_train_encoder.py, then re-run {hint}"
        )
    return Partitions(folder, parts, dim, columns, hint)


def _open_legacy(path: Path, hint: str) -> Partitions:
    return in_memory(load_npz(path, hint), path, hint)


def in_memory(
    arrays: Mapping[str, np.ndarray], source: Path = Path("<memory>"), hint: str = C1_HINT
) -> Partitions:
    """A set held in memory as one partition (an earlier version's embeddings.npz, a benchmark's
    or a test's arrays): read through the same interface as C1's partitions."""
    lacking = [k for k in REQUIRED if k not in arrays]
    if lacking:
        raise SuiteError(f"{source} lacks {lacking}; re-run {hint}")
    arrays = dict(arrays)
    z = arrays["z"] = np.asarray(arrays["z"], dtype=np.float32)
    if z.ndim != 2 or len(z) != len(arrays["image"]):
        raise SuiteError(f"{source} has a malformed z; re-run {hint}")
    bad = ~np.isfinite(z).all(axis=1)  # C1's partitions count these when written (the manifest)
    if bad.any():
        raise SuiteError(
            f"{source} holds NaN or infinite embeddings ({int(bad.sum())} rows, e.g. "
            f"{arrays['image'][bad][0]}): a diverged encoder? re-train with "
            f"B1_train_encoder.py, then re-run {hint}"
        )
    digest = hashlib.sha256(np.ascontiguousarray(z).tobytes()).hexdigest()
    part = Part(source.name, 0, len(z), digest)
    return Partitions(source, (part,), int(z.shape[1]), tuple(arrays), hint, arrays)


_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
_LIBC = ctypes.CDLL(None, use_errno=True) if _MADV_DONTNEED is not None else None


def release(a: np.ndarray) -> None:
    """Drop the pages of a memory-mapped array (a tile already copied) from this process's
    resident set: a pass over N rows then holds a tile, not N rows (the pages stay in the page
    cache; the next read maps them again). Arrays in memory are left alone."""
    if _LIBC is None or getattr(a, "_mmap", None) is None or a.nbytes == 0:
        return
    lo = a.ctypes.data - a.ctypes.data % _PAGE
    hi = (
        -(-(a.ctypes.data + a.nbytes) // _PAGE) * _PAGE
    )  # a page shared with a neighbour: refetched
    _LIBC.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_DONTNEED)


def write_set(
    run_dir: str | Path,
    columns: Callable[[int, int], Mapping[str, np.ndarray]],
    plan: Plan,
) -> Partitions:
    """Write (or finish) a whole set in this process from `columns(start, stop)`, the arrays of
    rows [start, stop) — z and at least image and split: how a set made elsewhere (a benchmark's
    synthetic rows, an importer) comes in through C1's own writer."""
    run_dir = Path(run_dir)
    partial = begin(run_dir, plan)
    if partial is not None:
        have = done(partial)
        for p in range(plan.count):
            if p not in have:
                write_partition(partial, plan, p, columns(*plan.bounds(p)), {})
        finish(run_dir, plan, lambda infos: None)
    return open_partitions(run_dir)
