"""A generated picture: what an app would produce and must not lose (here made with Pillow)."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

SIZE = (480, 270)


def generate_png(label: str, *, seed: int | None = None) -> bytes:
    """A PNG with a random gradient, a few circles and ``label`` written on it."""
    rng = random.Random(seed)
    start = [rng.randrange(256) for _ in range(3)]
    end = [rng.randrange(256) for _ in range(3)]
    image = Image.new("RGB", SIZE)
    draw = ImageDraw.Draw(image)
    width, height = SIZE
    for x in range(width):
        mix = x / (width - 1)
        draw.line([(x, 0), (x, height)],
                  fill=tuple(round(a + (b - a) * mix) for a, b in zip(start, end, strict=True)))
    for _ in range(6):
        cx, cy, r = rng.randrange(width), rng.randrange(height), rng.randrange(15, 70)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(255, 255, 255), width=3)
    draw.rectangle([10, height - 40, width - 10, height - 10], fill=(0, 0, 0))
    draw.text((20, height - 32), label[:60], fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
