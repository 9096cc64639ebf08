"""Scans and photos of real invoices, made from PDFs of the set (public scanned invoices with a
licence are scarce): each page is rendered with pdftoppm and degraded like an office scanner
(grey, slight skew, blur, noise, JPEG, saved as an image-only PDF) or a phone photo (perspective,
rotation, uneven light, noise, JPEG). Gold is the source's gold, re-checked against the text of
the pages kept (a photo keeps page 1 only). Deterministic: a fixed seed per document.

    .venv/bin/python datasets/real-invoices/degrade.py     # after build.py; appends to manifest.csv
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build  # noqa: E402

#: (source id, kind): seven scans (image-only PDFs) and seven phone photos (JPEG, first page).
DERIVED = (
    ("de-konik-acme-42", "scan"), ("de-hetzner-r0005532486", "scan"), ("fr-fnfe-facture-fr", "scan"),
    ("de-intarsys-oepnv", "scan"), ("en-oca-akretion-vt-2022-0001", "scan"), ("de-mustang-507", "scan"),
    ("de-intarsys-physiotherapeut", "scan"),
    ("de-mustang-kraxi", "photo"), ("de-mustang-499", "photo"), ("fr-fnfe-avoir", "photo"),
    ("en-oca-vendor-bill-2022-0002", "photo"), ("es-oca-tecnativa-inv-2024-00005", "photo"),
    ("de-mustang-503", "photo"), ("fr-akretion-f20260023", "photo"),
)


def render(pdf: Path, dpi: int, first_only: bool) -> list:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["pdftoppm", "-r", str(dpi), "-png"] + (["-f", "1", "-l", "1"] if first_only else []) + [str(pdf), f"{tmp}/p"]
        subprocess.run(cmd, check=True)
        return [Image.open(p).convert("RGB").copy() for p in sorted(Path(tmp).glob("p*.png"))]


def _noise(img, rng: random.Random, sigma: float):
    import numpy as np

    arr = np.asarray(img).astype("float32")
    arr += np.random.default_rng(rng.randrange(2**32)).normal(0, sigma, arr.shape)
    from PIL import Image

    return Image.fromarray(arr.clip(0, 255).astype("uint8"))


def _jpeg(img, quality: int):
    from PIL import Image

    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).copy()


def scan(img, rng: random.Random):
    from PIL import ImageFilter

    img = img.convert("L").rotate(rng.uniform(-1.5, 1.5), expand=True, fillcolor=245)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.8)))
    return _jpeg(_noise(img, rng, 6.0), 55).convert("L")


def photo(img, rng: random.Random):
    import numpy as np
    from PIL import Image, ImageFilter

    w, h = img.size
    pad = int(0.06 * w)
    canvas = Image.new("RGB", (w + 2 * pad, h + 2 * pad), (96, 84, 70))  # a desk around the sheet
    canvas.paste(img, (pad, pad))
    W, H = canvas.size
    j = lambda: rng.uniform(0, 0.035) * W  # noqa: E731
    quad = (j(), j(), j(), H - j(), W - j(), H - j(), W - j(), j())  # corners seen at an angle
    canvas = canvas.transform((W, H), Image.Transform.QUAD, quad, Image.Resampling.BICUBIC)
    canvas = canvas.rotate(rng.uniform(-3, 3), expand=False, fillcolor=(96, 84, 70))
    yy, xx = np.mgrid[0:H, 0:W]
    light = 0.8 + 0.25 * (xx / W) * (1 - 0.5 * yy / H)  # a lamp on one side
    arr = (np.asarray(canvas).astype("float32") * light[..., None] * np.array([1.0, 0.97, 0.9])).clip(0, 255)
    canvas = Image.fromarray(arr.astype("uint8")).filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.0)))
    return _jpeg(_noise(canvas, rng, 5.0), 70)


def main() -> int:
    rows = [r for r in build.read_manifest() if not r["derived_from"]]
    by_id = {r["id"]: r for r in rows}
    out = []
    for source_id, kind in DERIVED:
        src = by_id[source_id]
        rng = random.Random(f"{source_id}:{kind}")
        pages = render(HERE / src["file"], 150 if kind == "scan" else 130, first_only=kind == "photo")
        doc_id = f"{source_id}-{kind}"
        if kind == "scan":
            imgs = [scan(p, rng) for p in pages]
            buf = io.BytesIO()
            imgs[0].save(buf, "PDF", resolution=150.0, save_all=True, append_images=imgs[1:])
            name, data = f"files/{doc_id}.pdf", buf.getvalue()
        else:
            buf = io.BytesIO()
            photo(pages[0], rng).save(buf, "JPEG", quality=70)
            name, data = f"files/{doc_id}.jpg", buf.getvalue()
        (HERE / name).write_bytes(data)
        source_gold = json.loads((HERE / "gold" / f"{source_id}.json").read_text())
        kept_text = build.page_text((HERE / src["file"]).read_bytes())
        if kind == "photo":
            kept_text = kept_text.split(build_page_break())[0]
        record = build.gold_record(doc_id, source_gold["fields"], kept_text,
                                   {k: v for k, v in source_gold.items() if k not in ("id", "fields", "unprinted")})
        (HERE / "gold" / f"{doc_id}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        out.append({**src, "id": doc_id, "file": name, "sha256": build.sha256(data), "kind": kind,
                    "derived_from": source_id})
    build.write_manifest(rows + out)
    print(f"{len(out)} scans and photos written")
    return 0


def build_page_break() -> str:
    from invoicechain.pdf import PAGE_BREAK

    return PAGE_BREAK


if __name__ == "__main__":
    raise SystemExit(main())
