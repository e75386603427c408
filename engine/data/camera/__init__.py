"""Faces as cameras make them: a camera model (spec.py), its degradation chain on batches (chain.py), JPEG in
tensor maths (jpeg.py)."""

from engine.data.camera.chain import degrade, degrade_named, draw, image_generator
from engine.data.camera.spec import (DEFAULT_SPEC, RESIZE_METHODS, SPEC_HELP, Camera, camera_from_config, parse_spec,
                                     spec_text)

METHOD = ("HR -> antialiased bilinear resize to 2x the VLR size -> [second pass: blur, noise, JPEG] -> Gaussian "
          "(iso/anisotropic) x motion blur (FFT transfer functions, sigma and length in VLR pixels) -> downsample "
          "(bicubic/bilinear antialiased, or area, drawn per image) -> Gaussian + Poisson (normal approximation) "
          "noise in 8-bit levels -> 8-bit -> JPEG (libjpeg's DCT quantisation in tensor maths); every value drawn "
          "per image (engine/data/camera)")

__all__ = ["Camera", "DEFAULT_SPEC", "METHOD", "RESIZE_METHODS", "SPEC_HELP", "camera_from_config", "degrade",
           "degrade_named", "draw", "image_generator", "parse_spec", "spec_text"]
