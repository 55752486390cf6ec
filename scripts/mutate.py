"""make mutate: mutation testing (mutmut 3) of the modules where a silent mistake changes the
paper's numbers or loses data, one module at a time, each against the tests that exercise it.

Usage: python scripts/mutate.py [MODULE ...]   (no MODULE: all of them, in the order below)
       python scripts/mutate.py --list         (the modules and their tests)

Each module is mutated in a fresh copy of the working tree (`.mutate/<module>/`, git-ignored; the
repository itself is never touched). mutmut runs the selected tests once to learn which tests
call which function, then, per mutant, only the tests that call the mutated function, stopping
at the first failure. Survivors are compared with the accepted equivalent mutants
(docs/mutation-equivalents.txt); the table printed at the end is the one docs/mutation.md
reports. How to run it and read it: docs/mutation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGING = REPO / ".mutate"
EQUIVALENTS = REPO / "docs" / "mutation-equivalents.txt"
TARGET = 0.95  # the kill rate each module must reach (killed + accepted equivalents)
TIMEOUT_CONSTANT = 60  # seconds added to each mutant's estimated test time (see _stage)


@dataclass(frozen=True)
class Target:
    """One module to mutate and the tests that exercise it (the per-mutant selection): test
    files, narrowed by a pytest -k expression when only some of a file's tests reach it."""

    source: str
    tests: tuple[str, ...]
    keyword: str | None = None


# Tests that only run a stage in a subprocess select no mutant (the subprocess is not traced), and
# under load their fixed subprocess timeouts can fail the clean run that mutmut needs to pass
IN_PROCESS = "not command_line_exit_code and not do_not_import_the_web_stack"

# Modules nobody was rewriting come first; retrieval.py, evaluation/methods.py and
# explorer/session.py were being rewritten when this was written: re-run them after a merge.
MODULES: dict[str, Target] = {
    "backward_search": Target("src/method/backward_search.py", ("tests/test_backward_search.py",)),
    "student": Target("src/method/student.py", ("tests/test_student.py",)),
    "metrics": Target("src/method/metrics.py", ("tests/test_metrics.py",)),
    "encoder": Target("src/method/encoder.py", ("tests/test_encoder.py",)),
    "queries": Target("src/queries.py", ("tests/test_queries.py",)),
    "bootstrap": Target("src/evaluation/bootstrap.py", ("tests/test_bootstrap.py",)),
    "atomic": Target(
        "src/atomic.py",
        ("tests/test_atomic.py", "tests/test_artifacts.py", "tests/test_bad_input.py"),
        "atomic or lock or temporar or stale or killed or swap or full_disk",
    ),
    "artifacts": Target("src/artifacts.py", ("tests/test_artifacts.py", "tests/test_bad_input.py")),
    "retrieval": Target("src/method/retrieval.py", ("tests/test_retrieval.py",)),
    "methods": Target(
        "src/evaluation/methods.py",
        ("tests/test_evaluation.py", "tests/test_explorer.py"),
        IN_PROCESS,
    ),
    "session": Target("src/explorer/session.py", ("tests/test_explorer.py",), IN_PROCESS),
    "index": Target("src/method/index.py", ("tests/test_index.py",)),
    "index_sizing": Target("src/method/index_sizing.py", ("tests/test_index.py",)),
}

# mutmut statuses (mutmut.stats.status_by_exit_code) that count as a kill
KILLED = {"killed", "timeout", "segfault", "caught by type check"}


# ---------------------------------------------------------------------------------------------
# mutmut, adapted to a package named `src`


def patch_mutmut() -> None:
    """Teach mutmut that `src` is this project's package.

    mutmut 3 takes a top-level `src/` for a src-layout folder: it strips `src.` from the module
    names of its mutants and asserts that no trampoline reports a name starting with `src.`
    (boxed/mutmut#373). Here `src` IS the package (`import src.atomic`), so both are turned off:
    mutant keys keep `src.`, matching the module names Python reports. Applied in mutmut's own
    process and, through the staging copy's sitecustomize.py, in every Python a test starts.
    """
    import mutmut.mutation.trampoline as trampoline
    import mutmut.stats as stats
    import mutmut.utils.format_utils as fmt

    strip = fmt.strip_prefix

    def keep_src(s: str, *, prefix: str, strict: bool = False) -> str:
        return s if prefix == "src." else strip(s, prefix=prefix, strict=strict)

    class _Key(str):
        """A trampoline key that passes the src-layout guard (the only `startswith` it meets)."""

        def startswith(self, prefix, *args):  # type: ignore[override]
            return False if prefix == "src." else str.startswith(self, prefix, *args)

    record = stats.record_trampoline_hit

    def record_hit(name: str, caller: str | None = None) -> None:
        record(_Key(name), caller=caller)

    fmt.strip_prefix = keep_src
    trampoline.record_trampoline_hit = record_hit


SITECUSTOMIZE = """\
# written by scripts/mutate.py: mutmut's patch (patch_mutmut) in every Python a test starts
import os
if os.environ.get("MUTANT_UNDER_TEST"):
    import importlib.util, sys
    _spec = importlib.util.spec_from_file_location("_mutate", {script!r})
    _mod = sys.modules["_mutate"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
    _mod.patch_mutmut()
"""


# ---------------------------------------------------------------------------------------------
# One module


def _stage(name: str, target: Target, fresh: bool = True) -> Path:
    """A copy of the working tree (tracked and untracked, not ignored) with mutmut's config.

    fresh=False copies the files over the last copy and keeps mutmut's results (`mutants/`):
    mutmut then re-tests only the mutants of functions whose source changed (it hashes each one).
    """
    where = STAGING / name
    if fresh:
        shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True, exist_ok=True)
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    tops = set()
    for f in filter(None, files):
        rel = Path(os.fsdecode(f))
        if not (REPO / rel).is_file():  # deleted but still in the index
            continue
        (where / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, where / rel)
        tops.add(rel.parts[0])
    (where / "mutants").mkdir(exist_ok=True)  # on PYTHONPATH from the start (_env): must exist
    (where / "sitecustomize.py").write_text(
        SITECUSTOMIZE.format(script=str(Path(__file__).resolve())), encoding="utf-8"
    )
    also = sorted((tops | {"sitecustomize.py"}) - {"src", "tests", "setup.cfg", "pyproject.toml"})
    lines = [
        "[mutmut]",
        "source_paths=src",
        f"only_mutate={target.source}",
        "pytest_add_cli_args_test_selection=",
        *(f"    {t}" for t in target.tests),
        *(["    -k", f"    {target.keyword}"] if target.keyword else []),
        # a mutant's time limit is 15 × (its tests' time + this): the tests' time leaves out the
        # module fixtures they share (a pipeline trained once), which a mutant's run must build
        # again, on shared cores at nice 19 — without the constant a mutant whose one test
        # needs such a fixture ran out of time before its test began (a false "timeout", a kill)
        f"timeout_constant={TIMEOUT_CONSTANT}",
        "pytest_add_cli_args=",
        "    -p",
        "    no:cacheprovider",
        "also_copy=",
        *(f"    {a}" for a in also),
    ]
    (where / "setup.cfg").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return where


_MUTMUT = [sys.executable, str(Path(__file__).resolve()), "--mutmut"]


def _env(where: Path) -> dict[str, str]:
    """mutmut's environment: the staging copy's sitecustomize.py on the path of every Python."""
    return {**os.environ, "PYTHONPATH": str(where / "mutants")}


def _equivalents() -> dict[tuple[str, str, str], str]:
    """The accepted equivalent mutants: (source, original line, mutated line) → reason.

    docs/mutation-equivalents.txt, one a line: `source | original | mutated | reason` (the two
    code lines stripped, as the report prints them, a `|` in them written `\\|`); blank lines and
    # comments skipped.
    """
    out = {}
    for line in EQUIVALENTS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip().replace("\\|", "|") for p in line.split(" | ", 3)]
        if len(parts) != 4:
            raise SystemExit(f"{EQUIVALENTS}: not `source | original | mutated | reason`: {line}")
        source, before, after, reason = parts
        out[(source, before, after)] = reason
    return out


def _changes(where: Path, source: str, mutants: list[str]) -> dict[str, tuple[str, str]]:
    """The lines each mutant changes (original, mutated), each side's lines stripped and joined."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    out, here = {}, os.getcwd()
    os.chdir(where)  # mutmut reads its files relative to the staging copy
    try:
        for m in mutants:
            diff = get_diff_for_mutant(m, path=source).splitlines()[2:]  # past the --- / +++ lines
            before = " ".join(s[1:].strip() for s in diff if s.startswith("-"))
            after = " ".join(s[1:].strip() for s in diff if s.startswith("+"))
            out[m] = (before, after)
    finally:
        os.chdir(here)
    return out


@dataclass
class Figures:
    """One module's result."""

    name: str
    source: str
    mutants: int
    killed: int
    equivalent: list[tuple[str, str, str, str]]  # (mutant, original, mutated, reason)
    survivors: list[tuple[str, str, str, str]]  # (mutant, status, original, mutated)
    seconds: float

    @property
    def rate(self) -> float:
        """Killed or accepted as equivalent, over every mutant generated."""
        return (self.killed + len(self.equivalent)) / max(self.mutants, 1)


def _meta(where: Path, source: str) -> dict:
    """mutmut's record of a module: each mutant's exit code, each function's source hash."""
    return json.loads((where / "mutants" / f"{source}.meta").read_text(encoding="utf-8"))


def _function(mutant: str) -> str:
    """The (mangled) function a mutant belongs to, as mutmut's hashes name it."""
    from mutmut.utils.format_utils import mangled_name_from_mutant_name

    return mangled_name_from_mutant_name(mutant).rpartition(".")[2]


def _retest(where: Path, source: str, before: dict) -> list[str]:
    """The survivors of the run recorded in `before` that the run just made did not test again
    (their function is unchanged, so mutmut kept their result): to be re-run by name."""
    from mutmut.stats import status_by_exit_code

    now = _meta(where, source)
    old, new = before["hash_by_function_name"], now["hash_by_function_name"]
    return sorted(
        m
        for m, c in before["exit_code_by_key"].items()
        if c is not None
        and status_by_exit_code[c] not in KILLED
        and m in now["exit_code_by_key"]
        and old.get(_function(m)) == new.get(_function(m))
    )


def run_module(name: str, jobs: int, mode: str = "run") -> Figures:
    """Mutate one module and collect its figures. mode: "run" (in a fresh staging copy),
    "resume" (go on in the last copy, as it was: mutmut keeps each mutant's result as it comes),
    "again" (the working tree copied over the last run, finished or not: the mutants of changed
    functions, the untested ones and every survivor tested, the kills of unchanged functions
    kept — after adding tests),
    "report" (only read the last run's)."""
    target = MODULES[name]
    where = STAGING / name
    if mode != "report":
        last = None
        if mode == "again":
            if not (where / "mutants" / f"{target.source}.meta").exists():
                raise SystemExit(f"error: no run of {name} in {where}; run it first")
            last = _meta(where, target.source)  # an interrupted run's untested mutants: tested now
            if (where / "seconds").exists():
                (where / "seconds").rename(where / "seconds-so-far")
            _stage(name, target, fresh=False)
        elif mode == "run" or not (where / "mutants").is_dir():
            where = _stage(name, target)
        (where / "seconds").unlink(missing_ok=True)
        spent = where / "seconds-so-far"  # a resumed run's time adds to the interrupted one's
        before = float(spent.read_text(encoding="utf-8")) if spent.exists() else 0.0
        start = time.monotonic()
        print(f"== {name}: {target.source} against {' '.join(target.tests)}", flush=True)
        try:
            run = [*_MUTMUT, "run", "--max-children", str(jobs)]
            subprocess.run(run, cwd=where, env=_env(where), check=True)
            again = _retest(where, target.source, last) if last else []
            if again:  # named mutants are re-run whatever their last result
                subprocess.run([*run, *again], cwd=where, env=_env(where), check=True)
        finally:
            spent.write_text(f"{before + time.monotonic() - start:.0f}\n", encoding="utf-8")
        spent.rename(where / "seconds")
    if not (where / "seconds").exists():
        raise SystemExit(f"error: no finished run of {name} in {where}; run it first")
    seconds = float((where / "seconds").read_text(encoding="utf-8"))
    from mutmut.stats import status_by_exit_code

    codes = _meta(where, target.source)["exit_code_by_key"]
    known = _equivalents()
    alive = sorted(m for m, code in codes.items() if status_by_exit_code[code] not in KILLED)
    changes = _changes(where, target.source, alive)
    killed, equivalent, survivors = len(codes) - len(alive), [], []
    for mutant in alive:
        status = status_by_exit_code[codes[mutant]]
        before, after = changes[mutant]
        reason = known.get((target.source, before, after))
        if reason is not None:
            equivalent.append((mutant, before, after, reason))
        else:
            survivors.append((mutant, status, before, after))
    return Figures(name, target.source, len(codes), killed, equivalent, survivors, seconds)


def report(figs: list[Figures]) -> str:
    """The per-module table, then every survivor not accepted as equivalent."""
    rows = [
        "| module | mutants | killed | accepted equivalent | survived | kill rate | time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f in figs:
        rows.append(
            f"| `{f.source}` | {f.mutants} | {f.killed} | {len(f.equivalent)} | "
            f"{len(f.survivors)} | {100 * f.rate:.1f} % | {f.seconds / 60:.0f} min |"
        )
    for f in figs:
        for mutant, status, before, after in f.survivors:
            rows.append(f"{status}: {mutant}\n    - {before}\n    + {after}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--mutmut"]:  # inside a staging copy: mutmut itself
        patch_mutmut()
        import mutmut.__main__

        mutmut.__main__.cli(argv[1:], prog_name="mutmut")
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("modules", nargs="*", metavar="MODULE", help=", ".join(MODULES))
    p.add_argument("--list", action="store_true", help="the modules and their tests")
    p.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--report", action="store_true", help="only report the last run (after editing equivalents)"
    )
    how.add_argument(
        "--resume", action="store_true", help="go on with an interrupted run in its staging copy"
    )
    how.add_argument(
        "--again",
        action="store_true",
        help="after adding tests: re-test the survivors and changed functions of the last run",
    )
    args = p.parse_args(argv)
    if args.list:
        for name, t in MODULES.items():
            print(
                f"{name:16} {t.source:32} {' '.join(t.tests)}",
                f"-k {t.keyword!r}" * bool(t.keyword),
            )
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        print(f"error: no module {unknown[0]!r}; choose from {', '.join(MODULES)}", file=sys.stderr)
        return 2
    mode = (
        "report" if args.report else "resume" if args.resume else "again" if args.again else "run"
    )
    figs = [run_module(m, args.jobs, mode) for m in args.modules or MODULES]
    print(report(figs))
    return 0 if all(f.rate >= TARGET for f in figs) else 1


if __name__ == "__main__":
    sys.exit(main())
