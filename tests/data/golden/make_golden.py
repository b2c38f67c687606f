"""Write the golden vectors of the bundled cat photo for the float handcrafted extractors.

Run from the repository root after a deliberate change to one of them (and
bump that extractor's ``version`` if stored indexes would change):

    python tests/data/golden/make_golden.py

Writes ``tests/data/golden/<name>_cat.npy`` (``(dim,) float32``, default
settings) for each name below; tests/test_extractors_handcrafted.py compares
against them. The hashes are pinned as hex strings in that test instead.
"""

from pathlib import Path

import numpy as np

from lookalike.decode import decode_file
from lookalike.extractors import create

HERE = Path(__file__).resolve().parent
CAT = HERE.parents[2] / "lookalike" / "demo" / "images" / "cat.jpg"
NAMES = ["color", "edges", "hog"]


def main() -> None:
    pixels = decode_file(CAT).pixels
    for name in NAMES:
        vector = create(name).embed([pixels])[0].astype(np.float32)
        out = HERE / f"{name}_cat.npy"
        np.save(out, vector)
        print(f"{out.relative_to(HERE.parents[2])}: {vector.shape} {vector.dtype}")


if __name__ == "__main__":
    main()
