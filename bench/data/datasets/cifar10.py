"""CIFAR-10 (32×32 RGB, 10 classes), in release order; train augmented with crop + flip.

The train split is the official `data_batch_1..5` in order; the project's layout keeps
it as five parts `cifar10-train-{0..4}.npz`. Mean/std are measured on the train split
(`../shared/data/SOURCES.md`).
"""

from __future__ import annotations

from pathlib import Path

from bench.data.read import DatasetInfo, DatasetPlugin, NpzPart, read_cifar_pickles
from bench.plugins.registry import register_dataset

_TRAIN_SHA = (
    "8350d89ba6404c270d263d84bf037e74b0158eecac79f27405efcf23445a6997",
    "28d2d506ff2e052a3c902ac74931514d4c22d54b3f23622088bee441ab096cf0",
    "e56532de152c7a77fc2a722499682f2699ce5177bbfac2ed2e415096184fa1d9",
    "bb996a8ffff861dd5cca88c397fdfb884f0c482c5588bd32cea3dc7b648709bb",
    "efb6334c7c1f88ac69032959408d9eeccb983002e83119b66de7309d3d2c7915",
)

# md5 of the official python batches: torchvision 0.29.1, torchvision/datasets/cifar.py,
# CIFAR10.train_list and CIFAR10.test_list (a batch is read only if it matches).
_TORCHVISION_MD5 = {
    "train": {"data_batch_1": "c99cafc152244af753f735de768cd75f",
              "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
              "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
              "data_batch_4": "634d18415352ddfa80567beed471001a",
              "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb"},
    "test": {"test_batch": "40351d587109b95175f43aff81a1287e"},
}


@register_dataset("cifar10")
class CIFAR10(DatasetPlugin):
    info = DatasetInfo("cifar10", 10, (3, 32, 32), (0.491400, 0.482158, 0.446531),
                       (0.247032, 0.243485, 0.261588), augment=True, crop_padding=4)
    splits = {
        "train": tuple(NpzPart(f"cifar10-train-{k}.npz", sha, 10000) for k, sha in enumerate(_TRAIN_SHA)),
        "test": (NpzPart("cifar10-test.npz",
                         "8193b3fbce55bec361cd1b8fd4880cb1649832dc4d6de6da1e7a21847a4843aa", 10000),),
    }
    # the five train parts as one array (torchvision's layout has no parts)
    combined_sha256 = {
        tuple(p.file for p in splits["train"]):
            "f912919bdea371136f1aa4feed6beeca728015a5f08b1899a29c932a7e30be2b",
    }

    def read_torchvision(self, root: Path, split: str):
        return read_cifar_pickles(root / "cifar-10-batches-py", _TORCHVISION_MD5[split])

    def torchvision_present(self, root: Path, split: str) -> bool:
        return all((root / "cifar-10-batches-py" / n).is_file() for n in _TORCHVISION_MD5[split])
