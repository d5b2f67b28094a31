"""Datasets for training: what they are called, how they are read, split and preprocessed.

Names: `digits` (scikit-learn's bundled 8x8 handwritten digits, always offline), `mnist` and `cifar10`
(torchvision's, read from `data_dir()/datasets` or `mnist:ROOT`, downloaded when online), `folder:PATH`
(one sub-folder per class) and `zip:PATH` (an archive of such folders, extracted safely first).

Every dataset is an `ImageSet`: item `i` is `(image, label)` with the image a uint8 tensor image or a PIL
image; `transforms_for(spec, train)` turns it into the network's input as the architecture's spec says.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
import urllib.error
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from cnnlab.images import ImageInputError, read_image
from cnnlab.naming import dataset_label
from cnnlab.paths import data_dir, keep_upload
from cnnlab.registry import ArchSpec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
ARCHIVE_EXTENSIONS = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst")


class DatasetError(ValueError):
    """A dataset that cannot be used, with a message meant for the user."""


class ImageSet(Dataset):
    """A labelled image collection. `self[i]` is `(image, label)`; `targets` holds every label.

    `skipped` lists files that could not be read (left out, not fatal); `content_hash` identifies
    the images and labels, so caches built from them can tell when the data changed.
    """

    def __init__(self, name: str, classes: tuple[str, ...], targets: np.ndarray,
                 load: Callable[[int], object], fingerprint: Callable[[], str], skipped: tuple[str, ...] = ()):
        self.name = name
        self.classes = tuple(classes)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.skipped = tuple(skipped)
        self._load = load
        self._fingerprint = fingerprint

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self._load(int(index)), int(self.targets[index])

    @cached_property
    def content_hash(self) -> str:
        """SHA-256 over the images and labels (hex, 16 characters)."""
        return self._fingerprint()[:16]

    def differs_from(self, data_hash: str | None) -> bool:
        """Whether a `content_hash` stored earlier (with a run) names other images or labels than these; None, from
        a run stored before hashes were kept, counts as the same."""
        return data_hash is not None and data_hash != self.content_hash

    @property
    def in_memory(self) -> bool:
        """True when items come from arrays in memory rather than files (no decode worth a worker)."""
        return not self.name.startswith(("folder:", "zip:"))


def absolute_dataset(name: str) -> str:
    """The dataset `name` with its path made absolute (`folder:ds` as `folder:/abs/ds`; zip:, mnist:ROOT and
    cifar10:ROOT alike): a queued run is read by a worker that may run in another folder."""
    kind, _, argument = name.partition(":")
    return f"{kind}:{Path(argument).expanduser().resolve()}" if argument else name


def load_dataset(name: str, download: bool = True) -> ImageSet:
    """The dataset called `name` (see the module docstring); DatasetError with a clear message otherwise."""
    kind, _, argument = name.partition(":")
    if kind == "digits" and not argument:
        return _digits()
    if kind in ("mnist", "cifar10"):
        root = Path(argument).expanduser() if argument else data_dir() / "datasets"
        return _torchvision_dataset(kind, root, download)
    if kind == "folder" and argument:
        return load_folder(Path(argument).expanduser(), name=f"folder:{argument}")
    if kind == "zip" and argument:
        return load_folder(extract_zip(Path(argument).expanduser()), name=f"zip:{argument}")
    raise DatasetError(f"unknown dataset {name!r}; use digits, mnist[:ROOT], cifar10[:ROOT], folder:PATH or zip:PATH")


def _sha256(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _tensor_set(name: str, classes: tuple[str, ...], images: torch.Tensor, targets: np.ndarray) -> ImageSet:
    """An ImageSet over a uint8 tensor of shape (N, C, H, W)."""
    return ImageSet(name, classes, targets, lambda i: tv_tensors.Image(images[i]),
                    lambda: _sha256(images.numpy(), np.asarray(targets)))


def _digits() -> ImageSet:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.clip(bunch.images * 16, 0, 255).astype(np.uint8)  # values 0..16 -> 0..255
    images = torch.from_numpy(pixels).unsqueeze(1)
    return _tensor_set("digits", tuple(str(c) for c in bunch.target_names), images, bunch.target)


TORCHVISION_URLS = {"mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"}
TORCHVISION_FOLDERS = {"mnist": ("MNIST", "raw"), "cifar10": ("cifar-10-batches-py",)}
TORCHVISION_LAYOUTS = {"mnist": "MNIST/raw folder (train-images-idx3-ubyte and the other three files)",
                       "cifar10": "cifar-10-batches-py folder (the extracted cifar-10-python.tar.gz)"}


def torchvision_root(kind: str, root: Path) -> Path:
    """The root torchvision's dataset class reads `kind` from (the folder that holds MNIST/raw, or
    cifar-10-batches-py), also when `root` points inside it: at MNIST/, MNIST/raw or cifar-10-batches-py itself."""
    parts = TORCHVISION_FOLDERS[kind]
    for depth in range(len(parts), 0, -1):
        if root.parts[-depth:] == parts[:depth]:
            return root.parents[depth - 1]
    return root


def _torchvision_dataset(kind: str, root: Path, download: bool) -> ImageSet:
    from torchvision import datasets

    from cnnlab.weights import host_reachable

    cls = datasets.MNIST if kind == "mnist" else datasets.CIFAR10
    root = torchvision_root(kind, root)
    expected = root.joinpath(*TORCHVISION_FOLDERS[kind])
    try:
        dataset = cls(str(root), train=True, download=False)
    except RuntimeError:
        if not download:
            raise DatasetError(f"{kind} is not in {root} (no {expected}; downloads are off)") from None
        if not host_reachable(TORCHVISION_URLS[kind]):
            where = f"{root} does not exist" if not root.exists() else f"{kind} is not in {root}"
            raise DatasetError(f"{where} and {kind} cannot be downloaded now (offline?). Copy torchvision's "
                               f"{TORCHVISION_LAYOUTS[kind]} to {expected}, or on the command line give the folder "
                               f"that holds {TORCHVISION_FOLDERS[kind][0]}: --dataset {kind}:ROOT") from None
        try:
            dataset = cls(str(root), train=True, download=True)
        except (RuntimeError, OSError, urllib.error.URLError) as error:
            raise DatasetError(f"downloading {kind} into {root} failed: {error}") from None
    if kind == "mnist":
        images = dataset.data.unsqueeze(1).contiguous()
        targets = dataset.targets.numpy()
    else:
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        targets = np.asarray(dataset.targets)
    classes = tuple(c.split(" - ")[0] for c in dataset.classes)  # MNIST's '0 - zero' -> '0'
    return _tensor_set(kind, classes, images, targets)


def _readable(path: Path) -> bool:
    """Whether `path` decodes as an image; each version of a file (its size and modification time) is decoded once
    per process, so a folder read again (checked, then trained) costs a directory scan, not a decode per image."""
    try:
        found = path.stat()
    except OSError:
        return False
    return _decodes(str(path), found.st_size, found.st_mtime_ns)


@lru_cache(maxsize=100_000)
def _decodes(path: str, _size: int, _mtime_ns: int) -> bool:
    try:
        read_image(path)
    except ImageInputError:
        return False
    return True


def _open_rgb(path: Path) -> Image.Image:
    """A dataset's image as Predict reads an upload (`images.read_image`): upright, RGB, any bit depth scaled."""
    return read_image(path)


def _hash_files(paths: list[Path], targets: list[int], root: Path) -> str:
    digest = hashlib.sha256()
    for path, target in zip(paths, targets):
        digest.update(f"{path.relative_to(root).as_posix()}\0{target}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def load_folder(root: Path, name: str | None = None) -> ImageSet:
    """An ImageFolder-style dataset: each sub-folder of `root` is a class holding its images.

    Unreadable images are skipped and listed in `skipped`; fewer than two classes, or a class with no
    readable image, is a DatasetError.
    """
    if not root.is_dir():
        raise DatasetError(f"{root} {'is not a folder' if root.exists() else 'does not exist'}")
    shown = dataset_label(name) if name else str(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    if len(class_dirs) < 2:
        files = sorted(p.name for p in root.iterdir() if p.is_file())
        found = (f"found only {class_dirs[0].name}/" if class_dirs else
                 f"found {len(files)} file{'s' if len(files) > 1 else ''} but no class folders "
                 f"({', '.join(files[:3])}{', ...' if len(files) > 3 else ''})"
                 if files else
                 "found nothing")
        raise DatasetError(f"{shown} needs one folder per class, at least 2 (cat/, dog/, ... with the images "
                           f"inside); {found}")
    paths, targets, skipped, empty = [], [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        good = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS and _readable(p)]
        kept = set(good)
        skipped += [str(p.relative_to(root)) for p in files if p not in kept]
        if not good:
            empty.append(class_dir.name)
        paths += good
        targets += [label] * len(good)
    if empty:
        raise DatasetError(f"{len(empty)} class folder(s) with no readable image in {shown}: {first_names(empty)}")
    return ImageSet(name or f"folder:{root}", tuple(d.name for d in class_dirs), np.asarray(targets),
                    lambda i: _open_rgb(paths[i]), lambda: _hash_files(paths, targets, root), tuple(skipped))


@dataclass(frozen=True)
class ZipLimits:
    """Caps that keep an uploaded archive from filling the disk or the inode table."""

    max_entries: int = 50_000
    max_total_bytes: int = 4 << 30
    max_ratio: float = 200.0


def extract_zip(archive: Path, limits: ZipLimits = ZipLimits(), dest_root: Path | None = None) -> Path:
    """Extract `archive` safely and return the folder holding its class sub-folders.

    Refuses entries that escape the destination (absolute paths, `..`), symlinks, nested archives, and
    archives over the entry-count, total-size or compression-ratio caps; the sizes are checked while
    reading, not only from the (forgeable) headers. Extraction goes to a temporary folder renamed into
    place, keyed by the archive's SHA-256, so a second call reuses it.
    """
    if not archive.is_file():
        raise DatasetError(f"{archive} {'is not a file' if archive.exists() else 'does not exist'}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    dest_root = dest_root or data_dir() / "datasets" / "zip"
    dest = dest_root / digest
    if not dest.is_dir():
        dest_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=dest_root))
        try:
            _extract_checked(archive, staging, limits)
            try:
                staging.rename(dest)
            except OSError:
                if not dest.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _single_top_folder(dest)


def _extract_checked(archive: Path, dest: Path, limits: ZipLimits) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise DatasetError(f"{archive.name} is not a readable zip archive ({error})") from None
    with zf:
        entries = zf.infolist()
        if len(entries) > limits.max_entries:
            raise DatasetError(f"{archive.name} has {len(entries)} entries, over the limit of {limits.max_entries}")
        total = 0
        for entry in entries:
            target = _safe_target(dest, entry, limits)
            if target is None:
                continue
            total += _copy_entry(zf, entry, target, limits, limits.max_total_bytes - total)


def _safe_target(dest: Path, entry: zipfile.ZipInfo, limits: ZipLimits) -> Path | None:
    """Where `entry` may be written inside `dest`, None for folders and OS clutter; DatasetError if unsafe."""
    name = entry.filename
    mode = entry.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DatasetError(f"archive entry {name!r} is a symbolic link; links are not allowed")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise DatasetError(f"archive entry {name!r} points outside the archive's folder")
    if parts[0] == "__MACOSX" or parts[-1].startswith("."):
        return None
    if entry.is_dir():
        return None
    if parts[-1].lower().endswith(ARCHIVE_EXTENSIONS):
        raise DatasetError(f"archive entry {name!r} is itself an archive; nested archives are not allowed")
    if entry.compress_size and entry.file_size / entry.compress_size > limits.max_ratio:
        raise DatasetError(f"archive entry {name!r} expands {entry.file_size / entry.compress_size:.0f}-fold "
                           f"(limit {limits.max_ratio:.0f}); it looks like a zip bomb")
    target = dest.joinpath(*parts)
    if not target.resolve().is_relative_to(dest.resolve()):
        raise DatasetError(f"archive entry {name!r} points outside the archive's folder")
    return target


def _copy_entry(zf: zipfile.ZipFile, entry: zipfile.ZipInfo, target: Path, limits: ZipLimits, budget: int) -> int:
    """Copy one entry, stopping as soon as it exceeds its declared size, the ratio cap or the total budget."""
    cap = min(entry.file_size, budget)
    if entry.file_size > budget:
        raise DatasetError(f"archive expands to more than {limits.max_total_bytes} bytes; it is too large")
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with zf.open(entry) as source, open(target, "wb") as sink:
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > cap:
                    raise DatasetError(f"archive entry {entry.filename!r} holds more data than its header declares")
                sink.write(chunk)
    except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError) as error:
        raise DatasetError(f"archive entry {entry.filename!r} cannot be extracted: {error} (a damaged, "
                           "encrypted or unusually compressed archive; zip the folder again)") from None
    return written


def _single_top_folder(root: Path) -> Path:
    """Descend through folders that are the only thing in their parent (an archive of one zipped folder), down to
    the one that holds the class folders (not into a lone class folder: that is a one-class dataset)."""
    while True:
        children = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(children) != 1 or not children[0].is_dir() or not any(p.is_dir() for p in children[0].iterdir()):
            return root
        root = children[0]


def require_two_per_class(targets: np.ndarray, classes: tuple[str, ...] = ()) -> None:
    """DatasetError, naming them (by `classes` where given), when classes have a single image: a split needs one
    for training and one for validation."""
    lonely = [classes[i] if classes else str(i) for i in np.flatnonzero(np.bincount(np.asarray(targets)) == 1)]
    if lonely:
        raise DatasetError(f"every class needs at least 2 images to be split into train and validation; "
                           f"{', '.join(lonely[:5])}{', ...' if len(lonely) > 5 else ''} "
                           f"ha{'s' if len(lonely) == 1 else 've'} fewer")


def stratified_split(targets: np.ndarray, val_fraction: float = 0.2, seed: int = 0,
                     classes: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices, each class split in the same proportion; the same seed gives the same split.
    `classes` names the classes in the error for one with a single image."""
    from sklearn.model_selection import train_test_split

    if not 0 < val_fraction < 1:
        raise DatasetError(f"the validation fraction must be between 0 and 1, not {val_fraction}")
    targets = np.asarray(targets)
    require_two_per_class(targets, classes)
    counts = np.bincount(targets)
    indices = np.arange(len(targets))
    val_size = validation_size(len(targets), int((counts > 0).sum()), val_fraction)
    train_idx, val_idx = train_test_split(indices, test_size=val_size, stratify=targets, random_state=seed)
    return np.sort(train_idx), np.sort(val_idx)


def split_images(images: ImageSet, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`stratified_split` of `images`; its DatasetError names the dataset and the unreadable files left out of it
    ('pets.zip: every class needs at least 2 images ...; cat has fewer (1 unreadable file left out: cat/a.jpg)')."""
    try:
        return stratified_split(images.targets, val_fraction, seed, images.classes)
    except DatasetError as error:
        count = len(images.skipped)
        skipped = (f" ({count} unreadable file{'s' if count > 1 else ''} left out: "
                   f"{first_names(images.skipped, 3)})" if count else "")
        raise DatasetError(f"{dataset_label(images.name)}: {error}{skipped}") from None


def validation_size(images: int, classes: int, val_fraction: float) -> int:
    """How many of `images` a stratified split keeps for validation: the fraction, and at least one per class."""
    return max(classes, round(val_fraction * images))


def transforms_for(spec: ArchSpec, train: bool, image_size: int | None = None) -> v2.Compose:
    """Image (PIL or uint8 tensor) to normalized float tensor, as `spec` wants it.

    Grayscale becomes 3 channels for RGB networks and RGB becomes gray for grayscale ones (LeNet-5: 32x32
    gray); resize the short side, centre-crop. For training, light augmentation instead: a random crop of
    80-100% of the image, near square, resized to the input (a small shift and zoom; no flips: digits and
    text are not mirror-symmetric).
    """
    prep = spec.preprocessing_at(image_size)
    channels = spec.input_size[0]
    interpolation = InterpolationMode(prep.interpolation)
    if train:
        steps = [v2.RandomResizedCrop(prep.crop, scale=(0.8, 1.0), ratio=(0.9, 1.1), interpolation=interpolation,
                                      antialias=True)]
    else:
        steps = [v2.Resize(prep.resize, interpolation=interpolation, antialias=True), v2.CenterCrop(prep.crop)]
    # a PIL image is resized by PIL, as timm's and torchvision's reference transforms do; a tensor by torch
    steps += [v2.ToImage(), v2.Grayscale(1) if channels == 1 else v2.RGB(),  # after resizing: less work for gray
              v2.ToDtype(torch.float32, scale=True), v2.Normalize(prep.mean, prep.std), v2.ToPureTensor()]
    return v2.Compose(steps)


class TransformedSubset(Dataset):
    """`images[indices[i]]` passed through `transform`: one side of a split, as the network sees it."""

    def __init__(self, images: ImageSet, indices: np.ndarray, transform: Callable):
        self.images = images
        self.indices = np.asarray(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, label = self.images[self.indices[index]]
        return self.transform(image), label

    @property
    def targets(self) -> np.ndarray:
        return self.images.targets[self.indices]


def worker_count(images: ImageSet, cuda: bool) -> int:
    """DataLoader worker processes: none for in-memory data on CPU (they would steal the compute threads)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cuda:
        return min(8, cpus)
    return 0 if images.in_memory or cpus <= 2 else min(4, cpus // 2)


def image_folders_root() -> Path:
    """Where the dashboard looks for server-side image folders (one sub-folder per class in each)."""
    return data_dir() / "image-folders"


def server_folders() -> list[Path]:
    """The image folders a user has placed under `image_folders_root()`, by name."""
    root = image_folders_root()
    root.mkdir(parents=True, exist_ok=True)
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def save_uploaded_archive(data: bytes, name: str) -> Path:
    """Keep an uploaded zip archive under the data directory (in a folder named by its content, under its own
    file name) and return its path; `check_dataset` and every run check and extract it safely."""
    if not name.lower().endswith(".zip"):
        raise DatasetError(f"{name} is not a .zip archive")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise DatasetError(f"{name} is not a readable zip archive")
    path = keep_upload(data, "uploads", ".zip", name=name)
    path.touch()  # uploaded again: the newest of `uploaded_archives`
    return path


def uploaded_archives() -> dict[str, str]:
    """The zip archives kept by `save_uploaded_archive`, the most recently uploaded first: {path: 'pets.zip ·
    uploaded 2026-12-03 16:40'}."""
    import time

    uploaded = sorted(((path.stat().st_mtime, path) for path in (data_dir() / "uploads").glob("*/*.zip")), reverse=True)
    return {str(path): f"{path.name} · uploaded {time.strftime('%Y-%m-%d %H:%M', time.localtime(when))}"
            for when, path in uploaded}


SMALL_IMAGES = {"digits": 8, "mnist": 28, "cifar10": 32}  # side in pixels of the built-in datasets' images
SMALL_IMAGE_INPUT = 128
SMALL_IMAGE_SIDE = 64
"""Images no larger than this (their shorter side, typically) are tiny: a run starts them at SMALL_IMAGE_INPUT."""


def first_names(names, limit: int = 10) -> str:
    """The first `limit` names, comma-separated, with ', ...' when there are more: 'a, b, c, ...'."""
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def typical_image_side(images: ImageSet, count: int = 16) -> int:
    """The median shorter side, in pixels, of `count` of `images` spread evenly over the set."""
    picked = np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int)
    return int(np.median([min(v2.functional.get_size(images[int(i)][0])) for i in picked]))


def image_side(dataset: str) -> int | None:
    """The typical shorter side of `dataset`'s images: known for the built-in ones, read for a folder or a zip
    (None when it cannot be read: the run will say why)."""
    kind = dataset.partition(":")[0]
    if kind in SMALL_IMAGES:
        return SMALL_IMAGES[kind]
    try:
        return typical_image_side(load_dataset(dataset, download=False))
    except DatasetError:
        return None


def suggested_input_size(native: int, smallest: int, fixed: bool = False, side: int | None = None) -> int:
    """The input size a run should start from: the network's `native` one, but SMALL_IMAGE_INPUT (or the network's
    `smallest`) for tiny images (a typical `side` up to SMALL_IMAGE_SIDE), which lose little there and train several
    times faster."""
    if fixed or side is None or side > SMALL_IMAGE_SIDE:
        return native
    return min(native, max(SMALL_IMAGE_INPUT, smallest))


@dataclass(frozen=True)
class DatasetCheck:
    """What a run will find in a dataset, known before it starts: classes and image count, or, for MNIST and
    CIFAR-10 not here yet, where the run will download them from."""

    name: str
    classes: tuple[str, ...]
    images: int
    skipped: tuple[str, ...] = ()
    download_from: str | None = None
    image_side: int | None = None  # typical shorter side in pixels; None before a download

    @property
    def num_classes(self) -> int:
        """The class count, known before the download too: MNIST's and CIFAR-10's are 10."""
        return len(self.classes) or 10

    def describe(self) -> str:
        """'pets.zip: 45 images in 3 classes (cat, dog, fox), typically 32 px on their shorter side'."""
        if self.download_from:
            return (f"{dataset_label(self.name)} is not on this machine yet: the run downloads it first "
                    f"(from {self.download_from}).")
        side = f", typically {self.image_side} px on their shorter side" if self.image_side else ""
        return (f"{dataset_label(self.name)}: {self.images:,} images in {len(self.classes)} classes "
                f"({first_names(self.classes, 12)}){side}.")


def check_dataset(name: str) -> DatasetCheck:
    """Read dataset `name` as a run would (a zip is checked and extracted, a folder scanned, MNIST and CIFAR-10
    looked for), without downloading: DatasetError with the message the run would fail with."""
    from cnnlab.weights import host_reachable

    kind = name.partition(":")[0]
    try:
        images = load_dataset(name, download=False)
    except DatasetError:
        if kind not in ("mnist", "cifar10"):
            raise
        if host_reachable(TORCHVISION_URLS[kind]):
            return DatasetCheck(name, (), 0, download_from=TORCHVISION_URLS[kind])
        images = load_dataset(name)  # offline: raises the error a run would meet
    split_images(images)
    return DatasetCheck(name, images.classes, len(images), images.skipped, image_side=typical_image_side(images))
