"""Checkpoints: a trained model's weights (safetensors) with its config and metrics (JSON), written so
that a kill at any moment leaves the last complete checkpoint intact; resume and export.

A run directory holds `config.json`, `metrics.json` and `checkpoints/ckpt-NNNN/` (NNNN = epochs done).
A checkpoint folder is written under a hidden temporary name and renamed into place only when every
file in it is on disk, so the highest-numbered `ckpt-*` folder is always complete.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save as safetensors_bytes
from torch import nn

from cnnlab.heads import KERNEL_HEADS, empty_head
from cnnlab.paths import atomic_write_bytes, fsync_dir, process_alive

MODEL_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"
CONFIG_FILE = "config.json"
NO_MODEL = ("kept no whole model: Strategy III saves one only when its classifier reads the classifier's input, "
            "averaged (not an earlier stage's features, nor flattened ones)")
METRICS_FILE = "metrics.json"
CHECKPOINT_PATTERN = re.compile(r"ckpt-(\d{4,})")
EXPORT_FORMATS = ("onnx", "torchscript")
DIR_MODE = 0o755


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or does not fit its model."""


def atomic_write_json(path: Path, data) -> Path:
    """`atomic_write_bytes` for a JSON document."""
    return atomic_write_bytes(path, (json.dumps(data, indent=2, default=_json_default) + "\n").encode())


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def read_json(path: Path):
    """A JSON file's content; CheckpointError if it is missing or broken."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None


def state_dict_bytes(model: nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """A model's weights as safetensors bytes (shared tensors are stored once per name, contiguous)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return safetensors_bytes(state, metadata=metadata)


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint folder."""

    path: Path
    epoch: int
    config: dict
    metrics: dict

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def has_trainer_state(self) -> bool:
        return (self.path / TRAINER_FILE).is_file()


def save_checkpoint(run_dir: Path, epoch: int, model: nn.Module, config: dict, metrics: dict,
                    optimizer: torch.optim.Optimizer | None = None, keep: int = 1) -> Checkpoint:
    """Write `run_dir/checkpoints/ckpt-{epoch}` all-or-nothing and keep only the `keep - 1` newest others (a
    checkpoint of a later epoch is one this save replaces: a linear head trained again for fewer epochs)."""
    parent = Path(run_dir) / "checkpoints"
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / f"ckpt-{epoch:04d}"
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", dir=parent))
    replaced = parent / f"{staging.name}.replaced"  # the same epoch saved again: the old one is removed last
    try:
        staging.chmod(DIR_MODE)
        atomic_write_bytes(staging / MODEL_FILE, state_dict_bytes(model, {"epoch": str(epoch)}))
        atomic_write_json(staging / CONFIG_FILE, config)
        atomic_write_json(staging / METRICS_FILE, metrics)
        if optimizer is not None:
            buffer = io.BytesIO()
            torch.save({"optimizer": optimizer.state_dict(), "epoch": epoch,
                        "rng": torch.get_rng_state()}, buffer)
            atomic_write_bytes(staging / TRAINER_FILE, buffer.getvalue())
        if final.exists():
            final.rename(replaced)
        try:
            staging.rename(final)
        except OSError:
            if replaced.exists():
                replaced.rename(final)
            raise
        fsync_dir(parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)
    others = [folder for folder in _checkpoint_dirs(parent) if folder != final]
    for old in others[:max(0, len(others) - keep + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    _remove_stale_staging(parent)
    return Checkpoint(final, epoch, config, metrics)


def checkpoint_epoch(folder: Path | str) -> int | None:
    """The epochs done that a checkpoint folder's name says ('ckpt-0003': 3); None for another name."""
    found = CHECKPOINT_PATTERN.fullmatch(Path(folder).name)
    return int(found.group(1)) if found else None


def _checkpoint_dirs(parent: Path) -> list[Path]:
    if not parent.is_dir():
        return []
    found = [(epoch, p) for p in parent.iterdir() if (epoch := checkpoint_epoch(p)) is not None]
    return [p for _, p in sorted(found)]


def _remove_stale_staging(parent: Path) -> None:
    """Remove the staging folders that no live process is still writing: this process's (its saves are done) and
    those of processes gone; a checkpoint moved aside to be replaced, by a save killed before the new one was in
    place, goes back where it was."""
    for leftover in parent.glob(".ckpt-*"):
        _, name, owner, *_ = leftover.name.split(".") + ["", ""]
        if owner.isdigit() and int(owner) != os.getpid() and process_alive(int(owner)):
            continue
        final = parent / name
        if leftover.name.endswith(".replaced") and not final.exists():
            leftover.rename(final)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def latest_checkpoint(path: Path) -> Checkpoint | None:
    """The newest complete checkpoint under a run folder, or the checkpoint folder `path` itself; None if none."""
    path = Path(path)
    if (path / MODEL_FILE).is_file() and checkpoint_epoch(path) is not None:
        folder = path
    else:
        folders = _checkpoint_dirs(path / "checkpoints")
        if not folders:
            return None
        folder = folders[-1]
    return Checkpoint(folder, checkpoint_epoch(folder), read_json(folder / CONFIG_FILE),
                      read_json(folder / METRICS_FILE))


def require_checkpoint(path: Path) -> Checkpoint:
    """`latest_checkpoint`, or CheckpointError naming the path."""
    if not Path(path).exists():
        raise CheckpointError(f"{path} does not exist")
    checkpoint = latest_checkpoint(path)
    if checkpoint is None and (Path(path) / CONFIG_FILE).is_file():
        config = read_json(Path(path) / CONFIG_FILE)
        why = NO_MODEL if config.get("strategy") in ("extract", "probe") else "saved no checkpoint: it ended before " \
            "its first epoch did, and resuming it trains from the start"
        raise CheckpointError(f"run {Path(path).name} {why}")
    if checkpoint is None:
        raise CheckpointError(f"{path} holds no checkpoint (expected a run folder or a ckpt-NNNN folder)")
    return checkpoint


def load_checkpoint_weights(model: nn.Module, checkpoint: Checkpoint) -> nn.Module:
    """Load the checkpoint's weights into `model` (strict: every tensor must match)."""
    try:
        tensors = load_file(checkpoint.model_file)
    except FileNotFoundError:
        raise CheckpointError(f"{checkpoint.model_file} is missing: the checkpoint is incomplete") from None
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"{checkpoint.model_file} cannot be read (damaged or cut short): "
                              f"{str(error).splitlines()[0]}") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise CheckpointError(f"{checkpoint.model_file} does not fit the model: {str(error).splitlines()[0]}") from None
    return model


def load_trainer_state(checkpoint: Checkpoint, optimizer: torch.optim.Optimizer) -> None:
    """Restore the optimizer and the random-number state saved with the checkpoint.

    The optimizer keeps its own implementation (fused or not) and its state takes each parameter's memory
    layout, so a run saved on CUDA (channels_last, fused AdamW) resumes on CPU and the other way round: a
    fused step over mismatched layouts computes garbage on CPU and fails on CUDA."""
    state = torch.load(checkpoint.path / TRAINER_FILE, map_location="cpu", weights_only=True)
    saved = state["optimizer"]
    for group, current in zip(saved["param_groups"], optimizer.param_groups):
        group.update({key: current[key] for key in ("fused", "foreach") if key in current})
    optimizer.load_state_dict(saved)
    for param, values in optimizer.state.items():
        for key, value in values.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                values[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
    torch.set_rng_state(state["rng"])


def model_from_checkpoint(path: Path) -> tuple[nn.Module, Checkpoint]:
    """Rebuild the trained model from a run or checkpoint folder, in eval mode."""
    from cnnlab.naming import OWN_HEAD
    from cnnlab.registry import build_model, fit_head, get_spec

    checkpoint = require_checkpoint(path)
    config = checkpoint.config
    classes = len(config["classes"])
    model = fit_head(build_model(config["arch"], num_classes=classes), get_spec(config["arch"]),
                     config.get("head", OWN_HEAD), classes)
    if config.get("strategy") == "extract" and config.get("classifier") in KERNEL_HEADS:
        _fit_kernel_head(model, checkpoint, config["classifier"])
    return load_checkpoint_weights(model, checkpoint).eval(), checkpoint


def _classifier_state(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The saved tensors of the checkpoint's classifier, by their names inside it."""
    from cnnlab.registry import get_spec

    prefix = get_spec(checkpoint.config["arch"]).classifier + "."
    with safe_open(checkpoint.model_file, "pt") as saved:
        return {key[len(prefix):]: saved.get_tensor(key) for key in saved.keys() if key.startswith(prefix)}


def _kernel_head(checkpoint: Checkpoint, kind: str, state: dict[str, torch.Tensor]) -> nn.Module:
    try:
        return empty_head(kind, state)
    except KeyError as error:
        raise CheckpointError(f"{checkpoint.model_file} holds no {kind} head: {error} is missing") from None


def _fit_kernel_head(model: nn.Module, checkpoint: Checkpoint, kind: str) -> None:
    """Put a head of `kind` (an SVM or k-NN) shaped for the checkpoint's saved examples where the classifier is."""
    from cnnlab.registry import get_spec

    head = _kernel_head(checkpoint, kind, _classifier_state(checkpoint))
    model.set_submodule(get_spec(checkpoint.config["arch"]).classifier, head)


def head_from_checkpoint(checkpoint: Checkpoint) -> nn.Module:
    """The classifier a Strategy III checkpoint saved on its backbone, alone and in eval mode, the backbone not
    rebuilt: a linear layer (logistic regression, a linear head) or an SVM or k-NN head."""
    state, kind = _classifier_state(checkpoint), checkpoint.config.get("classifier")
    if kind in KERNEL_HEADS:
        head = _kernel_head(checkpoint, kind, state)
    elif "weight" in state:
        head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0], bias="bias" in state)
    else:
        raise CheckpointError(f"{checkpoint.model_file} holds no linear classifier")
    head.load_state_dict(state)
    return head.eval()


@dataclass(frozen=True)
class ExportResult:
    """An exported file and how far its outputs are from PyTorch's on the same input."""

    path: Path
    format: str
    max_abs_diff: float
    matches: bool
    largest_output: float = 1.0
    tolerance: float = 1e-4
    checked_on: str = "the sample photos"

    def verdict(self) -> str:
        """'its outputs match PyTorch's on 4 of the run's validation images (largest difference 3.9e-03 on outputs up
        to 45.2, a relative difference of 8.6e-05: within the 1e-04 allowed)'."""
        word = "match" if self.matches else "DO NOT match"
        relative = self.max_abs_diff / max(1.0, self.largest_output)
        return (f"its outputs {word} PyTorch's on {self.checked_on} (largest difference {self.max_abs_diff:.1e} on "
                f"outputs up to {self.largest_output:.3g}, a relative difference of {relative:.1e}: "
                f"{'within' if self.matches else 'over'} the {self.tolerance:.0e} allowed)")


def export_path(checkpoint: Checkpoint, fmt: str) -> Path:
    """Where a checkpoint's export goes by default: `exports/ckpt-NNNN/model.onnx` (or `model.torchscript.pt`) in
    its run folder, outside `checkpoints/`, whose older folders a run trained on prunes; inside the checkpoint
    folder itself when it is not in a run's `checkpoints/`."""
    name = "model.onnx" if fmt == "onnx" else "model.torchscript.pt"
    if checkpoint.path.parent.name == "checkpoints":
        return checkpoint.path.parent.parent / "exports" / checkpoint.path.name / name
    return checkpoint.path / name


def export_checkpoint(path: Path, fmt: str, out: Path | None = None, batch: int = 4,
                      atol: float = 1e-4) -> ExportResult:
    """Export a checkpoint's model to ONNX or TorchScript, run the exported file and compare its outputs.

    The input is `batch` real images preprocessed as the model was trained (`export_examples`): on noise, or on
    photos of another kind than it learnt, a feature extractor's SVM or k-NN head answers with its bias alone,
    which proves nothing. The ONNX graph takes any batch size. `matches` is False when the outputs differ by more
    than `atol` (relative to the largest logit).
    """
    from cnnlab.registry import get_spec

    if fmt not in EXPORT_FORMATS:
        raise CheckpointError(f"unknown export format {fmt!r}; choose from: {', '.join(EXPORT_FORMATS)}")
    model, checkpoint = model_from_checkpoint(path)
    spec = get_spec(checkpoint.config["arch"])
    example, checked_on = export_examples(checkpoint, batch)
    with torch.no_grad():
        expected = model(example).numpy()
    out = Path(out) if out else export_path(checkpoint, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        actual = _export_onnx(model, example, out) if fmt == "onnx" else _export_torchscript(model, example, out)
    except Exception as error:  # the exporters raise anything from ImportError to their own error types
        raise CheckpointError(f"exporting {spec.title} to {fmt} failed: {type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}") from error
    diff = float(np.abs(actual - expected).max())
    scale = max(1.0, float(np.abs(expected).max()))
    return ExportResult(out, fmt, diff, diff <= atol * scale, float(np.abs(expected).max()), atol, checked_on)


def export_examples(checkpoint: Checkpoint, batch: int) -> tuple[torch.Tensor, str]:
    """A batch of images to check an export on, and what they are: the run's own validation images, one per class
    (as many classes as `batch`), or cnnlab's sample photos when the run's data cannot be read any more."""
    from cnnlab.images import preprocess, read_image, sample_images
    from cnnlab.mistakes import MistakesError, validation_examples
    from cnnlab.registry import get_spec

    spec = get_spec(checkpoint.config["arch"])
    images = []
    if "dataset" in checkpoint.config:  # (not a checkpoint saved outside a run)
        with contextlib.suppress(MistakesError):
            images = [image for _, _, image in validation_examples(checkpoint.path, limit=batch)]
    checked_on = f"{len(images)} of the run's validation images"
    if not images:
        images = [read_image(photo) for photo in list(sample_images().values())[:batch]]
        checked_on = f"{len(images)} sample photos (the run's data cannot be read)"
    size = checkpoint.config.get("image_size")
    return torch.stack([preprocess(image, spec, size) for image in images]), checked_on


def _export_onnx(model: nn.Module, example: torch.Tensor, out: Path) -> np.ndarray:
    import onnxruntime

    batch = torch.export.Dim("batch", min=1)
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        temp = Path(scratch) / out.name
        torch.onnx.export(model, (example,), str(temp), dynamo=True, input_names=["images"],
                          output_names=["logits"], dynamic_shapes=({0: batch},), external_data=False,
                          verbose=False)
        atomic_write_bytes(out, temp.read_bytes())
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]


def _export_torchscript(model: nn.Module, example: torch.Tensor, out: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        atomic_write_bytes(out, buffer.getvalue())
        loaded = torch.jit.load(str(out), map_location="cpu")
    with torch.no_grad():
        return loaded(example).numpy()


def archive_bytes(folder: Path) -> bytes:
    """A checkpoint folder as a zip archive in memory (for a download)."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(Path(folder).iterdir()):
            if path.is_file():
                archive.write(path, arcname=f"{Path(folder).name}/{path.name}")
    return buffer.getvalue()
