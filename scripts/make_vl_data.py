"""Real pictures from registry packages (and rendered text) as vision-language datasets in our formats.

    python scripts/make_vl_data.py digits --out .cache/vl/digits   # 1,797 handwritten digits (scikit-learn)
    python scripts/make_vl_data.py photos --out .cache/vl/photos   # 14 photographs, cropped (scikit-image)
    python scripts/make_vl_data.py ocr --out .cache/vl/ocr         # strings rendered by Pillow, to read back

The packages' wheels are fetched with ``pip download --no-deps`` (nothing is installed) into
``--downloads`` and the files read straight from the archive; the data files are checked by SHA-256
(wheels differ by platform, their data does not). Each dataset directory gets ``images/`` and:

* ``train.jsonl``: SFT records, chat messages with an image part (``{"type": "image", "image": PATH}``);
* ``train_prompts.jsonl``: the training records' prompts with their ``answer`` (RL prompts, GRPO/PPO);
* ``eval.jsonl``: held-out records of the same form (loss and perplexity, ``erniekit eval --data``);
* ``eval_prompts.jsonl``: the held-out prompts with their ``answer`` (``erniekit eval --generation``,
  scored with ``eval.scorer=exact``).

Image paths are relative to the JSONL files, so a directory can be moved whole.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import string
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SKLEARN = ("scikit-learn==1.9.1", "scikit_learn-1.9.1-*.whl")
SKIMAGE = ("scikit-image==0.26.0", "scikit_image-0.26.0-*.whl")
DIGITS = (
    "sklearn/datasets/data/digits.csv.gz",
    "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
)
PHOTOS = {  # skimage/data member -> what it shows (files bundled in the wheel, not downloaded on demand)
    "astronaut.png": "an astronaut",
    "camera.png": "a cameraman",
    "chelsea.png": "a cat",
    "coffee.png": "a cup of coffee",
    "coins.png": "coins",
    "horse.png": "a horse",
    "hubble_deep_field.jpg": "galaxies",
    "moon.png": "the moon",
    "page.png": "a page of text",
    "rocket.jpg": "a rocket",
    "motorcycle_left.png": "a motorcycle",
    "retina.jpg": "a retina",
    "brick.png": "a brick wall",
    "grass.png": "grass",
}


def wheel(requirement: tuple[str, str], into: Path) -> Path:
    """The package's wheel for this platform, downloaded once (pip, the package index only)."""
    into.mkdir(parents=True, exist_ok=True)
    found = sorted(into.glob(requirement[1]))
    if not found:
        print(f"downloading {requirement[0]} ...", flush=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "-d",
            str(into),
            requirement[0],
        ]
        subprocess.run(cmd, check=True)
        found = sorted(into.glob(requirement[1]))
    return found[-1]


def member(archive: Path, name: str, digest: str | None = None) -> bytes:
    with zipfile.ZipFile(archive) as z:
        data = z.read(name)
    if digest is not None and sha256_bytes(data) != digest:
        raise SystemExit(f"{archive}:{name}: SHA-256 mismatch (expected {digest})")
    return data


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def record(image: str, question: str, answer: str) -> dict:
    parts = [{"type": "image", "image": image}, {"type": "text", "text": question}]
    return {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": answer}]}


def write(out: Path, rows: list[tuple[str, str, str]], holdout: int, seed: int, shuffle: bool = True) -> None:
    """train / eval / eval_prompts from (image, question, answer) rows, holding out ``holdout`` (a random
    choice, or the first ``holdout`` rows without ``shuffle``)."""
    order = list(range(len(rows)))
    if shuffle:
        random.Random(seed).shuffle(order)
    held, train = order[:holdout], order[holdout:]

    def dump(name: str, items) -> None:
        (out / name).write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items))

    def prompt(i: int) -> dict:
        return {"prompt": record(*rows[i])["messages"][:1], "answer": rows[i][2]}

    dump("train.jsonl", (record(*rows[i]) for i in train))
    dump("train_prompts.jsonl", (prompt(i) for i in train))
    dump("eval.jsonl", (record(*rows[i]) for i in held))
    dump("eval_prompts.jsonl", (prompt(i) for i in held))
    print(f"{out}: {len(train)} training, {len(held)} held-out records")


def digits(out: Path, downloads: Path, holdout: int, seed: int) -> None:
    from PIL import Image

    table = np.loadtxt(io.BytesIO(gzip.decompress(member(wheel(SKLEARN, downloads), *DIGITS))), delimiter=",")
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, row in enumerate(table):
        pixels, label = row[:64].reshape(8, 8), int(row[64])
        name = f"images/digit_{i:04d}.png"
        Image.fromarray(np.round(pixels * 255 / 16).astype(np.uint8), "L").save(out / name)
        rows.append((name, "Which digit is this?", str(label)))
    write(out, rows, holdout, seed)


def photos(out: Path, downloads: Path, per_photo: int, holdout: int, seed: int) -> None:
    """Random crops (a quarter to all of each side) of real photographs: which one is it?"""
    from PIL import Image

    archive = wheel(SKIMAGE, downloads)
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, caption in PHOTOS.items():
        photo = Image.open(io.BytesIO(member(archive, f"skimage/data/{name}"))).convert("RGB")
        w, h = photo.size
        for k in range(per_photo):
            cw, ch = rng.randint(w // 4, w), rng.randint(h // 4, h)
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            crop = photo.crop((x, y, x + cw, y + ch))
            crop.thumbnail((112, 112))
            path = f"images/{Path(name).stem}_{k:03d}.png"
            crop.save(out / path)
            rows.append((path, "What is in this picture?", caption.capitalize() + "."))
    write(out, rows, holdout, seed)


def ocr(
    out: Path, n: int, length: int, holdout: int, seed: int, alphabet: str, jitter: int, size: int = 24
) -> None:
    """Strings drawn in Pillow's default font on small canvases, shifted by up to ``jitter`` pixels:
    read them back. The held-out strings are distinct and none is ever drawn for training, so a model
    scores on them only by reading the characters, not by recalling a string it has seen."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    font = ImageFont.load_default(size=size)
    alphabet = {"digits": string.digits, "alnum": string.digits + string.ascii_uppercase}[alphabet]
    (out / "images").mkdir(parents=True, exist_ok=True)
    if holdout > len(alphabet) ** length // 2:
        raise SystemExit(f"--holdout {holdout}: {length}-character strings are too few to hold out that many")
    rows, held = [], set()
    for i in range(n):
        word = "".join(rng.choice(alphabet) for _ in range(length))
        while word in held:  # the held-out rows come first, each a new string; training never sees them
            word = "".join(rng.choice(alphabet) for _ in range(length))
        if i < holdout:
            held.add(word)
        img = Image.new("L", (size * length // 2 + 2 * size, 2 * size), 255)
        x, y = size // 2 + rng.randint(0, jitter), size // 4 + rng.randint(0, jitter)
        ImageDraw.Draw(img).text((x, y), word, fill=0, font=font)
        path = f"images/text_{i:05d}.png"
        img.save(out / path)
        rows.append((path, "OCR:", word))
    write(out, rows, holdout, seed, shuffle=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["digits", "photos", "ocr"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--downloads", type=Path, default=ROOT / ".cache" / "downloads")
    parser.add_argument("--holdout", type=int, default=297, help="records held out for evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=3000, help="ocr: strings to render")
    parser.add_argument("--length", type=int, default=3, help="ocr: characters per string")
    parser.add_argument(
        "--alphabet", choices=["digits", "alnum"], default="digits", help="ocr: characters used"
    )
    parser.add_argument("--jitter", type=int, default=2, help="ocr: largest random shift in pixels")
    parser.add_argument("--per-photo", type=int, default=60, help="photos: crops of each photograph")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dataset == "digits":
        digits(args.out, args.downloads, args.holdout, args.seed)
    elif args.dataset == "photos":
        photos(args.out, args.downloads, args.per_photo, args.holdout, args.seed)
    else:
        ocr(args.out, args.n, args.length, args.holdout, args.seed, args.alphabet, args.jitter)


if __name__ == "__main__":
    main()
