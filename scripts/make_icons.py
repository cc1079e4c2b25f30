"""Draw the app icon (.png, .ico, .icns) and the self-test picture into resources/ (run by hand when they change)."""

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "resources"


def draw(size: int = 1024) -> Image.Image:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    s = size / 1024
    # A rounded tile with a vertical blue-violet gradient.
    tile = Image.new("RGBA", (size, size))
    td = ImageDraw.Draw(tile)
    for y in range(size):
        t = y / size
        td.line([(0, y), (size, y)], fill=(int(66 + 60 * t), int(103 - 40 * t), int(210 + 20 * t), 255))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rounded_rectangle([40 * s, 40 * s, 984 * s, 984 * s], radius=200 * s, fill=255)
    img.paste(tile, (0, 0), mask)
    # A photo frame (the image) with a mountain and sun.
    d.rounded_rectangle([170 * s, 210 * s, 700 * s, 640 * s], radius=40 * s, fill=(255, 255, 255, 255))
    d.polygon([(210 * s, 600 * s), (380 * s, 380 * s), (500 * s, 520 * s), (560 * s, 450 * s), (660 * s, 600 * s)],
              fill=(72, 160, 120, 255))
    d.ellipse([540 * s, 270 * s, 620 * s, 350 * s], fill=(255, 190, 60, 255))
    # A speech bubble (the conversation) overlapping the frame's corner.
    d.rounded_rectangle([470 * s, 500 * s, 880 * s, 800 * s], radius=70 * s, fill=(255, 255, 255, 255),
                        outline=(52, 70, 160, 255), width=int(18 * s))
    d.polygon([(560 * s, 790 * s), (520 * s, 900 * s), (650 * s, 795 * s)], fill=(255, 255, 255, 255))
    for i, x in enumerate((580, 675, 770)):
        d.ellipse([(x - 28) * s, 622 * s, (x + 28) * s, 678 * s], fill=(52, 70, 160, 255))
    return img


def draw_self_test_image() -> Image.Image:
    """A simple scene for `--self-test`: drawn here, so the bundle ships no third-party photo."""
    from PIL import ImageFont

    img = Image.new("RGB", (448, 336), (250, 248, 240))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 250, 448, 336], fill=(120, 170, 90))
    d.ellipse([40, 60, 180, 200], fill=(220, 60, 50))
    d.rectangle([250, 110, 400, 250], fill=(50, 90, 200))
    d.polygon([(250, 110), (325, 40), (400, 110)], fill=(90, 60, 40))
    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", 28)
    except OSError:
        font = ImageFont.load_default()
    d.text((40, 280), "PaliGemma self-test", fill=(255, 255, 255), font=font)
    return img


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    big = draw()
    big.resize((256, 256), Image.Resampling.LANCZOS).save(OUT / "icon.png")
    big.save(OUT / "icon.ico", sizes=[(16, 16), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])
    big.save(OUT / "icon.icns")
    draw_self_test_image().save(OUT / "self_test.png", optimize=True)
    print("wrote", sorted(p.name for p in OUT.glob("icon.*")), "and self_test.png")
