"""open_clip's eval transform on a whole batch of crops as tensor ops (on the model's device).

open_clip preprocesses one PIL image at a time (Resize, CenterCrop, RGB, ToTensor, Normalize); on the
extraction's crops that per-crop work took more time than the model (issue 25). `ClipInput` does the
normalisation as one fused tensor op per batch on the model's device (uint8 goes to the GPU, 4x less to
copy than float), and the resize + centre crop:
- on a CUDA device, as one batched antialiased resize on the GPU (torchvision; within 3 uint8 levels of
  PIL, 0.2 level on average);
- on the CPU, per crop with PIL's SIMD resize, which measured 2-4x faster there than torchvision's
  batched tensor resize and gives the reference pixels exactly (`tensor_resize=True` forces the batch op).
`geometric` stops before the normalisation (the `face_crops` rows), so `clip` and `face_crops` share it
and the tower on stored crops reproduces the `clip` store. A transform with a step this does not know
resizes per crop with its own PIL steps (`reference` is the whole per-crop transform, for tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: importing this module needs no torch
    import torch

KNOWN = {"Resize", "CenterCrop", "MaybeConvertMode", "MaybeToTensor", "ToTensor", "Normalize"}


class ClipInput:
    def __init__(self, preprocess: Any, tensor_resize: bool | None = None) -> None:
        """`tensor_resize`: None = on CUDA devices only."""
        from extract.models import clip_preprocess_parts

        self.preprocess = preprocess
        self.geometric_pil, self.mean, self.std = clip_preprocess_parts(preprocess)
        steps = list(preprocess.transforms)
        names = {type(t).__name__ for t in steps}
        self.resize = next((t for t in steps if type(t).__name__ == "Resize"), None)
        self.crop = next((t for t in steps if type(t).__name__ == "CenterCrop"), None)
        self.batched = names <= KNOWN and self.resize is not None and self.crop is not None
        self.tensor_resize = tensor_resize

    def geometric(self, crops: np.ndarray, device: str = "cpu") -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, S, S) uint8 on `device`: resize and centre crop."""
        import torch
        from torchvision.transforms import functional as F

        on_gpu = str(device).startswith("cuda")
        if not self.batched or not (on_gpu if self.tensor_resize is None else self.tensor_resize):
            from PIL import Image

            out = np.stack([np.asarray(self.geometric_pil(Image.fromarray(c)), dtype=np.uint8) for c in crops])
            return torch.from_numpy(out).permute(0, 3, 1, 2).to(device)
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2)
        x = F.resize(x, self.resize.size, self.resize.interpolation, self.resize.max_size, antialias=True)
        return F.center_crop(x, list(self.crop.size))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) uint8 -> float32 normalised
        """(x / 255 - mean) / std as one scale and one shift in place (two passes over the batch)."""
        import torch

        mean = torch.tensor(self.mean, dtype=torch.float64)
        std = torch.tensor(self.std, dtype=torch.float64)
        scale = (1.0 / (255.0 * std)).float().to(pixels.device).view(1, 3, 1, 1)
        shift = (mean / std).float().to(pixels.device).view(1, 3, 1, 1)
        return pixels.float().mul_(scale).sub_(shift)

    def __call__(self, crops: np.ndarray, device: str = "cpu") -> torch.Tensor:
        """(B, H, W, 3) uint8 crops -> (B, 3, S, S) float32 model input on `device`."""
        return self.normalize(self.geometric(crops, device))

    def reference(self, crops: np.ndarray) -> torch.Tensor:
        """The per-crop PIL transform open_clip defines (what the batched path must equal)."""
        import torch
        from PIL import Image

        return torch.stack([self.preprocess(Image.fromarray(c)) for c in crops])
