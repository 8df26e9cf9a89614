"""Image-folder trees, ``train/<class>/*`` and ``test/<class>/*``
(:func:`load_folder`), decoded with Pillow."""

from __future__ import annotations

import functools
import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from archbench.data.arrays import check_no_empty_class, check_two_classes, rows_per_chunk
from archbench.data.dataset import SPLITS, Dataset, stream
from archbench.data.registry import DatasetSpec
from archbench.data.storage import Threshold, choose_storage, float32_bytes, read_raw, resolve_threshold
from archbench.errors import DataError, path_error

if TYPE_CHECKING:
    from PIL import Image
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Image files of other formats: not read (their decoding has more choices: frames, bit depths, colour spaces), but
# named in the notes, as data the user likely meant to use.
OTHER_IMAGE_SUFFIXES = (".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".heic", ".heif",
                        ".jfif", ".jp2", ".avif", ".tga", ".psd", ".svg")
# Image modes accepted from a folder, and their channel counts. Others (palette "P", bilevel "1", 16-bit "I;16",
# "CMYK", ...) are refused rather than converted: the user decides how their pixels become 8-bit L/RGB.
FOLDER_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


@dataclass
class _Image:
    path: Path
    label: int


def _entry_is(entry: os.DirEntry, directory: bool) -> bool:
    """Is ``entry`` a directory (else: a regular file), symbolic links
    followed? An entry that cannot be looked up (a symbolic link loop) is a
    DataError naming it."""
    try:
        return entry.is_dir() if directory else entry.is_file()
    except OSError as exc:
        raise path_error(entry.path, "image-folder entry", exc, DataError) from None


def _ignored_kind(entry: os.DirEntry) -> str:
    if entry.name.startswith("."):
        return "hidden"
    if _entry_is(entry, True):
        return "folder"
    return "image" if entry.name.lower().endswith(OTHER_IMAGE_SUFFIXES) else "other"


def _folder_notes(name: str, ignored: list[tuple[str, str]]) -> list[str]:
    """Sentences for what an image folder held that is not read (hidden
    files, such as .DS_Store, only counted in the card's details)."""
    notes = []
    for kind, what, why in (
        ("image", "image file{s} in a format archbench does not read",
         "only PNG, JPEG and BMP are read; convert {them} (e.g. with Pillow) to use {them}"),
        ("folder", "folder{s} not read",
         "only train/ and test/, and the files directly inside train/<class>/ and test/<class>/, are read; "
         "subfolders of a class folder are not searched"),
        ("other", "other file{s} ignored", "not .png/.jpg/.jpeg/.bmp files"),
    ):
        paths = [p for k, p in ignored if k == kind]
        if paths:
            n = len(paths)
            eg = ", ".join(paths[:3]) + (", ..." if n > 3 else "")
            words = {"s": "" if n == 1 else "s", "them": "it" if n == 1 else "them"}
            notes.append(f"{name}: {n} {what.format(**words)} (e.g. {eg}): {why.format(**words)}.")
    return notes


def _scan_folder(root: Path) -> tuple[tuple[str, ...], dict[str, list[_Image]], dict, list[str]]:
    """Class names and ``{split: [images]}`` of an image-folder tree, with
    what was ignored (details, and notes for a person); named errors for a
    missing split, differing class sets, fewer than two classes, and empty
    class folders."""
    for s in SPLITS:
        if not (root / s).is_dir():
            raise DataError(f"{root}: no {s}/ folder; an image-folder dataset needs train/<class>/ and "
                            "test/<class>/ holding the images.")
    ignored: list[tuple[str, str]] = []  # (kind, path relative to root)

    def listdir(d: Path) -> list[os.DirEntry]:
        try:
            with os.scandir(d) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"cannot read the folder {d}: {exc.strerror or exc}.") from exc

    ignored += [(_ignored_kind(e), e.name) for e in listdir(root) if e.name not in SPLITS]
    class_dirs: dict[str, list[str]] = {}
    for s in SPLITS:
        names = []
        for e in listdir(root / s):
            if _entry_is(e, True) and not e.name.startswith("."):
                names.append(e.name)
            else:
                ignored.append((_ignored_kind(e), f"{s}/{e.name}"))
        if not names:
            raise DataError(f"{root / s}: no class folders; put each class's images in {s}/<class name>/.")
        class_dirs[s] = names
    train_set, test_set = set(class_dirs["train"]), set(class_dirs["test"])
    if train_set != test_set:
        only_train, only_test = sorted(train_set - test_set), sorted(test_set - train_set)
        parts = ([f"only in train/: {', '.join(only_train)}"] if only_train else []) + (
            [f"only in test/: {', '.join(only_test)}"] if only_test else [])
        raise DataError(f"{root}: train/ and test/ have different class folders ({'; '.join(parts)}); both splits "
                        "must have the same classes (add the missing folders, or remove the extra ones).")
    classes = tuple(sorted(train_set))
    check_two_classes(classes, str(root / "train"), "class folders",
                      "Put each class's images in its own folder, train/<class>/ and test/<class>/, for at least "
                      "two classes.")
    images: dict[str, list[_Image]] = {s: [] for s in SPLITS}
    for s in SPLITS:
        for label, name in enumerate(classes):
            d = root / s / name
            found = 0
            for e in listdir(d):
                if _entry_is(e, False) and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_SUFFIXES):
                    images[s].append(_Image(Path(e.path), label))
                    found += 1
                else:
                    ignored.append((_ignored_kind(e), f"{s}/{name}/{e.name}"))
            if not found:
                raise DataError(f"{d}: empty class folder (no {'/'.join(x[1:] for x in IMAGE_SUFFIXES)} files); "
                                f"every class needs images in both splits. Add images or remove the class "
                                f"folder from train/ and test/.")
    kinds = {k: sum(1 for kind, _ in ignored if kind == k) for k in ("image", "folder", "other", "hidden")}
    details = {"ignored_entries": len(ignored), "ignored_examples": [p for _, p in ignored[:5]],
               "ignored_kinds": {k: v for k, v in kinds.items() if v}}
    return classes, images, details, _folder_notes(root.name or str(root), ignored)


def _open_image(path: Path, raw: bytes) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    buf = io.BytesIO(raw)
    try:
        return Image.open(buf)
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not a readable image (Pillow does not recognise its contents as an image "
                        "format); replace or remove the file.") from exc
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        why = str(exc).replace(repr(buf), path.name)  # Pillow names the stream, not the file
        raise DataError(f"{path}: not a readable image ({why}); replace or remove the file.") from exc


def load_folder(root: str | os.PathLike, threshold: Threshold | None = None) -> Dataset:
    """An image-folder tree: ``train/<class>/*`` and ``test/<class>/*``
    (PNG, JPEG or BMP; hidden files, other files and subfolders of a class
    folder are ignored: counted in the card's details, and, except hidden
    files, named in the dataset's ``notes``). Class names are the folder
    names, sorted (label i is the i-th); both splits must have the same
    classes, at least two, and no class folder may be empty. Images are read with Pillow and kept as they are:
    all must share one size and one mode, L (C=1), LA (2), RGB (3) or RGBA
    (4); anything else (other modes, mixed modes, mixed sizes) is an error
    naming the file, not a silent conversion. Samples are ordered by class,
    then file name. Mirror symmetry is unknown (None).

    JPEG pixels depend on the decoder (libjpeg version): ``identity_sha256``
    is over the decoded pixels, and the card records Pillow's version."""
    import PIL

    threshold = threshold or resolve_threshold()
    root = Path(root)
    classes, images, details, notes = _scan_folder(root)
    # Header pass: every file opened (not decoded) to check mode and size before anything is stored.
    key = hashlib.sha256(b"folder-v1\n")
    first: tuple[Path, str, tuple[int, int]] | None = None
    for s in SPLITS:
        for item in images[s]:
            raw = read_raw(item.path)
            key.update(f"{s}/{item.path.parent.name}/{item.path.name}\n".encode())
            key.update(hashlib.sha256(raw).digest())
            with _open_image(item.path, raw) as im:
                mode, size = im.mode, im.size
            if mode not in FOLDER_MODES:
                raise DataError(f"{item.path}: image mode {mode!r} is not one archbench reads as is "
                                f"({', '.join(FOLDER_MODES)}); convert the images, e.g. with Pillow "
                                "im.convert('RGB') or im.convert('L'), and save them again.")
            if first is None:
                first = (item.path, mode, size)
                continue
            if size != first[2]:
                raise DataError(f"{item.path}: ragged images: this one is {size[0]}x{size[1]} (WxH) but {first[0]} "
                                f"is {first[2][0]}x{first[2][1]}; every image must have one size. Resize them all "
                                "to one size first.")
            if mode != first[1]:
                raise DataError(f"{item.path}: mixed channel counts: mode {mode} ({FOLDER_MODES[mode]} channels) "
                                f"but {first[0]} is {first[1]} ({FOLDER_MODES[first[1]]}); convert every image to "
                                "one mode (e.g. all RGB) first.")
    assert first is not None  # _scan_folder refuses empty classes
    c, (w, h) = FOLDER_MODES[first[1]], first[2]
    n = {s: len(images[s]) for s in SPLITS}
    labels = {s: np.array([i.label for i in images[s]], dtype=np.int64) for s in SPLITS}
    check_no_empty_class(labels["train"], classes, str(root / "train"), "class folders")

    def chunks(s: str) -> Iterator[np.ndarray]:
        step = rows_per_chunk(c * h * w)
        for i in range(0, n[s], step):
            part = images[s][i:i + step]
            out = np.empty((len(part), c, h, w), dtype=np.uint8)
            for j, item in enumerate(part):
                with _open_image(item.path, read_raw(item.path)) as im:
                    if im.mode != first[1] or im.size != first[2]:
                        raise DataError(f"{item.path}: changed while being read (mode {im.mode}, size {im.size}); "
                                        "load the dataset again.")
                    try:
                        arr = np.asarray(im)
                    except (OSError, ValueError) as exc:
                        raise DataError(f"{item.path}: cannot decode the image ({exc}); replace or remove "
                                        "the file.") from exc
                out[j] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            yield out

    spec = DatasetSpec(name=root.resolve().name or str(root), files=(), classes=classes, image_shape=(c, h, w),
                       description=f"image folder {root}", mirror_symmetric=None)
    suffixes = sorted({i.path.suffix.lower() for s in SPLITS for i in images[s]})
    needed = float32_bytes(n["train"] + n["test"], (c, h, w))
    return stream(spec, n, {s: functools.partial(chunks, s) for s in SPLITS}, labels,
                   storage=choose_storage(needed, threshold), needed=needed, threshold=threshold,
                   source_key=lambda: "folder-" + key.hexdigest(), files={"folder": str(root)}, source="folder",
                   fmt=f"image folder ({', '.join(x[1:].upper() for x in suffixes)}; mode {first[1]})",
                   details={**details, "pillow": PIL.__version__, "mode": first[1]}, test_split={"from": "source"},
                   notes=notes)
