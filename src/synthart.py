"""SynthArt: the embedded procedural dataset — a scene (genre) painted in a style, plus context tags.

A scene is a map of flat-coloured regions drawn from a genre's layout and a palette; a style is a way
of painting that map. Tags come from the scene's parameters only, never from the style, so a style
change can keep a query's context (what mTS@10 measures). Everything is vectorised numpy and seeded
per image, so the same seed gives the same pixels whatever the order or count of images.
"""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

STYLES: tuple[str, ...] = (
    "flat",
    "pointillism",
    "hatching",
    "impressionism",
    "mosaic",
    "sketch",
)
GENRES: tuple[str, ...] = (
    "portrait",
    "landscape",
    "still_life",
    "cityscape",
    "seascape",
    "abstract",
)
# Mildly unequal class frequencies (largest/smallest ≈ 2), so balanced query sampling matters.
STYLE_WEIGHTS: tuple[float, ...] = (1.4, 1.2, 1.0, 1.0, 0.85, 0.7)
GENRE_WEIGHTS: tuple[float, ...] = (0.75, 1.4, 0.9, 1.15, 1.0, 0.8)

PALETTES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "warm": ((200, 40, 30), (240, 120, 30), (250, 200, 60), (150, 30, 60), (110, 50, 20)),
    "cool": ((30, 60, 160), (40, 150, 170), (110, 70, 170), (150, 200, 230), (20, 30, 80)),
    "earthy": ((120, 80, 40), (170, 130, 60), (90, 100, 40), (200, 170, 120), (60, 40, 25)),
    "pastel": ((240, 180, 200), (180, 230, 200), (200, 190, 240), (250, 230, 170), (170, 210, 240)),
    "vivid": ((230, 20, 40), (20, 90, 230), (250, 210, 0), (20, 170, 60), (240, 0, 160)),
    "muted": ((130, 130, 120), (150, 110, 110), (100, 120, 130), (170, 160, 140), (80, 80, 90)),
    "forest": ((30, 100, 40), (90, 150, 50), (60, 70, 30), (150, 180, 90), (100, 70, 40)),
    "ocean": ((10, 70, 130), (30, 140, 160), (220, 200, 150), (90, 180, 200), (10, 40, 70)),
}
LIGHTINGS: dict[str, tuple[float, float, float]] = {
    # the sky / wall colour the background is pulled towards (65 %, the rest a palette colour)
    "daylight": (0.93, 0.95, 1.0),
    "dusk": (0.95, 0.55, 0.35),
    "night": (0.05, 0.06, 0.15),
}
COMPOSITIONS: dict[str, float] = {"left": -0.17, "centered": 0.0, "right": 0.17}
PAPER = np.array([0.96, 0.94, 0.88])
GRAPHITE = np.array([0.15, 0.15, 0.18])


@dataclass
class Scene:
    """What is shown: a region map (H×W ids), one RGB colour in [0, 1] per region, and the tags."""

    genre: str
    regions: np.ndarray
    colors: np.ndarray
    tags: list[str]


@dataclass
class Sample:
    """One generated painting: its labels, tags and pixels (H×W×3 uint8)."""

    style: str
    genre: str
    tags: list[str]
    image: np.ndarray


# ---------------------------------------------------------------------------------------------
# The public entry points


def sample_labels(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Style and genre ids of images 0…n-1, drawn independently with the mildly unequal weights.

    Image i's labels do not depend on n (one pair of uniform numbers per image, in order).
    """
    u = np.random.default_rng([seed, 0x5EED]).random((n, 2))
    cs = np.cumsum(STYLE_WEIGHTS) / sum(STYLE_WEIGHTS)
    cg = np.cumsum(GENRE_WEIGHTS) / sum(GENRE_WEIGHTS)
    styles = np.minimum(np.searchsorted(cs, u[:, 0], side="right"), len(STYLES) - 1)
    genres = np.minimum(np.searchsorted(cg, u[:, 1], side="right"), len(GENRES) - 1)
    return styles, genres


def generate(seed: int, index: int, style: str, genre: str, size: int = 64) -> Sample:
    """Image `index` of the dataset with this seed: a `genre` scene painted in `style`."""
    scene = draw_scene(genre, np.random.default_rng([seed, index, 1]), size)
    image = render(scene, style, np.random.default_rng([seed, index, 2]))
    return Sample(style, genre, scene.tags, image)


def draw_scene(genre: str, rng: np.random.Generator, size: int = 64) -> Scene:
    """A random scene of `genre` at `size`×`size` px with its tags (independent of any style)."""
    palette_name = str(rng.choice(list(PALETTES)))
    lighting = str(rng.choice(list(LIGHTINGS), p=[0.5, 0.25, 0.25]))
    composition = str(rng.choice(list(COMPOSITIONS)))
    canvas = _Canvas(size, rng, palette_name, lighting)
    motifs, n_objects = _LAYOUTS[genre](canvas, rng, COMPOSITIONS[composition])
    tags = [
        genre,
        palette_name,
        lighting,
        composition,
        *canvas.dominant_colours(),
        _count_tag(n_objects),
        *motifs,
    ]
    return Scene(genre, canvas.regions, np.array(canvas.colors), list(dict.fromkeys(tags)))


def render(scene: Scene, style: str, rng: np.random.Generator) -> np.ndarray:
    """Paint `scene` in `style`: H×W×3 uint8."""
    base = scene.colors[scene.regions]
    out = _STYLES[style](base, scene.regions, rng)
    out = out + rng.normal(0.0, 0.015, out.shape)  # canvas grain, the same for every style
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def period(size: int) -> int:
    """Texture period in px: 8 at 64 px — coarse enough to survive a 4×4 patchify stem."""
    return max(6, round(size / 8))


# ---------------------------------------------------------------------------------------------
# Colours


def luminance(c: np.ndarray) -> np.ndarray:
    return c[..., 0] * 0.299 + c[..., 1] * 0.587 + c[..., 2] * 0.114


def colour_name(c: np.ndarray) -> str:
    """A plain colour word for an RGB colour in [0, 1] (the tags' 'dominant colours')."""
    h, s, v = colorsys.rgb_to_hsv(*(float(x) for x in c))
    h *= 360
    if v < 0.22:
        return "black"
    if s < 0.18:
        return "white" if v > 0.85 else "grey"
    if h < 15 or h >= 345:
        return "red" if v > 0.45 else "brown"
    if h < 40:
        return "orange" if v > 0.6 else "brown"
    if h < 70:
        return "yellow" if v > 0.55 else "olive"
    if h < 160:
        return "green"
    if h < 195:
        return "teal"
    if h < 255:
        return "blue"
    if h < 290:
        return "purple"
    return "pink"


def _contrasting(c: np.ndarray, refs: list[np.ndarray], min_d: float = 0.45) -> np.ndarray:
    """`c` pushed lighter or darker until its luminance differs from every ref by ≥ min_d."""
    for _ in range(2):
        for r in refs:
            d = luminance(c) - luminance(r)
            if abs(d) >= min_d:
                continue
            up = luminance(r) + min_d <= 0.95 and (d >= 0 or luminance(r) - min_d < 0.05)
            if up:  # blend towards white until the gap is reached
                t = (luminance(r) + min_d - luminance(c)) / max(1e-6, 1 - luminance(c))
                c = c + (1 - c) * min(1.0, t)
            else:  # blend towards black
                t = 1 - (luminance(r) - min_d) / max(1e-6, luminance(c))
                c = c * (1 - min(1.0, max(0.0, t)))
    return np.clip(c, 0, 1)


def _shade(img: np.ndarray) -> np.ndarray:
    """A strongly contrasting shade of each pixel: darker on light colours, lighter on dark ones."""
    light = luminance(img)[..., None] > 0.42
    return np.where(light, img * 0.25, img + (1 - img) * 0.7)


# ---------------------------------------------------------------------------------------------
# Drawing scenes


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size]
    return (xx + 0.5) / size, (yy + 0.5) / size


class _Canvas:
    """A region map being painted front to back, with the palette and lighting of its scene."""

    def __init__(self, size: int, rng: np.random.Generator, palette: str, lighting: str):
        self.size = size
        self.rng = rng
        self.palette = np.array(PALETTES[palette], dtype=float) / 255.0
        self.u, self.v = _grid(size)
        self.regions = np.zeros((size, size), dtype=np.int16)
        tint = np.array(LIGHTINGS[lighting])
        bg = 0.35 * self.pick() + 0.65 * tint
        self.colors: list[np.ndarray] = [bg]

    @property
    def background(self) -> np.ndarray:
        return self.colors[0]

    def pick(self, against: list[np.ndarray] | None = None) -> np.ndarray:
        """A jittered palette colour, in contrast with the colours it is drawn against."""
        c = self.palette[self.rng.integers(len(self.palette))]
        c = np.clip(c + self.rng.uniform(-0.06, 0.06, 3), 0, 1)
        return _contrasting(c, against) if against else c

    def paint(self, mask: np.ndarray, color: np.ndarray) -> np.ndarray:
        self.colors.append(np.asarray(color, dtype=float))
        self.regions[mask] = len(self.colors) - 1
        return self.colors[-1]

    # shapes, in relative coordinates (u right, v down, both in [0, 1])
    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((self.u - cx) / rx) ** 2 + ((self.v - cy) / ry) ** 2 <= 1.0

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return (self.u >= x0) & (self.u < x1) & (self.v >= y0) & (self.v < y1)

    def triangle(self, a, b, c) -> np.ndarray:
        def side(p, q):
            return (self.u - q[0]) * (p[1] - q[1]) - (p[0] - q[0]) * (self.v - q[1])

        d1, d2, d3 = side(a, b), side(b, c), side(c, a)
        neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
        pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
        return ~(neg & pos)

    def below(self, base: float, amp: float, freq: float, phase: float) -> np.ndarray:
        return self.v >= base + amp * np.sin(2 * np.pi * freq * self.u + phase)

    def dominant_colours(self) -> list[str]:
        """Names of the two largest regions' colours."""
        area = np.bincount(self.regions.ravel(), minlength=len(self.colors))
        top = np.argsort(-area, kind="stable")[:2]
        return [colour_name(self.colors[k]) for k in top if area[k] > 0]


def _count_tag(n: int) -> str:
    if n <= 1:
        return "single-subject"
    if n <= 3:
        return "few-objects"
    if n <= 5:
        return "several-objects"
    return "many-objects"


def _sky_body(cv: _Canvas, rng: np.random.Generator, dark: bool, x: float, y: float) -> str:
    """A sun (light background) or a moon (dark background) in the sky; returns its tag."""
    r = rng.uniform(0.07, 0.11)
    if dark:
        cv.paint(cv.ellipse(x, y, r, r), np.array([0.95, 0.95, 0.8]))
        return "moon"
    cv.paint(cv.ellipse(x, y, r, r), _contrasting(np.array([0.98, 0.7, 0.1]), [cv.background]))
    return "sun"


def _clouds(cv: _Canvas, rng: np.random.Generator, n: int) -> None:
    col = _contrasting(np.array([0.97, 0.97, 0.97]), [cv.background], 0.2)
    for _ in range(n):
        x, y = rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.28)
        for dx in (-0.06, 0.0, 0.06):
            cv.paint(cv.ellipse(x + dx, y + abs(dx) * 0.3, 0.07, 0.045), col)


def _is_dark(cv: _Canvas) -> bool:
    return luminance(cv.background) < 0.4


def _portrait(cv: _Canvas, rng: np.random.Generator, dx: float) -> tuple[list[str], int]:
    """A large head and shoulders, centred or to one side, on a plain wall."""
    motifs = []
    bg = cv.background
    cx = 0.5 + 0.7 * dx
    clothes = cv.paint(cv.ellipse(cx, 1.05, 0.42, 0.36), cv.pick([bg]))
    skin = _contrasting(np.array([0.9, 0.72, 0.58]) * rng.uniform(0.6, 1.05), [bg, clothes], 0.25)
    cv.paint(cv.rect(cx - 0.07, 0.6, cx + 0.07, 0.75), skin)
    if rng.random() < 0.6:
        cv.paint(cv.ellipse(cx, 0.36, 0.24, 0.25), cv.pick([bg, skin]))
        motifs.append("long-hair")
    cv.paint(cv.ellipse(cx, 0.42, 0.19, 0.24), skin)
    eye = _contrasting(np.array([0.1, 0.1, 0.1]), [skin], 0.4)
    for ex in (-0.07, 0.07):
        cv.paint(cv.ellipse(cx + ex, 0.4, 0.035, 0.025), eye)
    cv.paint(cv.ellipse(cx, 0.55, 0.06, 0.02), eye)
    if rng.random() < 0.4:
        hat = cv.pick([bg, skin])
        cv.paint(cv.rect(cx - 0.3, 0.16, cx + 0.3, 0.21), hat)
        cv.paint(cv.rect(cx - 0.17, 0.0, cx + 0.17, 0.17), hat)
        motifs.append("hat")
    if rng.random() < 0.35:
        cv.paint(cv.ellipse(cx, 0.82, 0.12, 0.045), _contrasting(cv.pick(), [clothes], 0.35))
        motifs.append("necklace")
    return motifs, 1


def _landscape(cv: _Canvas, rng: np.random.Generator, dx: float) -> tuple[list[str], int]:
    """Rolling hills in two wavy bands under the sky, with round trees."""
    motifs = []
    bg = cv.background
    motifs.append(_sky_body(cv, rng, _is_dark(cv), 0.5 - dx * 2, rng.uniform(0.12, 0.22)))
    if not _is_dark(cv) and rng.random() < 0.5:
        _clouds(cv, rng, int(rng.integers(1, 3)))
        motifs.append("clouds")
    if rng.random() < 0.4:
        mc = cv.pick([bg])
        for _ in range(int(rng.integers(1, 3))):
            x, w, h = rng.uniform(0.1, 0.9), rng.uniform(0.2, 0.3), rng.uniform(0.2, 0.3)
            cv.paint(cv.triangle((x - w, 0.5), (x + w, 0.5), (x, 0.5 - h)), mc)
        motifs.append("mountains")
    far = cv.pick([bg])
    horizon = rng.uniform(0.42, 0.5)
    cv.paint(
        cv.below(horizon, rng.uniform(0.07, 0.12), rng.uniform(0.8, 1.4), rng.uniform(0, 6.3)), far
    )
    near = cv.pick([far, bg])
    cv.paint(
        cv.below(
            horizon + 0.22, rng.uniform(0.07, 0.12), rng.uniform(0.6, 1.2), rng.uniform(0, 6.3)
        ),
        near,
    )
    n_trees = int(rng.integers(0, 5))
    if n_trees:
        leaves = cv.pick([far, near])
        trunk = _contrasting(np.array([0.35, 0.22, 0.1]), [near], 0.2)
        for _ in range(n_trees):
            x = np.clip(rng.normal(0.5 + dx, 0.22), 0.08, 0.92)
            y = rng.uniform(horizon + 0.2, 0.92)
            s = rng.uniform(0.07, 0.11)
            cv.paint(cv.rect(x - 0.02, y - 0.8 * s, x + 0.02, y), trunk)
            cv.paint(cv.ellipse(x, y - 1.6 * s, 1.2 * s, 1.1 * s), leaves)
        motifs.append("trees")
    return motifs, n_trees + 1


def _still_life(cv: _Canvas, rng: np.random.Generator, dx: float) -> tuple[list[str], int]:
    """A few large objects standing on a table seen in perspective (a trapezoid)."""
    motifs = []
    bg = cv.background
    top = rng.uniform(0.58, 0.66)
    table = cv.pick([bg])
    slope = (cv.v - top) / (1.0 - top)
    top_face = (cv.v >= top) & (np.abs(cv.u - 0.5) <= 0.34 + 0.2 * slope)
    cv.paint(top_face, table)
    cv.paint(top_face & (cv.v >= 0.88), _contrasting(table * 0.5, [table], 0.3))  # front edge
    n = int(rng.integers(2, 5))
    xs = np.sort(np.clip(0.5 + dx * 0.6 + rng.uniform(-0.25, 0.25, n), 0.2, 0.8))
    kinds = rng.choice(["vase", "fruit", "bottle", "bowl"], size=n)
    for x, kind in zip(xs, kinds, strict=True):
        col = cv.pick([bg, table])
        base = top + 0.06
        if kind == "vase":
            cv.paint(cv.ellipse(x, base - 0.17, 0.11, 0.17), col)
            cv.paint(cv.rect(x - 0.04, base - 0.45, x + 0.04, base - 0.3), col)
        elif kind == "fruit":
            for j, r in enumerate((0.08, 0.065)):
                cv.paint(cv.ellipse(x + (j - 0.5) * 0.12, base - r, r, r), col)
        elif kind == "bottle":
            cv.paint(cv.rect(x - 0.06, base - 0.35, x + 0.06, base), col)
            cv.paint(cv.rect(x - 0.025, base - 0.5, x + 0.025, base - 0.35), col)
        else:
            cv.paint(cv.ellipse(x, base - 0.1, 0.15, 0.1) & (cv.v >= base - 0.1), col)
        motifs.append(str(kind))
    return motifs, n


def _cityscape(cv: _Canvas, rng: np.random.Generator, dx: float) -> tuple[list[str], int]:
    """Tall, flat-roofed buildings standing side by side, sky between them."""
    motifs = []
    bg = cv.background
    dark = _is_dark(cv)
    motifs.append(_sky_body(cv, rng, dark, 0.5 - dx * 2.5, rng.uniform(0.1, 0.18)))
    x = rng.uniform(-0.05, 0.02)
    n = 0
    lit = rng.random() < 0.5
    window = np.array([0.98, 0.85, 0.3])
    while x < 1.0:
        w = rng.uniform(0.1, 0.16)
        centre = x + w / 2 - 0.5 - dx
        h = rng.uniform(0.5, 0.82) * (1.0 - 0.4 * abs(centre))
        col = cv.pick([bg])
        cv.paint(cv.rect(x, 1.0 - h, x + w, 1.01), col)
        if lit:
            for _ in range(2):
                wx, wy = rng.uniform(x + 0.02, x + w - 0.06), rng.uniform(1.03 - h, 0.9)
                cv.paint(cv.rect(wx, wy, wx + 0.05, wy + 0.05), _contrasting(window, [col], 0.3))
        x += w + rng.uniform(0.06, 0.12)
        n += 1
    if lit:
        motifs.append("lit-windows")
    if rng.random() < 0.4:
        tx = 0.5 + dx
        col = cv.pick([bg])
        cv.paint(cv.rect(tx - 0.04, 0.22, tx + 0.04, 1.01), col)
        cv.paint(cv.triangle((tx - 0.06, 0.23), (tx + 0.06, 0.23), (tx, 0.06)), col)
        motifs.append("tower")
        n += 1
    return motifs, n


def _seascape(cv: _Canvas, rng: np.random.Generator, dx: float) -> tuple[list[str], int]:
    """A straight horizon over a sea striped with regular waves."""
    motifs = []
    bg = cv.background
    motifs.append(_sky_body(cv, rng, _is_dark(cv), 0.5 - dx * 2, rng.uniform(0.1, 0.22)))
    if not _is_dark(cv) and rng.random() < 0.5:
        _clouds(cv, rng, int(rng.integers(1, 3)))
        motifs.append("clouds")
    horizon = rng.uniform(0.38, 0.46)
    n = 1
    if rng.random() < 0.4:
        cv.paint(cv.ellipse(0.5 - dx * 1.5, horizon, 0.18, 0.08), cv.pick([bg]))
        motifs.append("island")
        n += 1
    water = 0.35 * cv.pick() + 0.65 * np.array([0.08, 0.35, 0.62])  # seas are blue-green
    sea = cv.paint(cv.v >= horizon, _contrasting(water, [bg], 0.3))
    wave = _contrasting(sea * 1.0, [sea], 0.35)
    phase = rng.uniform(0, 6.3)
    for k in range(4):
        y = horizon + 0.07 + 0.14 * k
        band = cv.below(y, 0.02, 2.5, phase + k) & ~cv.below(y + 0.065, 0.02, 2.5, phase + k)
        cv.paint(band, wave)
    if rng.random() < 0.6:
        bx, by = 0.5 + dx, horizon + rng.uniform(0.12, 0.22)
        hull = cv.pick([sea, wave])
        keel = cv.triangle((bx - 0.2, by), (bx + 0.2, by), (bx, by + 0.5))
        cv.paint(cv.rect(bx - 0.14, by, bx + 0.14, by + 0.06) & keel, hull)
        sail = _contrasting(np.array([0.97, 0.95, 0.9]), [bg, sea], 0.2)
        cv.paint(
            cv.triangle((bx - 0.01, by - 0.01), (bx - 0.01, by - 0.3), (bx + 0.13, by - 0.01)), sail
        )
        motifs.append("boat")
        n += 1
    if rng.random() < 0.35:
        for _ in range(int(rng.integers(2, 4))):
            gx, gy = rng.uniform(0.15, 0.85), rng.uniform(0.12, horizon - 0.08)
            bird = cv.triangle((gx - 0.06, gy - 0.02), (gx + 0.06, gy - 0.02), (gx, gy + 0.015))
            cv.paint(bird, _contrasting(np.array([0.2, 0.2, 0.2]), [bg], 0.35))
        motifs.append("gulls")
        n += 1
    return motifs, n


def _abstract(cv: _Canvas, rng: np.random.Generator, dx: float) -> tuple[list[str], int]:
    """Wedges of colour meeting at one point (slanted edges everywhere), with bold angular shapes."""
    motifs = []
    px, py = 0.5 + dx + rng.uniform(-0.1, 0.1), rng.uniform(0.35, 0.65)
    k = 2 * int(rng.integers(2, 4))
    step = 2 * np.pi / k
    edges = -np.pi + step * (np.arange(k) + rng.uniform(-0.2, 0.2, k)) + rng.uniform(0, step)
    wedge = np.searchsorted(np.sort(edges), np.arctan2(cv.v - py, cv.u - px)) % k
    for j in range(1, k, 2):  # every other wedge keeps the background colour
        cv.paint(wedge == j, cv.pick([cv.background]))
    n = int(rng.integers(1, 4))
    kinds = rng.choice(["triangles", "diamonds", "bars"], size=n)
    for kind in kinds:
        x, y = np.clip(rng.normal(0.5 + dx, 0.2), 0.15, 0.85), rng.uniform(0.2, 0.8)
        r = rng.uniform(0.1, 0.18)
        t = rng.uniform(0, 2 * np.pi)
        if kind == "diamonds":
            mask = np.abs(cv.u - x) + np.abs(cv.v - y) <= 1.3 * r
        elif kind == "bars":
            along = (cv.u - x) * np.cos(t) + (cv.v - y) * np.sin(t)
            across = -(cv.u - x) * np.sin(t) + (cv.v - y) * np.cos(t)
            mask = (np.abs(along) < 2.2 * r) & (np.abs(across) < 0.05)
        else:
            pts = [
                (x + 1.4 * r * np.cos(t + k * 2.094), y + 1.4 * r * np.sin(t + k * 2.094))
                for k in range(3)
            ]
            mask = cv.triangle(*pts)
        under = np.bincount(cv.regions[mask], minlength=len(cv.colors)).argmax()
        cv.paint(mask, cv.pick([cv.colors[under]]))
        motifs.append(str(kind))
    return motifs, n


_LAYOUTS: dict[str, Callable[[_Canvas, np.random.Generator, float], tuple[list[str], int]]] = {
    "portrait": _portrait,
    "landscape": _landscape,
    "still_life": _still_life,
    "cityscape": _cityscape,
    "seascape": _seascape,
    "abstract": _abstract,
}


# ---------------------------------------------------------------------------------------------
# Styles: how a region map is painted. Textures have periods of ≥ 8 px at 64 px.


def _flat(base: np.ndarray, regions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return base


def _pointillism(base: np.ndarray, regions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Round dabs of the local colour, slightly deepened, on a hexagonal grid over a pale wash."""
    size = base.shape[0]
    p = period(size)
    yy, xx = np.mgrid[0:size, 0:size]
    row = yy // p
    shift = (row % 2) * (p // 2)
    col = (xx + p - shift) // p  # ≥ 0
    n = size // p + 2
    jit = rng.uniform(-1.0, 1.0, (2, n, n + 1)) * p / 8
    cy = row * p + p / 2 + jit[0, row, col]
    cx = (col - 1) * p + shift + p / 2 + jit[1, row, col]
    r = 0.42 * p
    dot = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    cyi = np.clip(np.round(cy), 0, size - 1).astype(int)
    cxi = np.clip(np.round(cx), 0, size - 1).astype(int)
    bright = rng.uniform(0.7, 0.9, (n, n + 1))[row, col][..., None]
    colour = base[cyi, cxi] * bright
    return np.where(dot[..., None], colour, 0.5 * base + 0.5 * PAPER)


def _hatching(base: np.ndarray, regions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Diagonal strokes in a contrasting shade across every region."""
    size = base.shape[0]
    p = period(size)
    yy, xx = np.mgrid[0:size, 0:size]
    lines = (xx + yy + int(rng.integers(p))) % p < max(2, (3 * p) // 8)
    return np.where(lines[..., None], _shade(base), base)


def _impressionism(base: np.ndarray, regions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft edges under short, tilted brush dabs of jittered colour."""
    size = base.shape[0]
    p = period(size)
    soft = ndimage.gaussian_filter(base, sigma=(0.25 * p, 0.25 * p, 0), mode="nearest")
    yy, xx = np.mgrid[0:size, 0:size]
    ty, tx = yy // p, xx // p
    n = size // p + 1
    cy = ty * p + p / 2 + rng.uniform(-1, 1, (n, n))[ty, tx] * p / 8
    cx = tx * p + p / 2 + rng.uniform(-1, 1, (n, n))[ty, tx] * p / 8
    angle = (rng.integers(0, 4, (n, n)) * np.pi / 4 + rng.uniform(-0.3, 0.3, (n, n)))[ty, tx]
    along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    dab = (along / (0.5 * p)) ** 2 + (across / (0.2 * p)) ** 2 <= 1.0
    cyi = np.clip(np.round(cy), 0, size - 1).astype(int)
    cxi = np.clip(np.round(cx), 0, size - 1).astype(int)
    tint = rng.uniform(0.75, 1.25, (n, n, 3))[ty, tx]
    return np.where(dab[..., None], soft[cyi, cxi] * tint, soft * 0.9)


def _mosaic(base: np.ndarray, regions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Square tiles of each tile's mean colour, separated by thin contrasting grout."""
    size = base.shape[0]
    p = period(size)
    yy, xx = np.mgrid[0:size, 0:size]
    ty, tx = yy // p, xx // p
    starts = np.arange(0, size, p)
    sums = np.add.reduceat(np.add.reduceat(base, starts, axis=0), starts, axis=1)
    counts = np.outer(np.diff(np.append(starts, size)), np.diff(np.append(starts, size)))
    jitter = rng.uniform(0.85, 1.15, counts.shape)[..., None]
    tile = np.clip((sums / counts[..., None] * jitter)[ty, tx], 0, 1)
    grout = (yy % p < max(1, p // 8)) | (xx % p < max(1, p // 8))
    return np.where(grout[..., None], _shade(tile), tile)


def _sketch(base: np.ndarray, regions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Graphite outlines of every region on pale paper with a light colour wash."""
    size = base.shape[0]
    edge = np.zeros(regions.shape, dtype=bool)
    edge[:, 1:] |= regions[:, 1:] != regions[:, :-1]
    edge[1:, :] |= regions[1:, :] != regions[:-1, :]
    width = max(1, size // 64)
    edge = ndimage.binary_dilation(edge, iterations=width)
    paper = 0.55 * PAPER + 0.45 * base
    return np.where(edge[..., None], GRAPHITE, paper)


_STYLES: dict[str, Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]] = {
    "flat": _flat,
    "pointillism": _pointillism,
    "hatching": _hatching,
    "impressionism": _impressionism,
    "mosaic": _mosaic,
    "sketch": _sketch,
}
