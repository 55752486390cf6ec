"""Class names → class ids (the index in labels.json): the one lookup every stage uses."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from src.errors import SuiteError

# Characters no name may hold: controls (newline, tab, NUL…), invisible format characters (bidi
# overrides, zero-width spaces) and line/paragraph separators; they would split one-line messages
# and CSV rows, or make two names look alike.
UNPRINTABLE = ("Cc", "Cf", "Zl", "Zp")


def unprintable(text: str) -> str | None:
    """The first character of `text` no name may hold, as U+XXXX, or None."""
    for ch in text:
        if unicodedata.category(ch) in UNPRINTABLE:
            return f"U+{ord(ch):04X}"
    return None


def nfc_names(names: Iterable[str], what: str) -> dict[str, str]:
    """Each name → its NFC form (how A1 stores class names, so 'café' typed either way is one
    class); fails when two different names become one."""
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name in names:
        norm = unicodedata.normalize("NFC", name)
        if seen.setdefault(norm, name) != name:
            raise SuiteError(
                f"{what}: {seen[norm]!r} and {name!r} are the same name in different Unicode "
                "forms (NFC and NFD); write them the same way"
            )
        out[name] = norm
    return out


def _loose(name: str) -> str:
    """A typed class name without case, accents, spaces, '_' or '-' ('Art Nouveau' ~
    'art_nouveau', 'cafe' ~ 'café' in either Unicode form)."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", name.lower()) if ch.isalnum())


NUMBERED = re.compile(r"^(?P<num>\d+)[._ -](?P<rest>.+)$")  # CUB's "008.Digit_seven"


def _aliases(name: str) -> list[str]:
    """What a person may type for a class, most specific first: the name (case, spaces, '_' and
    '-' ignored), without CUB's numeric prefix ('Digit_seven'), the number alone ('008', '8'),
    and each trailing run of its words ('seven')."""
    m = NUMBERED.match(name)
    rest = m["rest"] if m else name
    out = [_loose(name), _loose(rest)]
    if m:
        out += [m["num"], str(int(m["num"]))]
    words = [w for w in re.split(r"[_\s-]+", rest) if w]
    out += [_loose("".join(words[k:])) for k in range(1, len(words))]
    return out


def _loose_index(vocab: Sequence[str]) -> dict[str, int]:
    """Typed alias → class id; an alias two classes share maps to -1 (ambiguous, refused)."""
    index: dict[str, int] = {}
    for i, name in enumerate(vocab):
        for alias in dict.fromkeys(_aliases(name)):
            if alias:
                index[alias] = -1 if index.get(alias, i) != i else i
    return index


def class_ids(
    names: pd.Series | Sequence[str],
    attr: str,
    vocab: Sequence[str],
    where: str,
    fix: str = "re-run A1",
    loose: bool = False,
) -> np.ndarray:
    """Class names → int64 ids in `vocab`; an unknown name fails naming `where` and the `fix`.

    `loose` also accepts, for names a person typed (E2's --condition), a name that matches one
    class once case, spaces, '_' and '-' are ignored, or without CUB's numeric prefix, or the
    number alone, or its last words, when only one class matches.
    """
    index = {name: i for i, name in enumerate(vocab)}
    folded = _loose_index(vocab) if loose else {}
    out = np.empty(len(names), dtype=np.int64)
    for j, name in enumerate(names):
        i = index.get(name, -1)
        if i < 0 and loose:  # a typed name in NFD (e.g. a macOS terminal) is the NFC class
            i = index.get(unicodedata.normalize("NFC", str(name)), -1)
        if i < 0 and loose:
            i = folded.get(_loose(str(name)), -1)
        if i < 0:
            raise SuiteError(f"{where}: {attr} class {name!r} is not in labels.json; {fix}")
        out[j] = i
    return out


def class_id(labels: Mapping[str, Sequence[str]], attr: str, name: str) -> int:
    """The id of class `name` of `attr` as a person typed it (exact, else loose; see class_ids)."""
    if attr not in labels:
        raise SuiteError(
            f"unknown attribute {attr!r} in --condition; the encoder has heads for: "
            f"{', '.join(labels)}"
        )
    fix = f"valid names: {', '.join(labels[attr])}"
    return int(class_ids([name], attr, labels[attr], "--condition", fix, loose=True)[0])


def parse_conditions(
    items: Sequence[str], labels: Mapping[str, Sequence[str]], allowed: Sequence[str]
) -> dict[str, int]:
    """`["style=Baroque", "genre=portrait"]` → {attr: class id}, checked against labels.json and
    the attributes the task conditions on (`allowed`)."""
    out: dict[str, int] = {}
    first = next((a for a in allowed if labels.get(a)), None)  # the example: this task's own
    example = f" (e.g. {first}={labels[first][-1]})" if first else ""
    for item in items:
        attr, sep, name = item.partition("=")
        if not sep or not attr.strip() or not name.strip():
            raise SuiteError(f"--condition {item!r} is not ATTR=CLASS{example}")
        attr = attr.strip()
        if attr in labels and attr not in allowed:  # an unknown attribute: class_id lists heads
            raise SuiteError(
                f"--condition {item!r}: the task conditions on {', '.join(allowed)} only; use a "
                f"task that conditions on {attr} (e.g. synthart-multi, wikiart-multi)"
            )
        if attr in out:
            raise SuiteError(f"--condition gives {attr!r} twice")
        out[attr] = class_id(labels, attr, name.strip())
    if not out:
        raise SuiteError(f"--image needs at least one --condition ATTR=CLASS{example}")
    return out
