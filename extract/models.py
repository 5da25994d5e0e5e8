"""Model references per profile, and one loading function per model family.

A reference is a string: an open_clip `NAME:PRETRAINED` (tag such as `openai`, or a weights file), a hub id,
a local folder or file. Profile `full` resolves to the real reference; profile `tiny` resolves to a small
randomly initialised model of the same class, built once under `<models_dir>/tiny/<family>/` and then
loaded back through the very same loading function. A user with the real weights gets the real model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelFamily:
    name: str
    full_ref: str | None  # None: the user must give one (e.g. face weights)
    build_tiny: Callable[[Path], str] | None  # writes a small model into a folder, returns its reference
    load: Callable[..., Any]


FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    FAMILIES[family.name] = family
    return family


def resolve_model_ref(family: str, profile: str, models_dir: Path) -> str:
    """`full` -> the family's real reference; `tiny` -> the local tiny model (built on first use)."""
    fam = FAMILIES[family]
    if profile == "full":
        if fam.full_ref is None:
            raise ValueError(f"no default model for family {family!r}: give a reference")
        return fam.full_ref
    if fam.build_tiny is None:
        raise ValueError(f"family {family!r} has no tiny model")
    folder = (Path(models_dir) / "tiny" / family).resolve()
    ref_file = folder / "REF"
    with _LOCK:
        if not ref_file.is_file():
            tmp = folder.with_name(f".{family}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            ref = fam.build_tiny(tmp)
            (tmp / "REF").write_text(ref.replace(str(tmp), str(folder)))
            try:
                tmp.rename(folder)  # atomic: another process may have won the race
                log.info("built tiny %s model in %s", family, folder)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
    return ref_file.read_text().strip()


def _hash_file(path: Path, h: "hashlib._Hash") -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)


def path_digest(path: Path) -> str:
    """sha256 (16 hex) of a file, or of every file in a folder (names and contents)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file() and q.name != "REF"):
            h.update(str(p.relative_to(path)).encode())
            _hash_file(p, h)
    else:
        _hash_file(path, h)
    return h.hexdigest()[:16]


def weights_digest(ref: str) -> str:
    """Digest of the weights a reference names: file contents for local files/folders, else the tag."""
    for candidate in (ref, ref.split(":", 1)[-1]):
        if candidate and Path(candidate).exists():
            return path_digest(Path(candidate))
    parts = ref.split(":", 1)[-1].split("@")  # wavlm_ser:SER@BASE: both parts, when local
    if len(parts) > 1 and all(Path(p).exists() for p in parts):
        return path_digest(Path(parts[0])) + path_digest(Path(parts[1]))[:8]
    return f"ref:{ref}"


# ---- open_clip --------------------------------------------------------------------------------------
TINY_CLIP_NAME = "affcache-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


OPEN_CLIP_DIR_CONFIG = "open_clip_config.json"  # open_clip's local-dir format (config + safetensors)


def split_clip_ref(ref: str) -> tuple[str, str | None]:
    """`NAME:PRETRAINED` -> (NAME, PRETRAINED); `local-dir:...`/`hf-hub:...` are passed whole, and so is a
    folder in open_clip's local-dir format (e.g. a fine-tuned run's `RUN/backbone`), as `local-dir:FOLDER`."""
    if ref.startswith(("local-dir:", "hf-hub:")):
        return ref, None
    if (Path(ref) / OPEN_CLIP_DIR_CONFIG).is_file():
        return f"local-dir:{ref}", None
    name, _, pretrained = ref.partition(":")
    return name, pretrained or None


def load_open_clip(ref: str, device: str = "cpu") -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer) for an open_clip reference, in eval mode on `device`.

    `ViT-B-16:openai` loads the real model (weights from open_clip's cache or download). When
    PRETRAINED is a file whose folder holds `<NAME>.json`, that model config is registered first
    (`open_clip.add_model_config`), so a locally saved model of any config loads the same way.
    """
    import open_clip

    name, pretrained = split_clip_ref(ref)
    if pretrained and Path(pretrained).is_file():
        config = Path(pretrained).parent / f"{name}.json"
        if config.is_file() and name not in open_clip.list_models():
            open_clip.add_model_config(config)
    with _quiet_root_logger():  # open_clip logs every step at INFO on the root logger
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(name)
    model.eval()
    log.info("open_clip model %s loaded (%s)", name, pretrained or "no weights")
    return model, preprocess, tokenizer


def region_text_prototypes(model: Any, tokenizer: Any, device: str = "cpu") -> "np.ndarray":
    """(9, D) text prototypes of the VA regions (`cache.regions`): each region's prompts encoded by the
    CLIP text tower, L2-normalised, averaged, normalised again; float32, valence-major."""
    import numpy as np
    import torch

    from cache.regions import region_prompts

    prompts, _ = region_prompts()
    flat = [p for group in prompts for p in group]
    with torch.inference_mode():
        text = model.encode_text(tokenizer(flat).to(device)).float()
        text = torch.nn.functional.normalize(text, dim=-1).reshape(len(prompts), len(prompts[0]), -1)
        return torch.nn.functional.normalize(text.mean(1), dim=-1).cpu().numpy().astype(np.float32)


def clip_model_name(ref: str) -> str:
    """The architecture a reference names (`ViT-B-16`; a local-dir folder says it in its config)."""
    name, _ = split_clip_ref(ref)
    if name.startswith("local-dir:"):
        folder = Path(name.removeprefix("local-dir:"))
        config = json.loads((folder / OPEN_CLIP_DIR_CONFIG).read_text(encoding="utf-8"))
        return str(config.get("model_name") or folder.name)
    return name


def clip_preprocess_parts(preprocess: Any) -> tuple[Any, list[float], list[float]]:
    """Split open_clip's eval transform into its geometric part (PIL -> PIL: resize, crop, RGB) and the
    normalisation that follows ToTensor (mean, std), so crops can be stored as uint8 at the model's input
    size and normalised later exactly as the whole transform would."""
    from torchvision import transforms as T

    steps = list(preprocess.transforms)
    cut = next(i for i, t in enumerate(steps) if isinstance(t, T.ToTensor))
    norm = next(t for t in steps[cut:] if isinstance(t, T.Normalize))
    return T.Compose(steps[:cut]), [float(m) for m in norm.mean], [float(s) for s in norm.std]


def clip_input_spec(model: Any, ref: str, preprocess: Any) -> dict[str, Any]:
    """What a face crop made for this CLIP must match: architecture, input size and normalisation."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", model.visual.image_size)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    _, mean, std = clip_preprocess_parts(preprocess)
    return {
        "model": clip_model_name(ref), "image_size": size, "mean": mean, "std": std,
        "interpolation": str(cfg.get("interpolation", "bicubic")), "resize_mode": str(cfg.get("resize_mode", "shortest")),
    }


def save_open_clip(model: Any, ref: str, folder: Path) -> str:
    """Write a CLIP in open_clip's local-dir format (config + `open_clip_model.safetensors`), loadable
    by `load_open_clip(folder)`; returns that reference."""
    import open_clip
    from safetensors.torch import save_file

    name = clip_model_name(ref)
    base, _ = split_clip_ref(ref)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = open_clip.get_model_config(base if base.startswith("local-dir:") else name)
    spec = open_clip.get_model_preprocess_cfg(model)
    config = {"model_cfg": model_cfg, "preprocess_cfg": dict(spec), "model_name": name}
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    (folder / OPEN_CLIP_DIR_CONFIG).write_text(json.dumps(config, indent=1, default=str), encoding="utf-8")
    return str(folder)


class _quiet_root_logger:
    """open_clip logs on the root logger: every step at INFO, and a failed download at ERROR just before it
    raises the same text (which the caller reports in one line), so both stay out."""

    def __enter__(self) -> None:
        self._level = logging.getLogger().level
        logging.getLogger().setLevel(max(self._level, logging.ERROR + 1))

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().setLevel(self._level)


def build_tiny_open_clip(folder: Path) -> str:
    """A 2-layer random CLIP of the tiny config: config json + state dict, loadable by `load_open_clip`."""
    import open_clip
    import torch

    config = folder / f"{TINY_CLIP_NAME}.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG, indent=1))
    if TINY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(config)
    torch.manual_seed(0)
    with _quiet_root_logger():
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    weights = folder / "open_clip_model.pt"
    torch.save(model.state_dict(), weights)
    return f"{TINY_CLIP_NAME}:{weights}"


register_family(ModelFamily("open_clip", "ViT-B-16:openai", build_tiny_open_clip, load_open_clip))


# ---- ultralytics YOLO (face weights) --------------------------------------------------------------
def ultralytics_offline() -> None:
    """Make ultralytics work without network: YOLO_OFFLINE, a writable config dir, a local font."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    config_dir = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(Path("artifacts/ultralytics").resolve())))
    font = config_dir / "Ultralytics" / "Arial.ttf"
    if not font.is_file():
        try:
            import matplotlib

            source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
            font.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, font)
        except Exception as err:  # only drawing needs the font
            log.debug("no font for ultralytics: %s", err)


def load_yolo(ref: str, device: str = "cpu") -> Any:
    """An ultralytics YOLO model from a weights file (e.g. a YOLOv8 face model)."""
    ultralytics_offline()
    from ultralytics import YOLO

    if not Path(ref).is_file():
        raise FileNotFoundError(f"face weights not found: {ref}")
    return YOLO(str(ref), task="detect")


def build_tiny_yolo(folder: Path) -> str:
    """A random 1-class ('face') YOLOv8n saved as a checkpoint, loadable by `load_yolo`."""
    ultralytics_offline()
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml", task="detect")
    from ultralytics.nn.tasks import DetectionModel

    model.model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    model.model.names = {0: "face"}
    path = folder / "yolo-face-tiny.pt"
    model.save(str(path))
    return str(path)


register_family(ModelFamily("yolo_face", None, build_tiny_yolo, load_yolo))


# what a failed load says when the weights are not on this machine and cannot be fetched (offline)
_NOT_HERE = ("offline", "couldn't connect", "cannot connect", "connection", "localentrynotfound", "not found in cache",
             "can't load", "cannot find the requested files", "failed to download", "name resolution", "unreachable")


def hub_cache_dir() -> str:
    """Where Hugging Face (and open_clip's hub downloads) look for weights: HF_HUB_CACHE / HF_HOME/hub."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def missing_weights_line(feature: str, ref: str, err: BaseException) -> str | None:
    """One line for weights that are neither local nor downloadable: the model id, the folder searched and
    the flag that gives a local copy; None for any other failure (a local path, a broken file)."""
    if not ref or ref == "-" or Path(ref.split(":")[0]).exists():
        return None
    text = f"{type(err).__name__} {err}".lower()
    if not any(marker in text for marker in _NOT_HERE):
        return None
    return (f"{feature}: no weights for '{ref}' on this machine (looked in {hub_cache_dir()}) and none could be "
            f"downloaded; download them once online, or give a local copy: --model {feature}=PATH")
