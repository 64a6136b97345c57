"""Data: image I/O (:mod:`.io`), MATLAB-exact resizing (:mod:`.resize`), colour (:mod:`.color`),
benchmark sets (:mod:`.benchmark`) and training patches (:mod:`.training`).

Only numpy-level modules are imported here; torch is imported where it is used.
"""

from __future__ import annotations

from .io import image_to_tensor, list_images, read_image, tensor_to_image, write_image

__all__ = ["image_to_tensor", "list_images", "read_image", "tensor_to_image", "write_image"]
