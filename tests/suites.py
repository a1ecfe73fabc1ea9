"""The tiny suites the tests share, written once. A test writes one with the `suite_file`
fixture (tests/conftest.py) and varies it with `str.replace`, so each text here is part of
the tests' contract: change a line and grep for it first.

A suite only one module uses stays in that module, beside the tests it was written for."""

# One SmallCNN trained with SGD on 256 MNIST images (2 epochs of 4 steps: a few seconds on a
# CPU), evaluated clean on the first 32 test images, with a one-row table. Two epochs, so a
# resume file sits between them (tests/test_untrusted_files.py); `tags: [t]` for `--tag`.
ONE_MODEL = """\
version: 1
seed: 0
datasets:
  tiny: {plugin: mnist, train_subset: 256}
attacks:
  clean: {plugin: clean}
models:
  m:
    dataset: tiny
    arch: small_cnn
    defense: sgd
    train: {epochs: 2, batch_size: 64, lr: 0.05}
matrix:
  - name: main
    tags: [t]
    models: [m]
    attacks: [clean]
    eval: {n: 32, batch_size: 32}
tables:
  tab:
    title: One
    rows: [m]
    columns: [{attack: clean, label: Clean}]
"""

# A published checkpoint evaluated clean: `url`, `sha256` and `n` filled in by
# `published(url, sha256, n)`; no training, so the download is the whole cost.
PUBLISHED_MODEL = """\
version: 1
attacks:
  clean: {plugin: clean}
models:
  m_pub:
    label: "SmallCNN (published)"
    dataset: mnist
    arch: small_cnn
    checkpoint:
      url: "URL"SHA
matrix:
  - name: pub
    tags: [pub]
    models: [m_pub]
    attacks: [clean]
    eval: {n: N, batch_size: N}
"""


def published(url: str, sha256: str | None, n: int) -> str:
    """PUBLISHED_MODEL for one checkpoint URL (pinned to `sha256` when given)."""
    sha = f'\n      sha256: "{sha256}"' if sha256 else ""
    return (PUBLISHED_MODEL.replace('"URL"', f'"{url}"').replace("SHA", sha)
            .replace("{n: N, batch_size: N}", f"{{n: {n}, batch_size: {n}}}"))
