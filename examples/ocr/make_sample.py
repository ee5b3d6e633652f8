"""Draw sample.png, the image the try-it page offers: three lines of text, made with Pillow.

Usage: ``python make_sample.py`` (writes sample.png beside this file). Needs the DejaVu
and WenQuanYi Micro Hei fonts (Debian: ``apt-get install fonts-dejavu-core
fonts-wqy-microhei``). The repository ships the result, so serving needs neither.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONTS = Path("/usr/share/fonts/truetype")
LINES = [  # (text, font file, size in pixels)
    ("Hello from openbayes-serving", FONTS / "dejavu" / "DejaVuSans-Bold.ttf", 34),
    ("Text lines come back in reading order", FONTS / "dejavu" / "DejaVuSerif.ttf", 26),
    ("中文和英文都可以识别", FONTS / "wqy" / "wqy-microhei.ttc", 30),
]
SIZE = (640, 220)


def draw() -> Image.Image:
    """The sample: dark text on a light background, one line under the other."""
    image = Image.new("RGB", SIZE, (250, 248, 240))
    pen = ImageDraw.Draw(image)
    y = 30
    for text, font_file, size in LINES:
        pen.text((36, y), text, font=ImageFont.truetype(str(font_file), size), fill=(20, 30, 60))
        y += int(size * 1.9)
    return image


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "sample.png"
    draw().save(out, optimize=True)
    print(f"wrote {out}")
