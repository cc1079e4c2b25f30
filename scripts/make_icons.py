"""Draw the app icon and write it as .png, .ico and .icns into resources/ (run by hand when the design changes)."""

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


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    big = draw()
    big.resize((256, 256), Image.Resampling.LANCZOS).save(OUT / "icon.png")
    big.save(OUT / "icon.ico", sizes=[(16, 16), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])
    big.save(OUT / "icon.icns")
    print("wrote", sorted(p.name for p in OUT.glob("icon.*")))
