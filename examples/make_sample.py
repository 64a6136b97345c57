"""Draw examples/sample.png: a small synthetic test card (edges, text, stripes, gradients) for
the README's first command. Generated rather than copied so that the repository ships no
third-party images. Run: python examples/make_sample.py"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def make_sample(width: int = 192, height: int = 128) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    sky = np.stack([90 + 80 * y / height, 140 + 60 * y / height, 220 - 40 * y / height], -1)
    img = Image.fromarray(sky.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.ellipse((130, 12, 172, 54), fill=(250, 220, 120), outline=(200, 120, 40), width=2)
    for i in range(9):  # a fence of thin slats: the kind of detail bicubic blurs
        x0 = 8 + i * 7
        draw.rectangle((x0, 70, x0 + 2, 118), fill=(120, 80, 50))
    draw.rectangle((0, 96, width, height), fill=(70, 120, 60))
    for r in range(3, 40, 4):  # concentric rings: every orientation of edge
        draw.ellipse(
            (100 - r, 84 - r, 100 + r, 84 + r),
            outline=(240, 240, 240) if r % 8 == 3 else (30, 30, 60),
        )
    draw.text((120, 100), "lightsr x4", fill=(255, 255, 255))
    for k in range(12):
        a = k * math.pi / 12
        draw.line((40, 30, 40 + 28 * math.cos(a), 30 + 28 * math.sin(a)), fill=(20, 20, 20))
    # A little optical blur, as a camera would give, so the card is not pixel-art.
    return img.filter(ImageFilter.GaussianBlur(0.6))


if __name__ == "__main__":
    out = Path(__file__).with_name("sample.png")
    make_sample().save(out, optimize=True)
    print(f"wrote {out}")
