"""Checkpoints that carry everything needed to continue a run bit for bit: model, optimiser,
scheduler, loop counters and every RNG state.

Everything in a checkpoint is a type `torch.load(weights_only=True)` accepts (tensors, numbers, strings,
lists, dicts): the numpy and Python RNG states are stored as tensors. So a checkpoint is never unpickled
with arbitrary code; checkpoints written before (numpy arrays inside) load with numpy's array types
allowed and nothing else."""

from __future__ import annotations

import io
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)
    python_state = state["python"]
    if isinstance(python_state, dict):
        python_state = (python_state["version"], tuple(int(x) for x in python_state["state"].tolist()), python_state["gauss_next"])
    random.setstate(python_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, overwritten, not a checkpoint); names the file."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash, or a full disk, never leaves half a checkpoint under the final name
    (the previous one stays) nor a partial temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    buffer = io.BytesIO()  # serialised in memory, written by Python: a full disk raises a plain OSError
    torch.save(state, buffer)
    try:
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, f"cannot write checkpoint {path}: {err.strerror or err}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True (a checkpoint written before RNG states were tensors also needs
    numpy's array reconstruction allowed, and only that). A file that cannot be read, or that asks the
    unpickler for anything else (code), is a CheckpointError naming the file."""
    path = Path(path)
    try:
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            with torch.serialization.safe_globals(_numpy_globals()):
                state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch/pickle/zip raise many types for a damaged file
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read ({reason}): damaged, not a checkpoint, or not weights-only") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path} holds no model state: not an affcache checkpoint")
    return state


def _numpy_globals() -> list[Any]:
    """What a pickled numpy RNG state (an ndarray of uint32) refers to."""
    from numpy.dtypes import UInt32DType

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, UInt32DType]
