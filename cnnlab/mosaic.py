"""Feature maps as pictures: one colour-mapped grid image per layer, a channel over the input, filters as tiles.

Everything returns uint8 RGB arrays (H x W x 3), drawn with numpy look-up tables, so a 64-channel 56x56 layer
becomes one picture in a few milliseconds: a page shows one image, not one chart per channel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cnnlab.naming import CHANNEL_ORDERS
from cnnlab.registry import ArchSpec

COLORMAPS = ("viridis", "inferno", "magma", "cividis", "turbo", "gray")
TILE_PIXELS = 64
MAX_SIDE = 1600
PAD = 2
PAD_COLOR = (255, 255, 255)
DISPLAY_PX = 400
"""About how wide a page shows a mosaic, between a phone's column (360) and a laptop's (480): text drawn to read at
12 px there reads at 11 on a phone and 14 on a laptop."""
LABEL_MIN_TILE = 28
"""Tiles get their channel number only when they show at least this wide (at `DISPLAY_PX` for the whole grid)."""
ROBUST_PERCENTILE = 99.5


@cache
def colormap(name: str) -> np.ndarray:
    """A 256 x 3 uint8 look-up table for one of `COLORMAPS` (sampled from Plotly's colour scales)."""
    from plotly.colors import sample_colorscale, unlabel_rgb

    if name not in COLORMAPS:
        raise ValueError(f"unknown colour map {name!r}; choose from: {', '.join(COLORMAPS)}")
    colors = sample_colorscale(name, list(np.linspace(0.0, 1.0, 256)), colortype="rgb")
    table = np.array([unlabel_rgb(c) for c in colors], dtype=np.float64)
    table = np.clip(np.rint(table), 0, 255).astype(np.uint8)
    table.setflags(write=False)
    return table


def apply_colormap(values: np.ndarray, vmin: float, vmax: float, name: str = "viridis") -> np.ndarray:
    """Colour `values` (any shape) linearly from `vmin` to `vmax`: the same shape plus a trailing RGB axis."""
    scale = 255.0 / (vmax - vmin) if vmax > vmin else 0.0
    index = np.clip((values - vmin) * scale, 0, 255).astype(np.uint8)
    return colormap(name)[index]


@dataclass(frozen=True)
class Mosaic:
    """A layer's maps as one picture: `channels[i]` is the channel drawn in tile i (row by row) and colours run
    from `vmin` to `vmax` (per tile from its own minimum to maximum when `per_channel`)."""

    image: np.ndarray
    channels: tuple[int, ...]
    columns: int
    tile_size: tuple[int, int]
    vmin: float
    vmax: float
    colormap: str
    per_channel: bool
    labelled: bool = False

    @property
    def rows(self) -> int:
        return math.ceil(len(self.channels) / self.columns)


def as_maps(values: np.ndarray) -> np.ndarray:
    """A layer output as channels of 2-D maps: (C, H, W) as it is, a vector (F,) as F maps of 1x1."""
    values = np.asarray(values)
    if values.ndim == 3:
        return values
    if values.ndim == 1:
        return values.reshape(-1, 1, 1)
    raise ValueError(f"expected a (C, H, W) map or an (F,) vector, not shape {values.shape}")


def channel_means(values: np.ndarray) -> np.ndarray:
    """Mean activation of every channel."""
    maps = as_maps(values)
    return maps.reshape(maps.shape[0], -1).mean(axis=1)


def channel_spreads(values: np.ndarray) -> np.ndarray:
    """How much every channel's map varies across its positions: its standard deviation."""
    maps = as_maps(values)
    return maps.reshape(maps.shape[0], -1).std(axis=1)


def channel_order(values: np.ndarray, order: str = "mean", top: int | None = None) -> np.ndarray:
    """Channel indices to show: by mean activation, most active first ('mean'), by spread, most varied first
    ('spread'; a vector's values have none, so they go by value), or as stored ('index'); the first `top` of them
    when given."""
    if order not in CHANNEL_ORDERS:
        raise ValueError(f"unknown order {order!r}; choose from: {', '.join(CHANNEL_ORDERS)}")
    maps = as_maps(values)
    if order == "index":
        indices = np.arange(maps.shape[0])
    else:
        by_spread = order == "spread" and maps[0].size > 1
        indices = np.argsort(-(channel_spreads(maps) if by_spread else channel_means(maps)), kind="stable")
    if top is not None:
        if top < 1:
            raise ValueError(f"top must be at least 1, not {top}")
        indices = indices[:top]
    return indices


def value_range(values: np.ndarray, robust: bool = True) -> tuple[float, float]:
    """The colour range of a set of maps: minimum to maximum, or from the 0.5th to the 99.5th percentile when
    `robust`, so that a few extreme activations, high or low (a convolution before its ReLU), do not wash out every
    other pixel."""
    flat = np.asarray(values, dtype=np.float32).ravel()
    robust = robust and flat.size > 1000
    low = float(np.percentile(flat, 100 - ROBUST_PERCENTILE)) if robust else float(flat.min())
    high = float(np.percentile(flat, ROBUST_PERCENTILE)) if robust else float(flat.max())
    if high <= low:
        high = float(flat.max())
    return low, high


def _tile_scale(height: int, width: int, columns: int, max_side: int) -> tuple[int, int]:
    """(upsample, stride): integer factors that bring a tile near `TILE_PIXELS` and the grid within `max_side`."""
    largest = max(height, width)
    upsample = max(1, TILE_PIXELS // largest)
    stride = max(1, math.ceil(columns * (largest * upsample + PAD) / max_side))
    if upsample > 1 and stride > 1:
        upsample = max(1, upsample // stride)
        stride = max(1, math.ceil(columns * (largest * upsample + PAD) / max_side))
    return upsample, stride


def mosaic(values: np.ndarray, top: int | None = None, order: str = "mean", colormap_name: str = "viridis",
           columns: int | None = None, per_channel: bool = False, robust: bool = True,
           labels: bool = True, max_side: int = MAX_SIDE) -> Mosaic:
    """One grid image of a layer's maps (C, H, W): all channels or the first `top` in `order` (one of `CHANNEL_ORDERS`),
    coloured on one scale for the whole grid (or per tile), each tile labelled with its channel number. Small maps
    are enlarged (nearest neighbour) and large grids shrunk to fit `max_side` pixels."""
    maps = as_maps(values)
    chosen = channel_order(maps, order, top)
    shown = maps[chosen].astype(np.float32, copy=False)
    count, height, width = shown.shape
    columns = min(columns or math.ceil(math.sqrt(count)), count)
    upsample, stride = _tile_scale(height, width, columns, max_side)
    if per_channel:
        flat = shown.reshape(count, -1)
        low = flat.min(axis=1)[:, None, None]
        span = flat.max(axis=1)[:, None, None] - low
        shown = np.divide(shown - low, span, out=np.zeros_like(shown), where=span > 0)
        vmin, vmax = 0.0, 1.0
    else:
        vmin, vmax = value_range(shown, robust)
    colored = apply_colormap(shown[:, ::stride, ::stride], vmin, vmax, colormap_name)
    if upsample > 1:
        colored = colored.repeat(upsample, axis=1).repeat(upsample, axis=2)
    tile_h, tile_w = colored.shape[1:3]
    grid = tile_grid(colored, columns)
    labelled = labels and min(tile_h, tile_w) * DISPLAY_PX / grid.shape[1] >= LABEL_MIN_TILE
    if labelled:
        grid = _label_tiles(grid, chosen, columns, tile_h, tile_w)
    return Mosaic(grid, tuple(int(i) for i in chosen), columns, (tile_h, tile_w), vmin, vmax, colormap_name,
                  per_channel, labelled)


def tile_grid(tiles: np.ndarray, columns: int, pad: int = PAD) -> np.ndarray:
    """N equal RGB tiles (N x h x w x 3 uint8) laid out row by row, `columns` wide, with white gaps `pad` wide."""
    count, tile_h, tile_w = tiles.shape[:3]
    rows = math.ceil(count / columns)
    grid = np.empty((rows * (tile_h + pad) + pad, columns * (tile_w + pad) + pad, 3), dtype=np.uint8)
    grid[:] = PAD_COLOR
    for i in range(count):
        r, c = divmod(i, columns)
        top, left = pad + r * (tile_h + pad), pad + c * (tile_w + pad)
        grid[top:top + tile_h, left:left + tile_w] = tiles[i]
    return grid


@cache
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def text_px(image_width: int) -> int:
    """The font size, in the image's pixels, that reads as about 12 px once an `image_width` wide picture is shown
    `DISPLAY_PX` wide (never under 11)."""
    return max(11, round(12 * image_width / DISPLAY_PX))


def _label_tiles(grid: np.ndarray, channels, columns: int, tile_h: int, tile_w: int) -> np.ndarray:
    image = Image.fromarray(grid)
    draw = ImageDraw.Draw(image)
    font = _font(max(10, min(text_px(grid.shape[1]), tile_h // 3)))
    for i, channel in enumerate(channels):
        r, c = divmod(i, columns)
        x, y = PAD + c * (tile_w + PAD), PAD + r * (tile_h + PAD)
        text = str(int(channel))
        box = draw.textbbox((x + 2, y + 1), text, font=font)
        draw.rectangle((box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1), fill=(0, 0, 0))
        draw.text((x + 2, y + 1), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def colorbar(vmin: float, vmax: float, colormap_name: str = "viridis", width: int = 320, height: int = 14,
             caption: str = "", font_px: int = 11) -> np.ndarray:
    """A horizontal colour scale from `vmin` to `vmax` with its end values (and `caption`) written below; wider
    than `width` where the three texts need more room side by side."""
    font = _font(font_px)
    left, right = f"{vmin:.3g}", f"{vmax:.3g}"
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    needed = sum(measure(text, font=font) for text in (left, caption, right)) + 2 * font_px
    width = max(width, math.ceil(needed))
    strip = apply_colormap(np.linspace(0.0, 1.0, width)[None, :].repeat(height, axis=0), 0.0, 1.0, colormap_name)
    canvas = Image.new("RGB", (width, height + round(font_px * 1.45)), PAD_COLOR)
    canvas.paste(Image.fromarray(strip), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((0, height + 2), left, fill=(0, 0, 0), font=font)
    draw.text((width - draw.textlength(right, font=font), height + 2), right, fill=(0, 0, 0), font=font)
    if caption:
        draw.text(((width - draw.textlength(caption, font=font)) / 2, height + 2), caption, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def with_colorbar(picture: Mosaic) -> np.ndarray:
    """The mosaic with its colour scale underneath: one self-explaining image (for files and pages). A small
    mosaic (LeNet-5's six maps) is first enlarged, nearest neighbour, to about `DISPLAY_PX` wide, so that the scale's
    text is not blown up with it where the image is shown wider than it is."""
    caption = "per-channel min to max" if picture.per_channel else "activation"
    factor = math.ceil(DISPLAY_PX / picture.image.shape[1]) if picture.image.shape[1] < DISPLAY_PX else 1
    image = picture.image.repeat(factor, axis=0).repeat(factor, axis=1)
    width, font_px = image.shape[1], text_px(image.shape[1])
    bar = colorbar(picture.vmin, picture.vmax, picture.colormap, width=width // 2, height=font_px,
                   caption=caption, font_px=font_px)
    out = np.full((image.shape[0] + bar.shape[0] + 6, max(width, bar.shape[1]), 3), 255, dtype=np.uint8)
    out[:image.shape[0], :width] = image
    out[image.shape[0] + 6:, :bar.shape[1]] = bar
    return out


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D map resized bilinearly to `size` = (height, width), as float32."""
    tensor = torch.tensor(np.asarray(values, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay(values: np.ndarray, background: np.ndarray, colormap_name: str = "inferno", alpha: float = 0.55,
            vmin: float | None = None, vmax: float | None = None, by_value: bool = True,
            gray_background: bool = False) -> np.ndarray:
    """A 2-D map upsampled to the background image (H x W x 3 uint8) and blended over it; colours run from
    `vmin` to `vmax` (the map's own minimum and maximum by default). With `by_value` the colour's opacity
    grows with the value, from clear at `vmin` to `alpha` at `vmax`, so the image shows through where the map
    is quiet; otherwise it is `alpha` everywhere. With `gray_background` the image is shown in gray (luma) so
    that a heatmap's colours cannot be confused with the photo's own."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    if gray_background:
        background = grayscale(background)
    resized = resize_map(values, background.shape[:2])
    low = float(values.min()) if vmin is None else vmin
    high = float(values.max()) if vmax is None else vmax
    colored = apply_colormap(resized, low, high, colormap_name).astype(np.float32)
    opacity = alpha
    if by_value:
        scaled = (resized - low) / (high - low) if high > low else np.zeros_like(resized)
        opacity = alpha * np.clip(scaled, 0.0, 1.0)[..., None]
    blended = (1 - opacity) * background.astype(np.float32) + opacity * colored
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def grayscale(image: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 image as gray (ITU-R 601 luma), still H x W x 3 uint8."""
    luma = np.asarray(image, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat(np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def enlarge(values: np.ndarray, vmin: float, vmax: float, colormap_name: str = "viridis",
            min_side: int = 224) -> np.ndarray:
    """One map coloured and enlarged (nearest neighbour, integer factor) to at least `min_side` pixels."""
    colored = apply_colormap(np.asarray(values, dtype=np.float32), vmin, vmax, colormap_name)
    factor = max(1, math.ceil(min_side / max(values.shape)))
    return colored.repeat(factor, axis=0).repeat(factor, axis=1)


def network_view(batch: torch.Tensor, spec: ArchSpec) -> np.ndarray:
    """What the network sees: the first image of a preprocessed batch with its normalization undone, as
    H x W x 3 uint8 (the resized, centre-cropped picture that maps and CAMs line up with)."""
    image = batch[0].detach().float().cpu()
    mean = torch.tensor(spec.preprocessing.mean).view(-1, 1, 1)
    std = torch.tensor(spec.preprocessing.std).view(-1, 1, 1)
    pixels = (image * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    return pixels.permute(1, 2, 0).contiguous().numpy()


def filter_tiles(weight: torch.Tensor | np.ndarray, columns: int | None = None, min_tile: int = 40,
                 min_width: int = 0) -> np.ndarray:
    """A first convolution's kernels (C_out x C_in x k x k) as tiles: RGB for 3 input channels, gray for 1
    (other counts: the mean over inputs). Each kernel is stretched from its own minimum to maximum, as in
    Krizhevsky et al.'s and Zeiler & Fergus's figures, and enlarged to at least `min_tile` pixels, and further
    when the grid would be narrower than `min_width` (LeNet-5's six), with gaps that grow with the tiles."""
    kernels = weight.detach().float().cpu().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight, float)
    if kernels.ndim != 4:
        raise ValueError(f"expected convolution weights C_out x C_in x k x k, not shape {kernels.shape}")
    if kernels.shape[1] != 3:
        kernels = kernels.mean(axis=1, keepdims=True).repeat(3, axis=1)
    count, _, kh, kw = kernels.shape
    flat = kernels.reshape(count, -1)
    low = flat.min(axis=1)[:, None, None, None]
    span = (flat.max(axis=1) - flat.min(axis=1))[:, None, None, None]
    scaled = np.divide(kernels - low, span, out=np.full_like(kernels, 0.5), where=span > 0)
    tiles = np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    columns = min(columns or math.ceil(math.sqrt(count)), count)
    factor = max(1, math.ceil(max(min_tile, min_width / columns) / max(kh, kw)))
    tiles = tiles.repeat(factor, axis=1).repeat(factor, axis=2)
    return tile_grid(tiles, columns, pad=max(PAD, factor * max(kh, kw) // 12))


@dataclass(frozen=True)
class LayerFiles:
    """What `write_layer_pictures` wrote: the grid (with its colour scale) and one PNG per channel shown."""

    grid: Path
    channel_files: tuple[Path, ...]
    picture: Mosaic


def write_layer_pictures(values: np.ndarray, out_dir: str | Path, layer: str, top: int | None = None,
                         colormap_name: str = "viridis", order: str = "mean") -> LayerFiles:
    """Write a layer's maps as PNG: `<layer>_grid.png` (all channels or the first `top` in `order`, with the colour
    scale) and, for map-shaped layers, `<layer>/channel_NNNN.png` for each of those channels, coloured on the
    grid's scale and enlarged to at least 224 pixels, replacing the channel files an earlier call left there (they
    were coloured on another scale). A vector layer gets the grid only."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    picture = mosaic(values, top=top, order=order, colormap_name=colormap_name)
    grid = out_dir / f"{layer}_grid.png"
    Image.fromarray(with_colorbar(picture)).save(grid)
    files = []
    if np.ndim(values) == 3:
        folder = out_dir / layer
        folder.mkdir(exist_ok=True)
        for earlier in folder.glob("channel_*.png"):
            earlier.unlink()
        for channel in picture.channels:
            path = folder / f"channel_{channel:04d}.png"
            Image.fromarray(enlarge(values[channel], picture.vmin, picture.vmax, colormap_name)).save(path)
            files.append(path)
    return LayerFiles(grid, tuple(files), picture)
