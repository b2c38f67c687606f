"""Camera RAW test files made at test time: a picture's pixels as a sensor's Bayer mosaic in a DNG.

pidng (MIT, in the test extra) writes the DNG; lookalike reads it back
through rawpy (LibRaw), as it reads a camera's DNG, CR2, NEF or ARW.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: XYZ (D65) -> linear sRGB: the DNG's colour matrix, so LibRaw renders the mosaic as sRGB
XYZ_TO_SRGB = (3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570)


def write_dng(picture: Path | np.ndarray, path: Path) -> Path:
    """``picture`` (a file or an RGB array) sampled as an RGGB mosaic, 12 bits, into ``path`` (.dng)."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, Orientation, PhotometricInterpretation

    rgb = np.asarray(Image.open(picture).convert("RGB")) if isinstance(picture, Path) else picture
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    rgb = rgb[:h, :w].astype(np.uint16) * 16
    mosaic = np.empty((h, w), np.uint16)
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    tags = DNGTags()
    for tag, value in ((Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
                       (Tag.Orientation, Orientation.Horizontal),
                       (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
                       (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16), (Tag.CFARepeatPatternDim, [2, 2]),
                       (Tag.CFAPattern, CFAPattern.RGGB), (Tag.BlackLevel, 0), (Tag.WhiteLevel, 4095),
                       (Tag.ColorMatrix1, [[round(v * 10000), 10000] for v in XYZ_TO_SRGB]),
                       (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
                       (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]), (Tag.Make, "lookalike"), (Tag.Model, "test"),
                       (Tag.DNGVersion, DNGVersion.V1_4), (Tag.DNGBackwardVersion, DNGVersion.V1_2)):
        tags.set(tag, value)
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    assert path.suffix == ".dng"
    writer.convert(mosaic, filename=str(path.with_suffix("")))
    return path
