"""Dataset registry: file names, checksums, mirrors, class names, shapes."""

from __future__ import annotations

from dataclasses import dataclass, field

from archbench.errors import UsageError

ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class DataFile:
    """One IDX file. ``sha256``/``nbytes`` describe the *decompressed* payload;
    ``gz_md5`` is the upstream mirror's checksum of the ``.gz`` bytes (Debian
    recompresses its copy, so only the payload hash is checked on local files)."""

    role: str
    name: str
    nbytes: int
    sha256: str
    gz_md5: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: tuple[DataFile, ...]
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int] = (1, 28, 28)
    mirrors: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()
    apt_package: str | None = None
    description: str = ""
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

_DATASETS: dict[str, DatasetSpec] = {FASHION_MNIST.name: FASHION_MNIST}


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
