"""Synthetic fruit photos, with and without defect spots: the fruit team's training and test data.

Only PIL and numpy (no torch), so producers, tests and benchmarks can make images without the model's
dependencies. Every image is a pure function of `(kind, seed, size)`: the same arguments give the same bytes.

A clean fruit is not a flawless disc: it has lenticels (small light dots), a blush, a stem, a specular
highlight and a cast shadow, so "any dark pixel" is not enough to tell the classes apart. A defective
fruit has, in addition, one to four dark rot spots of irregular shape on its skin.

    python -m adapters.fruit_defect.samples --out /tmp/fruit --count 20
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("clean", "defect")
DEFAULT_SIZE = 256

# skin base colours (RGB): red, green and yellow apples, orange, pear
_SKINS = np.array(
    [[178, 32, 36], [120, 170, 60], [222, 190, 62], [236, 132, 28], [170, 180, 70], [150, 40, 60]], dtype=np.float32
)


def make_image(kind: str, seed: int, size: int = DEFAULT_SIZE) -> bytes:
    """A JPEG of one fruit on a table; `kind` is "clean" or "defect"."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    rng = np.random.default_rng([seed, KINDS.index(kind), size])

    def u(low: float, high: float) -> float:
        return float(rng.uniform(low, high))  # a python float keeps the arrays float32

    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # table: a tinted gradient with wood-like streaks
    table = rng.uniform(70, 210, 3).astype(np.float32)
    streaks = np.sin(yy / u(3, 9) + np.sin(xx / u(20, 60)) * u(1, 4))
    table_shade = 0.85 + 0.1 * streaks + (0.1 / h) * yy

    # the fruit: an ellipse near the centre
    cx, cy, rx = u(0.38, 0.62) * size, u(0.38, 0.62) * size, u(0.27, 0.38) * size
    ry = rx * u(0.85, 1.12)
    inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2

    # cast shadow, down and to the side: dark, but off the fruit
    sx, sy = cx + u(-0.08, 0.08) * size, cy + u(0.05, 0.12) * size
    shadow = np.clip(1.15 - (((xx - sx) / (rx * 1.05)) ** 2 + ((yy - sy) / (ry * 0.95)) ** 2), 0, 1) ** 0.7
    table_shade *= 1 - 0.55 * shadow

    skin = _SKINS[rng.integers(len(_SKINS))] * rng.uniform(0.85, 1.1, 3).astype(np.float32)
    # light from the upper left: brighter there, darker towards the rim
    lx, ly = cx - 0.35 * rx, cy - 0.4 * ry
    light = 1.15 - 0.55 * np.sqrt(((xx - lx) / (1.6 * rx)) ** 2 + ((yy - ly) / (1.6 * ry)) ** 2)
    # a blush: a broad, soft, slightly darker and redder patch (clean fruit has it too)
    bx, by = cx + u(-0.5, 0.5) * rx, cy + u(-0.5, 0.5) * ry
    blush = np.exp(((xx - bx) ** 2 + (yy - by) ** 2) * (-0.5 / (0.45 * rx) ** 2))
    light *= 1 - u(0.1, 0.3) * blush
    light += rng.standard_normal((h, w), dtype=np.float32) * (4.0 / 160)  # skin grain
    edge = np.clip((1 - inside) * 6, 0, 1)  # soft rim
    img = (table * (1 - edge)[..., None]) * table_shade[..., None]
    img += (skin * (edge * light)[..., None]) + (blush * edge)[..., None] * np.array([25, -10, -10], np.float32)

    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)

    # lenticels: many small light dots on the skin
    for _ in range(int(rng.integers(15, 60))):
        px, py = _point_on_fruit(rng, cx, cy, rx, ry, 0.9)
        r = rng.uniform(0.6, 1.6) * size / 256
        tone = tuple(int(min(255, c * 1.1 + 25)) for c in skin)
        draw.ellipse([px - r, py - r, px + r, py + r], fill=tone)

    # the stem, at the top
    stem_x, stem_y = cx + rng.uniform(-0.1, 0.1) * rx, cy - ry * 0.92
    draw.line(
        [stem_x, stem_y, stem_x + rng.uniform(-8, 8), stem_y - rng.uniform(8, 18)],
        fill=(92, 64, 40),
        width=max(2, size // 90),
    )

    img = np.asarray(canvas, dtype=np.float32)
    if kind == "defect":
        _add_rot_spots(img, rng, cx, cy, rx, ry, size)

    # the specular highlight, last: it sits on top of everything
    hx, hy, hr = lx + u(-5, 5), ly + u(-5, 5), rx * u(0.08, 0.16)
    _blend(img, (255, 255, 255), u(0.35, 0.65) * np.exp(-(((xx - hx) / hr) ** 2 + ((yy - hy) / (0.7 * hr)) ** 2)))

    out = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=int(rng.integers(80, 95)))
    return out.getvalue()


def _point_on_fruit(
    rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, within: float
) -> tuple[float, float]:
    angle, radius = rng.uniform(0, 2 * np.pi), within * np.sqrt(rng.uniform(0, 1))
    return cx + radius * rx * np.cos(angle), cy + radius * ry * np.sin(angle)


def _blend(
    img: np.ndarray,
    colour: tuple[float, float, float],
    alpha: np.ndarray,
    window: tuple[slice, slice] = (slice(None), slice(None)),
) -> None:
    img[window] = img[window] * (1 - alpha[..., None]) + np.asarray(colour, np.float32) * alpha[..., None]


def _add_rot_spots(
    img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, size: int
) -> None:
    """One to four dark brown blobs, each a union of a few overlapping ellipses with a soft edge."""
    for _ in range(int(rng.integers(1, 5))):
        px, py = _point_on_fruit(rng, cx, cy, rx, ry, 0.75)
        base = float(rng.uniform(0.03, 0.07)) * size
        reach = int(base * 2.5)
        window = (
            slice(max(0, int(py) - reach), min(size, int(py) + reach)),
            slice(max(0, int(px) - reach), min(size, int(px) + reach)),
        )
        wy, wx = np.mgrid[window].astype(np.float32)
        alpha = np.zeros(wy.shape, np.float32)
        softness = float(rng.uniform(2.0, 5.0))
        for _ in range(int(rng.integers(2, 5))):
            ox, oy = rng.normal(0, base * 0.35, 2)
            ax, ay = base * rng.uniform(0.6, 1.1, 2)
            d = ((wx - px - ox) / ax) ** 2 + ((wy - py - oy) / ay) ** 2
            np.maximum(alpha, np.clip((1 - d) * softness, 0, 1), out=alpha)
        rot = (float(rng.uniform(45, 85)), float(rng.uniform(30, 50)), float(rng.uniform(15, 30)))
        _blend(img, rot, alpha * float(rng.uniform(0.85, 1.0)), window)


def file_name(kind: str, seed: int) -> str:
    return f"{kind}-{seed:06d}.jpg"


def write_samples(out: Path, count: int, first_seed: int = 0, size: int = DEFAULT_SIZE) -> list[Path]:
    """`count` images alternating clean/defect, named `<kind>-<seed>.jpg`."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        kind, seed = KINDS[i % 2], first_seed + i
        path = out / file_name(kind, seed)
        path.write_bytes(make_image(kind, seed, size))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the JPEGs into")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="width and height in pixels")
    args = parser.parse_args(argv)
    written = write_samples(args.out, args.count, args.first_seed, args.size)
    print(f"wrote {len(written)} images to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
