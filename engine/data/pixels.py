"""Any decoded image -> 8-bit RGB, scaling high-bit-depth greyscale instead of clipping it.

Pillow's ``convert("RGB")`` clips 16-bit greyscale (modes ``I;16*`` and ``I``) at 255, so a
16-bit PNG became an all-white face. Here 16-bit values are scaled by 255/65535; a 32-bit
integer image holding values beyond 16 bits and a float image outside [0, 1] have no agreed
scale and are refused (``ValueError``; callers turn it into a ``DataError`` naming the file).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def to_rgb8(image: Image.Image) -> Image.Image:
    """An ``RGB`` image with 8 bits per channel; greyscale, palette, alpha and CMYK are converted."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"a 32-bit integer image (values {values.min()}..{values.max()}); convert it to an 8- "
                             "or 16-bit PNG")
        # mode I holding only 0..255 is 8-bit data widened by a decoder (e.g. a PGM or TIFF); 16-bit otherwise
        scale = 255.0 / 65535.0 if image.mode in SIXTEEN_BIT_MODES or values.max(initial=0) > 255 else 1.0
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.size and (not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0):
            raise ValueError("a floating-point image with values outside [0, 1]; convert it to an 8- or 16-bit PNG")
        return Image.fromarray(np.rint(values * 255.0).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")
