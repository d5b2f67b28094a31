"""The 'Look inside' speed goals, measured on the sample cat photo at 224x224.

1. Extracting every layer's maps (`cnnlab.activations.extract`) costs at most 1.3x a plain forward, for
   ResNet-18 and EfficientNet-Lite0. Plain and extracting passes are interleaved round by round, so that a
   busy machine slows both alike; the ratio of the medians is the figure that counts.
2. Turning a 64-channel 56x56 layer (ResNet-18's layer1 output) into the picture the page shows takes under
   100 ms: the mosaic, and the mosaic with its colour scale.

Also printed: per-layer statistics (computed once per image and cached by the page) and the PNG encoding of
the mosaic. Usage: python benchmarks/inside_speed.py [--rounds 30]
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import time

import torch
from PIL import Image

from cnnlab.activations import extract, layer_statistics
from cnnlab.images import image_input, sample_images
from cnnlab.mosaic import mosaic, with_colorbar
from cnnlab.registry import get_spec
from cnnlab.weights import load_weights

ARCHS = ("resnet18", "tf_efficientnet_lite0")
MOSAIC_LAYER = ("resnet18", "layer1")


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return (time.perf_counter() - start) * 1000


def interleaved(functions: dict, rounds: int, warmup: int = 3) -> dict[str, list[float]]:
    """Milliseconds of each function, run in turn every round."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            times[name].append(timed(function))
    return times


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(values), 2), "min_ms": round(min(values), 2)}


def bench_extraction(arch: str, rounds: int) -> dict:
    spec = get_spec(arch)
    loaded = load_weights(arch)
    model, batch = loaded.model, image_input(sample_images()["chelsea"], spec).tensor

    def plain():
        with torch.inference_mode():
            model(batch)

    times = interleaved({"plain": plain, "extract": lambda: extract(model, batch, spec)}, rounds)
    activations = extract(model, batch, spec)
    stats_ms = [timed(lambda: layer_statistics(activations)) for _ in range(5)]
    plain_s, extract_s = summary(times["plain"]), summary(times["extract"])
    result = {"arch": arch, "weights": loaded.weights, "layers": len(activations.layers),
              "values_m": round(sum(m.size for m in activations.maps.values()) / 1e6, 2),
              "plain": plain_s, "extract": extract_s,
              "ratio_median": round(extract_s["median_ms"] / plain_s["median_ms"], 2),
              "ratio_min": round(extract_s["min_ms"] / plain_s["min_ms"], 2),
              "statistics_ms": round(statistics.median(stats_ms), 2)}
    print(f"{arch} ({loaded.weights} weights, {result['layers']} layers, {result['values_m']}M values): "
          f"plain forward {plain_s['median_ms']:.1f} ms (min {plain_s['min_ms']:.1f}), extract all "
          f"{extract_s['median_ms']:.1f} ms (min {extract_s['min_ms']:.1f}), ratio {result['ratio_median']:.2f} "
          f"(of minima {result['ratio_min']:.2f}); per-layer statistics {result['statistics_ms']:.1f} ms")
    return result


def bench_mosaic(rounds: int) -> dict:
    arch, layer = MOSAIC_LAYER
    spec = get_spec(arch)
    model = load_weights(arch).model
    values = extract(model, image_input(sample_images()["chelsea"], spec).tensor, spec, [layer]).maps[layer]
    picture = with_colorbar(mosaic(values))

    def encode():
        Image.fromarray(picture).save(io.BytesIO(), format="PNG")

    times = interleaved({"mosaic": lambda: mosaic(values), "with_colorbar": lambda: with_colorbar(mosaic(values)),
                         "png": encode}, rounds)
    result = {"layer": f"{arch} {layer}", "shape": list(values.shape),
              **{name: summary(values_ms) for name, values_ms in times.items()}}
    print(f"mosaic of {arch} {layer} {'x'.join(map(str, values.shape))}: {result['mosaic']['median_ms']:.1f} ms "
          f"(min {result['mosaic']['min_ms']:.1f}); with colour scale {result['with_colorbar']['median_ms']:.1f} ms; "
          f"PNG encoding {result['png']['median_ms']:.1f} ms")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = {"extraction": [bench_extraction(arch, args.rounds) for arch in ARCHS],
               "mosaic": bench_mosaic(args.rounds)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
