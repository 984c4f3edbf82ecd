#!/usr/bin/env python3
"""Makes the album-photo benchmark set at concrexit's real size from the committed originals.

Since April 2024 concrexit sends each album photo to face detection as its `photo_large`
thumbnail (website/thaliawebsite/settings.py, THUMBNAILS["SIZES"]["photo_large"]), made by
utils.media.processors.thumbnail in its default "contain" mode:

    ImageOps.contain(image, (1920, 1920), Image.Resampling.LANCZOS), saved as WebP, quality 90

`ImageOps.contain` scales to fit in both directions, so an original smaller than 1920x1920 is
scaled *up* until its longer side is 1920 (every committed original is). Before that, the
upload is stored as the photo's `source` (processors.process_upload): turned upright by its
EXIF orientation, shrunk to fit 8000x8000 (a no-op here) and converted to RGB; this script does
the same, but keeps the source in memory rather than re-encoding it as JPEG, so the pixels
differ slightly from concrexit's while the sizes are the same. Reference faces stay at the
`large` size (1200x900, cover-cropped: tests/fixtures/pkg/images/large).

Run with a Python that has Pillow (the reference environment of benches/side_by_side.py):

    /tmp/refenv/bin/python benches/make_photo_large.py

It writes tests/fixtures/pkg/images/photo_large/<name>.webp for the same nine originals as the
1200x900 set (the 112x112 face crop is left out of both).
"""

from pathlib import Path

from PIL import Image, ImageOps

CRATE = Path(__file__).resolve().parent.parent
ORIGINALS = CRATE / "tests/fixtures/pkg/images/orig"
OUT = CRATE / "tests/fixtures/pkg/images/photo_large"
NAMES = sorted(path.stem for path in (CRATE / "tests/fixtures/pkg/images/large").glob("*.webp"))


def source(path):
    """The upload as concrexit stores it: upright, within 8000x8000, RGB."""
    image = ImageOps.exif_transpose(Image.open(path))
    image.thumbnail((8000, 8000))
    return image.convert("RGB")


def photo_large(image):
    return ImageOps.contain(image, (1920, 1920), Image.Resampling.LANCZOS)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        [original] = ORIGINALS.glob(f"{name}.*")
        thumbnail = photo_large(source(original))
        target = OUT / f"{name}.webp"
        thumbnail.save(target, "WEBP", quality=90)
        print(f"{target.relative_to(CRATE)}: {thumbnail.width}x{thumbnail.height}")


if __name__ == "__main__":
    main()
