"""Datasets: digits, MNIST from a local root, folders, safe zip extraction, the split and the preprocessing."""
import io
import shutil
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import (DatasetError, ZipLimits, check_dataset, extract_zip, image_side, load_dataset,
                         load_folder, save_uploaded_archive, stratified_split, suggested_input_size, torchvision_root,
                         transforms_for)
from cnnlab.naming import dataset_label
from cnnlab.registry import get_spec


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def write_digit_folder(root, digits, per_class=6, classes=(0, 1, 2)):
    """Class folders of PNGs made from real sklearn digits (upsampled to 32x32)."""
    for label in classes:
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        indices = np.flatnonzero(digits.targets == label)[:per_class]
        for i in indices:
            pixels = digits[int(i)][0].squeeze(0).numpy()
            Image.fromarray(pixels).resize((32, 32), Image.NEAREST).save(folder / f"{i}.png")
    return root


def test_digits_are_real_images_with_ten_classes(digits):
    assert len(digits) == 1797 and digits.classes == tuple(str(d) for d in range(10))
    image, label = digits[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.uint8 and label == 0
    assert image.max() > 200 and image.min() == 0
    assert digits.content_hash == load_dataset("digits").content_hash


def test_split_is_stratified_disjoint_and_reproducible(digits):
    train, val = stratified_split(digits.targets, 0.2, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(digits)
    counts = np.bincount(digits.targets)
    val_counts = np.bincount(digits.targets[val], minlength=10)
    assert np.all(np.abs(val_counts - 0.2 * counts) <= 1)
    again, _ = stratified_split(digits.targets, 0.2, seed=3)
    other, _ = stratified_split(digits.targets, 0.2, seed=4)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_split_refuses_a_class_with_one_image():
    with pytest.raises(DatasetError, match="at least 2 images"):
        stratified_split(np.array([0, 0, 0, 1]), 0.5)


def test_preprocessing_follows_the_spec(digits):
    image, _ = digits[0]
    lenet = transforms_for(get_spec("lenet5"), train=False)(image)
    assert lenet.shape == (1, 32, 32) and lenet.dtype == torch.float32
    assert lenet.min() == pytest.approx(-1.0)  # black background, mean 0.5 std 0.5
    lite = transforms_for(get_spec("tf_efficientnet_lite0"), train=False)(image)
    assert lite.shape == (3, 224, 224)
    assert torch.equal(lite[0], lite[1]) and torch.equal(lite[1], lite[2])  # gray copied to three channels
    small = transforms_for(get_spec("tf_efficientnet_lite0"), train=False, image_size=64)(image)
    assert small.shape == (3, 64, 64)
    assert get_spec("tf_efficientnet_lite0").preprocessing_at(64).resize == 73  # 256/224 of 64
    rgb = Image.new("RGB", (40, 30), (255, 0, 0))
    assert transforms_for(get_spec("lenet5"), train=False)(rgb).shape == (1, 32, 32)


def test_training_augmentation_is_light_and_random(digits):
    image, _ = digits[5]
    spec = get_spec("lenet5")
    plain = transforms_for(spec, train=False)(image)
    augmented = [transforms_for(spec, train=True)(image) for _ in range(12)]  # one draw in 50 leaves 4 alike
    assert any(not torch.equal(a, augmented[0]) for a in augmented[1:])
    assert all(torch.equal(transforms_for(spec, train=False)(image), plain) for _ in range(2))
    assert all((a - plain).abs().mean() < 0.5 for a in augmented)


def test_folder_dataset_skips_unreadable_files(tmp_path, digits):
    root = write_digit_folder(tmp_path / "data", digits)
    (root / "class_1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "class_2" / "notes.txt").write_text("not an image")
    images = load_dataset(f"folder:{root}")
    assert images.classes == ("class_0", "class_1", "class_2") and len(images) == 18
    assert sorted(images.skipped) == ["class_1/broken.png", "class_2/notes.txt"]
    image, label = images[7]
    assert image.size == (32, 32) and image.mode == "RGB" and label == 1
    before = images.content_hash
    Image.new("L", (32, 32), 255).save(next((root / "class_0").glob("*.png")))
    assert load_dataset(f"folder:{root}").content_hash != before


def test_folder_dataset_errors_are_clear(tmp_path, digits):
    root = write_digit_folder(tmp_path / "one", digits, classes=(0,))
    with pytest.raises(DatasetError, match=r"needs one folder per class, at least 2 .*; found only class_0/$"):
        load_folder(root)
    root = write_digit_folder(tmp_path / "empty", digits, classes=(0, 1))
    (root / "class_9").mkdir()
    (root / "class_9" / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=f"no readable image in {root}: class_9"):
        load_folder(root)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="missing does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DatasetError, match="a-file is not a folder"):
        load_dataset(f"folder:{tmp_path / 'a-file'}")


def test_a_dataset_is_checked_before_a_run_and_named_as_its_user_knows_it(tmp_path, digits, isolated_data_dir):
    digits_check = check_dataset("digits")
    assert (digits_check.images, len(digits_check.classes)) == (1797, 10)
    assert digits_check.describe() == ("digits: 1,797 images in 10 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), "
                                       "typically 8 px on their shorter side.")
    entries = {f"pets/{c}/{i}.png": png_bytes(40 * i + (100 if c == "dog" else 0)) for c in ("cat", "dog")
               for i in range(3)}
    archive = save_uploaded_archive(zip_of(entries, tmp_path / "a.zip").read_bytes(), "My pets!.zip")
    assert archive.name == "My pets.zip" and archive.is_relative_to(isolated_data_dir / "uploads")
    check = check_dataset(f"zip:{archive}")
    assert check.describe() == "My pets.zip: 6 images in 2 classes (cat, dog), typically 16 px on their shorter side."
    assert dataset_label(f"folder:{tmp_path / 'pets'}") == "pets/" and dataset_label("mnist:/data") == "mnist:/data"

    one_class = save_uploaded_archive(zip_of({f"zero/{i}.png": png_bytes(i) for i in range(3)},
                                             tmp_path / "b.zip").read_bytes(), "zero.zip")
    with pytest.raises(DatasetError, match=r"^zero.zip needs one folder per class, at least 2 .*; found only zero/$"):
        check_dataset(f"zip:{one_class}")
    flat = save_uploaded_archive(zip_of({f"{i}.png": png_bytes(i) for i in range(3)}, tmp_path / "f.zip").read_bytes(),
                                 "flat.zip")
    with pytest.raises(DatasetError, match=r"; found 3 files but no class folders \(0.png, 1.png, 2.png\)$"):
        check_dataset(f"zip:{flat}")
    lonely = {"pets/cat/1.png": png_bytes(1), "pets/cat/2.png": png_bytes(2), "pets/dog/1.png": png_bytes(3),
              "pets/dog/broken.jpg": b"not a jpeg"}
    singleton = save_uploaded_archive(zip_of(lonely, tmp_path / "s.zip").read_bytes(), "lonely.zip")
    with pytest.raises(DatasetError, match=r"^lonely.zip: every class needs at least 2 images to be split into train "
                                           r"and validation; dog has fewer \(1 unreadable file left out: dog/broken.jpg"):
        check_dataset(f"zip:{singleton}")
    escape = save_uploaded_archive(zip_of({"../evil.png": png_bytes(1), "a/1.png": png_bytes(2)},
                                          tmp_path / "c.zip").read_bytes(), "evil.zip")
    with pytest.raises(DatasetError, match="outside"):
        check_dataset(f"zip:{escape}")


def test_mnist_offline_without_a_copy_says_where_to_put_it(tmp_path, monkeypatch):
    import cnnlab.data
    import cnnlab.weights

    monkeypatch.setattr(cnnlab.weights, "host_reachable", lambda url: False)
    with pytest.raises(DatasetError, match=r"cannot be downloaded now \(offline\?\)\. Copy torchvision's MNIST/raw .* "
                                           f"to {tmp_path / 'MNIST' / 'raw'}, or"):
        check_dataset(f"mnist:{tmp_path}")
    with pytest.raises(DatasetError, match=f"^{tmp_path / 'nowhere'} does not exist and mnist cannot be downloaded"):
        check_dataset(f"mnist:{tmp_path / 'nowhere'}")  # a mistyped folder: said so, not 'mnist is not in'
    monkeypatch.setattr(cnnlab.weights, "host_reachable", lambda url: True)
    pending = check_dataset(f"mnist:{tmp_path}")
    assert pending.download_from == cnnlab.data.TORCHVISION_URLS["mnist"] and "downloads it first" in pending.describe()
    assert pending.num_classes == 10 and check_dataset("digits").num_classes == 10


def zip_of(entries: dict[str, bytes], path, symlinks=()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_tiny_images_start_at_a_smaller_input_size_and_photos_at_the_networks_own(tmp_path):
    lite0, lenet = get_spec("tf_efficientnet_lite0"), get_spec("lenet5")
    assets = Path(__file__).resolve().parents[1] / "assets"
    for name, picture in (("cats", "chelsea.png"), ("cups", "coffee.png"), ("people", "astronaut.png")):
        (tmp_path / "photos" / name).mkdir(parents=True)
        shutil.copy(assets / picture, tmp_path / "photos" / name / picture)
    (tmp_path / "photos" / "cats" / "again.png").write_bytes((assets / "chelsea.png").read_bytes())
    for c in "ab":
        (tmp_path / "tiny" / c).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "tiny" / c / f"{i}.png").write_bytes(png_bytes(40 * i))
    sides = {name: image_side(name) for name in ("digits", "cifar10", f"folder:{tmp_path / 'tiny'}",
                                                 f"folder:{tmp_path / 'photos'}", f"folder:{tmp_path / 'missing'}")}
    assert list(sides.values()) == [8, 32, 16, 350, None]  # shorter sides 300, 300 (the cat twice), 400, 512
    assert [suggested_input_size(lite0.image_size, lite0.min_input_size, side=s) for s in sides.values()] == [
        128, 128, 128, 224, 224]
    assert suggested_input_size(lenet.image_size, lenet.min_input_size, lenet.fixed_input_size, 8) == 32


def png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (16, 16), value).save(buffer, format="PNG")
    return buffer.getvalue()


def test_zip_dataset_is_extracted_and_loaded(tmp_path):
    entries = {f"shapes/{c}/{i}.png": png_bytes(40 * i + (100 if c == "b" else 0)) for c in "ab" for i in range(3)}
    entries["__MACOSX/shapes/._a"] = b"resource fork"
    archive = zip_of(entries, tmp_path / "upload.zip")
    images = load_dataset(f"zip:{archive}")
    assert images.classes == ("a", "b") and len(images) == 6 and images.skipped == ()
    assert extract_zip(archive) == extract_zip(archive)  # extracted once, reused


@pytest.mark.parametrize("entries, symlinks, message", [
    ({"../escape.png": b"x"}, (), "outside"),
    ({"/etc/owned.png": b"x"}, (), "outside"),
    ({"a/ok.png": b"x"}, (("a/link.png", "/etc/passwd"),), "symbolic link"),
    ({"a/inner.zip": b"PK\x03\x04"}, (), "nested archives"),
    ({"a/bomb.png": bytes(8 << 20)}, (), "zip bomb"),
])
def test_zip_attacks_are_refused(tmp_path, entries, symlinks, message):
    archive = zip_of(entries, tmp_path / "attack.zip", symlinks)
    with pytest.raises(DatasetError, match=message):
        extract_zip(archive, dest_root=tmp_path / "out")
    assert not (tmp_path / "escape.png").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # nothing left behind


def test_zip_caps_on_entries_and_total_size(tmp_path):
    archive = zip_of({f"a/{i}.png": png_bytes(i) for i in range(6)}, tmp_path / "many.zip")
    with pytest.raises(DatasetError, match="6 entries"):
        extract_zip(archive, ZipLimits(max_entries=5), dest_root=tmp_path / "out")
    with pytest.raises(DatasetError, match="too large"):
        extract_zip(archive, ZipLimits(max_total_bytes=200), dest_root=tmp_path / "out")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable zip"):
        extract_zip(tmp_path / "junk.zip", dest_root=tmp_path / "out")


def test_damaged_or_encrypted_zip_entries_are_a_clear_error(tmp_path):
    good = png_bytes(7)
    archive = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a/0.png", good)
    data = archive.read_bytes()
    at = data.index(good) + len(good) // 2
    archive.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
    with pytest.raises(DatasetError, match="'a/0.png' cannot be extracted: Bad CRC"):
        extract_zip(archive, dest_root=tmp_path / "out")

    locked = tmp_path / "locked.zip"
    with zipfile.ZipFile(locked, "w") as zf:
        zf.writestr("a/0.png", good)
    data = bytearray(locked.read_bytes())
    for header, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central: "encrypted"
        data[data.index(header) + flags_at] |= 0x1
    locked.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="encrypted"):
        extract_zip(locked, dest_root=tmp_path / "out2")


def write_idx(path, array: np.ndarray) -> None:
    code = {1: 0x0801, 3: 0x0803}[array.ndim]
    path.write_bytes(struct.pack(">I", code) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def test_mnist_reads_a_local_root(tmp_path, digits):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    pixels = torch.stack([digits[i][0] for i in range(100)]).float()
    images = torch.nn.functional.interpolate(pixels, size=(28, 28), mode="nearest").squeeze(1).numpy()
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", digits.targets[:100])
    mnist = load_dataset(f"mnist:{tmp_path}")
    assert len(mnist) == 100 and mnist.classes == tuple(str(d) for d in range(10))
    image, label = mnist[3]
    assert image.shape == (1, 28, 28) and label == digits.targets[3]
    for inside in (tmp_path / "MNIST", raw):  # pointed at the folder itself, not the one that holds it
        assert len(load_dataset(f"mnist:{inside}")) == 100
    assert torchvision_root("cifar10", tmp_path / "cifar-10-batches-py") == tmp_path
    assert torchvision_root("cifar10", tmp_path / "MNIST") == tmp_path / "MNIST"
    with pytest.raises(DatasetError, match=f"no {tmp_path / 'elsewhere' / 'MNIST' / 'raw'}"):
        load_dataset(f"mnist:{tmp_path / 'elsewhere'}", download=False)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_torchvision_dataset_fails_clearly(tmp_path, name):
    with pytest.raises(DatasetError, match=f"{name} is not in"):
        load_dataset(f"{name}:{tmp_path}", download=False)


def test_a_folder_image_is_what_predict_sees_of_the_same_file_upright_and_preprocessed_alike(tmp_path, digits):
    from cnnlab.images import preprocess, read_image

    root = write_digit_folder(tmp_path / "data", digits)
    photo = Image.new("RGB", (80, 40), (0, 0, 255))
    photo.paste((255, 0, 0), (0, 0, 80, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone photo stored sideways, shown rotated
    photo.save(root / "class_0" / "phone.jpg", quality=95, exif=exif.tobytes())
    images = load_folder(root)
    [upright] = [image for image, _ in images if image.size != (32, 32)]
    assert upright.size == (40, 80), "trained upright, as Predict shows it"
    spec = get_spec("resnet18")
    seen_in_evaluation = transforms_for(spec, train=False, image_size=64)(upright)
    seen_by_predict = preprocess(read_image(root / "class_0" / "phone.jpg"), spec, image_size=64)
    assert torch.equal(seen_in_evaluation, seen_by_predict)


def test_a_folder_read_again_is_not_decoded_again_unless_a_file_changed(tmp_path, digits, monkeypatch):
    import cnnlab.data
    from cnnlab.images import read_image

    root = write_digit_folder(tmp_path / "data", digits)
    decoded = []
    monkeypatch.setattr(cnnlab.data, "read_image", lambda path: decoded.append(path) or read_image(path))
    cnnlab.data._decodes.cache_clear()
    assert len(load_folder(root)) == 18 and len(decoded) == 18
    assert len(load_folder(root)) == 18 and len(decoded) == 18, "checked, then trained: one decode per image"
    changed = next((root / "class_1").iterdir())
    changed.write_bytes(b"no longer a picture")
    again = load_folder(root)
    assert len(decoded) == 19 and len(again) == 17 and again.skipped == (str(changed.relative_to(root)),)
