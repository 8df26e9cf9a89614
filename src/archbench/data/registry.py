"""Dataset registry: file names, checksums, mirrors, class names, shapes."""

from __future__ import annotations

from dataclasses import dataclass, field

from archbench.errors import UsageError

ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class DataFile:
    """One IDX file. ``sha256``/``nbytes`` describe the *decompressed* payload;
    ``gz_md5`` is the upstream mirrors' checksum of the ``.gz`` bytes. The
    payload hash verifies any copy (Debian recompresses its Fashion-MNIST);
    where only ``gz_md5`` is published (``sha256`` None), an unmodified ``.gz``
    download is what can be verified."""

    role: str
    name: str
    nbytes: int
    sha256: str | None
    gz_md5: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """What archbench knows about a dataset: for registry datasets its files,
    checksums and mirrors; for a dataset loaded from a path (``.npz``, CIFAR
    batches, an image folder) or from scikit-learn (``digits``) a spec made
    at load time, with ``files=()``.

    ``image_shape`` is ``(C, H, W)``. ``mirror_symmetric`` is ``True`` or
    ``False`` where known and ``None`` where unknown (an ``.npz`` or a folder
    of images says nothing about it): treat ``None`` as "do not flip"."""

    name: str
    files: tuple[DataFile, ...]
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int] = (1, 28, 28)
    mirrors: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()
    apt_package: str | None = None
    description: str = ""
    # Do the classes keep their identity in a mirror image? (Clothes do; digits
    # and characters do not, so flip augmentation/TTA would teach the wrong thing.)
    # None: unknown (user data); callers must not flip unless told to.
    mirror_symmetric: bool | None = True
    extra: dict = field(default_factory=dict)

    def file(self, role: str) -> DataFile:
        for f in self.files:
            if f.role == role:
                return f
        raise KeyError(role)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    description="Zalando's Fashion-MNIST: 60,000 train / 10,000 test 28x28 grey images, 10 classes",
    files=(
        DataFile(
            "train_images", "train-images-idx3-ubyte", 47040016,
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        ),
        DataFile(
            "train_labels", "train-labels-idx1-ubyte", 60008,
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "25c81989df183df01b3e8a0aad5dffbe",
        ),
        DataFile(
            "test_images", "t10k-images-idx3-ubyte", 7840016,
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "bef4ecab320f06d8554ea6380940ec79",
        ),
        DataFile(
            "test_labels", "t10k-labels-idx1-ubyte", 10008,
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ),
    classes=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    apt_package="dataset-fashion-mnist",
)


def _idx_files(md5s: tuple[str, str, str, str]) -> tuple[DataFile, ...]:
    """The four 28x28 IDX files of a 60,000/10,000 MNIST-layout dataset, with
    the MD5s of their upstream ``.gz`` files (the only checksums published)."""
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    sizes = (16 + 60000 * 784, 8 + 60000, 16 + 10000 * 784, 8 + 10000)
    return tuple(DataFile(role, name, size, None, md5) for role, name, size, md5 in zip(ROLES, names, sizes, md5s))


# MD5s as published with torchvision's MNIST and KMNIST datasets (the same in
# the KMNIST authors' repository); not verified against downloads from this
# project's machines, which have no route to the mirrors.
MNIST = DatasetSpec(
    name="mnist",
    description="LeCun, Cortes & Burges' MNIST handwritten digits: 60,000 train / 10,000 test 28x28 grey images",
    files=_idx_files(("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                      "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")),
    classes=tuple(str(d) for d in range(10)),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    mirror_symmetric=False,
)

KMNIST = DatasetSpec(
    name="kmnist",
    description="Kuzushiji-MNIST (ROIS-DS CODH, CC BY-SA 4.0): 60,000 train / 10,000 test 28x28 images "
                "of ten cursive hiragana",
    files=_idx_files(("bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
                      "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134")),
    classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    mirrors=(
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ),
    mirror_symmetric=False,
)

_DATASETS: dict[str, DatasetSpec] = {d.name: d for d in (FASHION_MNIST, MNIST, KMNIST)}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    _DATASETS[spec.name] = spec
    return spec


def get_dataset_spec(name: str) -> DatasetSpec:
    try:
        return _DATASETS[name]
    except KeyError:
        raise UsageError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(_DATASETS))}."
        ) from None


def list_datasets() -> list[str]:
    return sorted(_DATASETS)
