"""open_clip's eval transform on a whole batch of crops as tensor ops (on the model's device).

open_clip preprocesses one PIL image at a time (Resize, CenterCrop, RGB, ToTensor, Normalize); on the
extraction's crops that per-crop work took more time than the model (issue 25). `ClipInput` does the
same steps on a (B, H, W, 3) uint8 batch: one antialiased resize with the transform's interpolation
(torchvision's uint8 path: within 3 levels of PIL, 0.2 level on average), one centre crop, then the
normalisation as one tensor op. `geometric` stops before the normalisation (the `face_crops` rows), so
`clip` and `face_crops` share it and the tower on stored crops reproduces the `clip` store. A transform
with a step this does not know falls back to the per-crop PIL path (`reference`), which tests compare
against.
"""

from __future__ import annotations

from typing import Any

import numpy as np

KNOWN = {"Resize", "CenterCrop", "MaybeConvertMode", "MaybeToTensor", "ToTensor", "Normalize"}


class ClipInput:
    def __init__(self, preprocess: Any) -> None:
        from extract.models import clip_preprocess_parts

        self.preprocess = preprocess
        self.geometric_pil, self.mean, self.std = clip_preprocess_parts(preprocess)
        steps = list(preprocess.transforms)
        names = {type(t).__name__ for t in steps}
        self.resize = next((t for t in steps if type(t).__name__ == "Resize"), None)
        self.crop = next((t for t in steps if type(t).__name__ == "CenterCrop"), None)
        self.batched = names <= KNOWN and self.resize is not None and self.crop is not None

    def geometric(self, crops: np.ndarray, device: str = "cpu"):  # -> torch.Tensor
        """(B, H, W, 3) uint8 -> (B, 3, S, S) uint8 on `device`: resize and centre crop."""
        import torch
        from torchvision.transforms import functional as F

        if not self.batched:
            from PIL import Image

            out = np.stack([np.asarray(self.geometric_pil(Image.fromarray(c)), dtype=np.uint8) for c in crops])
            return torch.from_numpy(out).permute(0, 3, 1, 2).to(device)
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2)
        x = F.resize(x, self.resize.size, self.resize.interpolation, self.resize.max_size, antialias=True)
        return F.center_crop(x, list(self.crop.size))

    def normalize(self, pixels):  # (B, 3, S, S) uint8 tensor -> float32 normalised
        import torch

        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1)
        return (pixels.float() / 255.0 - mean) / std

    def __call__(self, crops: np.ndarray, device: str = "cpu"):  # -> torch.Tensor
        """(B, H, W, 3) uint8 crops -> (B, 3, S, S) float32 model input on `device`."""
        return self.normalize(self.geometric(crops, device))

    def reference(self, crops: np.ndarray):  # -> torch.Tensor
        """The per-crop PIL transform open_clip defines (what the batched path must equal)."""
        import torch
        from PIL import Image

        return torch.stack([self.preprocess(Image.fromarray(c)) for c in crops])
