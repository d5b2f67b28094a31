"""ResNet-50 fine-tune throughput (training images/s) on a GPU: cnnlab's loop against two reference loops.

Same model, freeze plan (the finetune default, stage:2: stem and layer1 frozen), optimizer (AdamW),
batch and process; the modes run one after another:

- cnnlab:  the engine's own `train_one_epoch` with its CUDA runtime: bf16 autocast, channels_last,
           cudnn.benchmark, fused AdamW (`--compile` adds a torch.compile run);
- fp32:    a plain loop: fp32, NCHW, cudnn defaults (no autotuning), TF32 matmuls off;
- amp:     the reference AMP loop (PyTorch's AMP recipe, torchvision's reference training script):
           float16 autocast + GradScaler, NCHW, cudnn.benchmark.

First with the data resident on the GPU (sklearn's digits, preprocessed to 224x224 once and kept in GPU
memory), then through the real input pipeline: a folder of JPEGs decoded, augmented and batched by
cnnlab's DataLoader (worker processes, pinned memory) in a full `cnnlab` training run.

Weights are random by default (the GPU box has no model hub; throughput does not depend on the values).
`--weights FILE` runs the real pipeline as a true finetune from a local ResNet-50 state dict instead.

Usage on a GPU:  python benchmarks/train_gpu.py [--batch 256] [--steps 50] [--compile]
Dry run on CPU:  python benchmarks/train_gpu.py --device cpu --batch 4 --steps 2 --warmup 1 --size 64 \\
                     --images-per-class 6 --pipeline-epochs 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data import load_dataset, transforms_for
from cnnlab.registry import build_model, get_spec
from cnnlab.training import (cosine_schedule, freeze_layers, make_config, make_optimizer, make_runtime, run,
                             train_one_epoch)

ARCH = "resnet50"


class ResidentBatches:
    """`steps` random batches drawn from images already in device memory (no input pipeline at all)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch: int, steps: int, seed: int = 0):
        self.images, self.labels, self.batch, self.steps = images, labels, batch, steps
        self.generator = torch.Generator(device=images.device).manual_seed(seed)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            index = torch.randint(len(self.labels), (self.batch,), device=self.images.device, generator=self.generator)
            yield self.images[index], self.labels[index]


def resident_digits(size: int, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_dataset("digits")
    transform = transforms_for(get_spec(ARCH), train=False, image_size=size)
    images = torch.stack([transform(digits[i][0]) for i in range(len(digits))]).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, torch.from_numpy(digits.targets).to(device)


def fresh_model(device: torch.device, freeze: str, channels_last: bool):
    torch.manual_seed(0)
    model = build_model(ARCH, num_classes=10)
    freeze_layers(model, get_spec(ARCH), freeze)
    return model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step_fn, batches, warmup: int, device: torch.device) -> float:
    """Images per second over `batches` after `warmup` untimed steps."""
    iterator = iter(batches)
    for _ in range(warmup):
        step_fn(*next(iterator))
    synchronize(device)
    start, seen = time.perf_counter(), 0
    for images, labels in iterator:
        step_fn(images, labels)
        seen += len(labels)
    synchronize(device)
    return seen / (time.perf_counter() - start)


def bench_cnnlab(args, device, compile_model: bool) -> float:
    """The engine's loop exactly as `cnnlab train` runs it (train_one_epoch with the runtime of `make_runtime`)."""
    runtime = make_runtime(device.type)
    images, labels = resident_digits(args.size, device, runtime.channels_last)
    model = fresh_model(device, args.freeze, runtime.channels_last)
    config = make_config("scratch", ARCH, "digits", freeze=args.freeze, device=device.type)
    optimizer = make_optimizer(model, get_spec(ARCH), config, fused=runtime.fused)
    train_model = torch.compile(model) if compile_model else model
    lr_at = cosine_schedule(config.lr, 10_000, 10)
    warm = ResidentBatches(images, labels, args.batch, args.warmup)
    train_one_epoch(train_model, warm, optimizer, lr_at, 0, runtime)  # autotuning and compilation
    synchronize(device)
    stats = train_one_epoch(train_model, ResidentBatches(images, labels, args.batch, args.steps, seed=1), optimizer,
                            lr_at, args.warmup, runtime)
    synchronize(device)
    return stats.images_per_s


def bench_plain_fp32(args, device) -> float:
    torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("highest")
    images, labels = resident_digits(args.size, device, channels_last=False)
    model = fresh_model(device, args.freeze, channels_last=False).train()
    optimizer = make_optimizer(model, get_spec(ARCH), make_config("scratch", ARCH, "digits", freeze=args.freeze))

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed(step, ResidentBatches(images, labels, args.batch, args.warmup + args.steps), args.warmup, device)


def bench_reference_amp(args, device) -> float:
    torch.backends.cudnn.benchmark = True
    images, labels = resident_digits(args.size, device, channels_last=False)
    model = fresh_model(device, args.freeze, channels_last=False).train()
    optimizer = make_optimizer(model, get_spec(ARCH), make_config("scratch", ARCH, "digits", freeze=args.freeze))
    scaler = torch.amp.GradScaler(device.type)

    def step(x, y):
        with torch.autocast(device.type, dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return timed(step, ResidentBatches(images, labels, args.batch, args.warmup + args.steps), args.warmup, device)


SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "horse", "hubble_deep_field",
                 "immunohistochemistry", "moon", "page", "text", "brick", "grass", "gravel")


def jpeg_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """Ten classes of 320x240 JPEGs: random crops of ten of scikit-image's sample photos, one photo a class."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = []
    for name in SAMPLE_PHOTOS:
        try:
            photos.append((name, Image.fromarray(getattr(data, name)()).convert("RGB")))
        except Exception:  # a sample that would need a download: skip it
            continue
        if len(photos) == 10:
            break
    for name, photo in photos:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        width, height = photo.size
        for i in range(per_class):
            w, h = int(width * rng.uniform(0.4, 0.9)), int(height * rng.uniform(0.4, 0.9))
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            photo.crop((x, y, x + w, y + h)).resize((320, 240)).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def bench_pipeline(args, root: Path, device: torch.device) -> dict:
    """A whole `cnnlab` training run on the JPEG folder; images/s of its last epoch (data loading included)."""
    options = dict(epochs=args.pipeline_epochs, batch_size=args.batch, freeze=args.freeze, device=device.type,
                   image_size=args.size, compile=args.compile, workers=args.workers)
    strategy = "finetune" if args.weights else "scratch"
    if args.weights:
        options["weights"] = args.weights
    result = run(make_config(strategy, ARCH, f"folder:{root}", **options))
    return {"images_per_s": result.history[-1].images_per_s, "epochs": [m.images_per_s for m in result.history],
            "val_acc": result.val_acc, "strategy": strategy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--freeze", default="stage:2")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--images-per-class", type=int, default=1000)
    parser.add_argument("--pipeline-epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, help="DataLoader worker processes (default: cnnlab's choice)")
    parser.add_argument("--weights", help="a local ResNet-50 weights file for a true finetune in the pipeline run")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch}; {args.size}x{args.size}; "
          f"freeze {args.freeze}; {args.steps} timed steps after {args.warmup}", flush=True)
    results = {"device": name, "torch": torch.__version__, "batch": args.batch, "size": args.size,
               "freeze": args.freeze, "steps": args.steps}
    modes = [("fp32 NCHW (plain loop)", lambda: bench_plain_fp32(args, device)),
             ("AMP fp16 + GradScaler (reference loop)", lambda: bench_reference_amp(args, device)),
             ("cnnlab: bf16 + channels_last", lambda: bench_cnnlab(args, device, False))]
    if args.compile:
        modes.append(("cnnlab: bf16 + channels_last + torch.compile", lambda: bench_cnnlab(args, device, True)))
    for label, bench in modes:
        results[label] = bench()
        print(f"| resident on {device.type} | {label} | {results[label]:,.0f} images/s |", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["CNNLAB_HOME"] = str(Path(scratch) / "home")
        start = time.perf_counter()
        root = jpeg_folder(Path(scratch) / "jpegs", args.images_per_class)
        print(f"wrote {10 * args.images_per_class} JPEGs in {time.perf_counter() - start:.0f}s", flush=True)
        pipeline = bench_pipeline(args, root, device)
    results["pipeline"] = pipeline
    print(f"| JPEG folder, cnnlab DataLoader | cnnlab: bf16 + channels_last{' + compile' if args.compile else ''} | "
          f"{pipeline['images_per_s']:,.0f} images/s (epochs: "
          f"{', '.join(f'{v:,.0f}' for v in pipeline['epochs'])}) |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
