"""MNIST and Fashion-MNIST (28×28 grey, 10 classes), in release order.

Checksums are of the pixel and label arrays (`bench.data.read.content_sha256`), so the
project's `.npz` copies and torchvision's idx files are verified alike. Statistics:
`../shared/data/SOURCES.md`.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.read import DatasetInfo, DatasetPlugin, NpzPart, find_file, read_idx
from bench.plugins.registry import register_dataset


class _IdxDataset(DatasetPlugin):
    torchvision_folder = ""

    def read_torchvision(self, root: Path, split: str):
        raw = root / self.torchvision_folder / "raw"
        prefix = "train" if split == "train" else "t10k"
        images = find_file(raw, f"{prefix}-images-idx3-ubyte")
        labels = find_file(raw, f"{prefix}-labels-idx1-ubyte")
        if images is None or labels is None:
            return None
        return read_idx(images)[..., None], read_idx(labels)


@register_dataset("mnist")
class MNIST(_IdxDataset):
    torchvision_folder = "MNIST"
    info = DatasetInfo("mnist", 10, (1, 28, 28), (0.130660,), (0.308108,), augment=False)
    splits = {
        "train": (NpzPart("mnist-train.npz",
                          "edc0d1098aa497be14ace79ddd5171e5a3dcf9c4d196c015389203eb3ba1f59b", 60000),),
        "test": (NpzPart("mnist-test.npz",
                         "c3f9adf9c66efb572b1f9326c3a511b45910c7173b97be66ceceeeeaef6b802b", 10000),),
    }


@register_dataset("fashion_mnist")
class FashionMNIST(_IdxDataset):
    torchvision_folder = "FashionMNIST"
    info = DatasetInfo("fashion_mnist", 10, (1, 28, 28), (0.286041,), (0.353024,), augment=False)
    splits = {
        "train": (NpzPart("fashion-mnist-train.npz",
                          "16d82e2b505296aa2b78bd5ea0992634f30419a4c97def7c907d154a35ac6157", 60000),),
        "test": (NpzPart("fashion-mnist-test.npz",
                         "9f1ec356a747bfe4ebab3cfb722d3694c9ca737e2570f6f90cf31d7b6fd689d4", 10000),),
    }
