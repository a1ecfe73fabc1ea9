"""Model plugins (WRN, CIFAR ResNets, timm adapter) and external checkpoint loading.

The architectures are checked three independent ways: exact parameter counts from closed
formulas (and the literal numbers they give), the full TRADES key set, and a functional
re-implementation of each source's forward pass run on the model's own state dict.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.plugins.config import ConfigError
from bench.errors import CheckpointError, PluginError
from bench.checkpoints.foreign import load_external_checkpoint
from bench.plugins.model import Normalize, build_model
from bench.plugins.registry import DATASETS, MODELS

CIFAR = DATASETS.get("cifar10").info
MNIST = DATASETS.get("mnist").info

# How the shape test builds each registered name: a family needing a variant gets one, and
# the generic `wrn` a small depth (wrn34_10 is the same code at full size).
BUILD_AS = {"timm": ("timm:resnet18", None), "wrn": ("wrn", {"depth": 16, "widen_factor": 2})}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def wrn34_10():
    torch.manual_seed(0)
    return build_model("wrn34_10", None, CIFAR)


# ----------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("info", [CIFAR, MNIST], ids=["cifar10", "mnist"])
@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_forward_shape(name, info):
    arch, values = BUILD_AS.get(name, (name, None))
    model = build_model(arch, values, info).eval()
    x = torch.rand(1 if name in ("wrn34_10",) else 2, *info.shape)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (x.shape[0], info.num_classes)
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------- counts

def wrn_formula(depth, k, classes=10, c_in=3, sub_block1=True):
    """Parameters of TRADES' WRN-depth-k, counted by hand from its definition."""
    n, w = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]

    def block(i, o):  # bn1(i) conv3x3 i→o, bn2(o), conv3x3 o→o, 1×1 shortcut when i ≠ o
        return 2 * i + 9 * i * o + 2 * o + 9 * o * o + (i * o if i != o else 0)

    def group(i, o):
        return block(i, o) + (n - 1) * block(o, o)

    return (9 * c_in * 16 + group(w[0], w[1]) * (2 if sub_block1 else 1) + group(w[1], w[2])
            + group(w[2], w[3]) + 2 * w[3] + w[3] * classes + classes)


def resnet_formula(depth, shortcut="B", classes=10, c_in=3):
    n, total, i = (depth - 2) // 6, 9 * c_in * 16 + 2 * 16, 16
    for o in (16, 32, 64):
        for j in range(n):
            cin = i if j == 0 else o
            total += 9 * cin * o + 2 * o + 9 * o * o + 2 * o
            if cin != o and shortcut == "B":
                total += cin * o + 2 * o
        i = o
    return total + 64 * classes + classes


def test_wrn34_10_parameter_count(wrn34_10):
    with_sub = n_params(wrn34_10)
    sub = sum(p.numel() for p in wrn34_10.sub_block1.parameters())
    assert with_sub == wrn_formula(34, 10) == 48_262_586
    # the often-quoted 46.16M is WRN-34-10 *without* the unused sub_block1
    assert with_sub - sub == wrn_formula(34, 10, sub_block1=False) == 46_160_474


def test_small_wrn_counts_and_sub_block1_flag():
    for depth, k, sub in ((16, 2, True), (16, 2, False), (10, 1, True)):
        m = build_model("wrn", {"depth": depth, "widen_factor": k, "sub_block1": sub}, MNIST)
        assert n_params(m) == wrn_formula(depth, k, c_in=1, sub_block1=sub)
        assert hasattr(m, "sub_block1") == sub


def test_wrn28_4_is_mma_network():
    m = build_model("wrn28_4", None, CIFAR)
    assert isinstance(m, nn.Sequential) and type(m[0]).__name__ == "PerImageStandardize"
    assert not hasattr(m[1], "sub_block1")
    assert n_params(m) == wrn_formula(28, 4, sub_block1=False) == 5_849_050


def test_resnet_parameter_counts():
    r20 = build_model("resnet20", None, CIFAR)
    assert n_params(r20) == resnet_formula(20, "B") == 272_474
    r20a = build_model("resnet20", {"shortcut": "A"}, CIFAR)
    assert n_params(r20a) == resnet_formula(20, "A") == 269_722          # He et al.'s 0.27M
    r110 = build_model("resnet110", None, CIFAR)
    assert n_params(r110) == resnet_formula(110, "B") == 1_730_714       # 1.7M
    assert n_params(build_model("cifar_resnet", {"depth": 56}, MNIST)) == resnet_formula(56, c_in=1)


# ----------------------------------------------------------------------------- TRADES names

def trades_keys(n=5, sub_block1=True):
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{s}" for s in bn}
    for g in ("block1", "block2", "block3") + (("sub_block1",) if sub_block1 else ()):
        for i in range(n):
            p = f"{g}.layer.{i}"
            keys |= {f"{p}.bn1.{s}" for s in bn} | {f"{p}.bn2.{s}" for s in bn}
            keys |= {f"{p}.conv1.weight", f"{p}.conv2.weight"}
            if i == 0:
                keys.add(f"{p}.convShortcut.weight")
    return keys


def test_wrn34_10_has_trades_state_dict_names_and_shapes(wrn34_10):
    sd = wrn34_10.state_dict()
    assert set(sd) == trades_keys()
    assert sd["block1.layer.0.convShortcut.weight"].shape == (160, 16, 1, 1)
    assert sd["sub_block1.layer.4.conv2.weight"].shape == (160, 160, 3, 3)
    assert sd["block2.layer.0.conv1.weight"].shape == (320, 160, 3, 3)
    assert sd["block3.layer.4.conv2.weight"].shape == (640, 640, 3, 3)
    assert sd["bn1.weight"].shape == (640,) and sd["fc.weight"].shape == (10, 640)


def test_wrn34_10_trades_init(wrn34_10):
    w = wrn34_10.block3.layer[4].conv2.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (9 * 640)), rel=0.02)
    assert wrn34_10.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 16)), rel=0.2)
    assert torch.all(wrn34_10.block2.layer[0].bn1.weight == 1)
    assert torch.all(wrn34_10.block2.layer[0].bn1.bias == 0)
    assert torch.all(wrn34_10.fc.bias == 0) and wrn34_10.fc.weight.abs().sum() > 0


# ----------------------------------------------------------------------------- forward = source

def _randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                        sd[p + ".bias"], False, 0.0, 1e-5)


def trades_wrn_reference(sd, x):
    """TRADES WideResNet.forward (eval), written out functionally."""
    out = F.conv2d(x, sd["conv1.weight"], padding=1)
    for g, stride in (("block1", 1), ("block2", 2), ("block3", 2)):
        i = 0
        while f"{g}.layer.{i}.conv1.weight" in sd:
            p, s = f"{g}.layer.{i}", (stride if i == 0 else 1)
            act = F.relu(_bn(out, sd, p + ".bn1"))
            short = (F.conv2d(act, sd[p + ".convShortcut.weight"], stride=s)
                     if p + ".convShortcut.weight" in sd else out)
            h = F.relu(_bn(F.conv2d(act, sd[p + ".conv1.weight"], stride=s, padding=1), sd, p + ".bn2"))
            out = short + F.conv2d(h, sd[p + ".conv2.weight"], padding=1)
            i += 1
    out = F.avg_pool2d(F.relu(_bn(out, sd, "bn1")), 8).flatten(1)
    return F.linear(out, sd["fc.weight"], sd["fc.bias"])


def bearpaw_resnet_reference(sd, x, shortcut="B"):
    """locuslab/smoothing cifar_resnet ResNet.forward (eval) functionally; "A" zero-pads."""
    out = F.relu(_bn(F.conv2d(x, sd["conv1.weight"], padding=1), sd, "bn1"))
    for g, stride in (("layer1", 1), ("layer2", 2), ("layer3", 2)):
        i = 0
        while f"{g}.{i}.conv1.weight" in sd:
            p, s = f"{g}.{i}", (stride if i == 0 else 1)
            h = F.relu(_bn(F.conv2d(out, sd[p + ".conv1.weight"], stride=s, padding=1), sd, p + ".bn1"))
            h = _bn(F.conv2d(h, sd[p + ".conv2.weight"], padding=1), sd, p + ".bn2")
            if p + ".downsample.0.weight" in sd:
                res = _bn(F.conv2d(out, sd[p + ".downsample.0.weight"], stride=s), sd, p + ".downsample.1")
            elif h.shape[1] != out.shape[1]:
                assert shortcut == "A"
                pad = (h.shape[1] - out.shape[1]) // 2
                res = F.pad(out[:, :, ::s, ::s], (0, 0, 0, 0, pad, pad))
            else:
                res = out
            out = F.relu(h + res)
            i += 1
    return F.linear(F.avg_pool2d(out, 8).flatten(1), sd["fc.weight"], sd["fc.bias"])


def test_wrn_forward_matches_trades_and_ignores_sub_block1():
    m = build_model("wrn", {"depth": 16, "widen_factor": 2}, CIFAR)
    _randomize_bn(m)
    m.eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = m(x)
        torch.testing.assert_close(out, trades_wrn_reference(m.state_dict(), x), rtol=1e-4, atol=1e-4)
        for p in m.sub_block1.parameters():
            p.add_(1.0)
        torch.testing.assert_close(m(x), out)
    m.train()
    F.cross_entropy(m(x), torch.tensor([0, 1, 2])).backward()   # in-place ReLUs are autograd-safe
    assert m.sub_block1.layer[0].conv1.weight.grad is None
    assert m.block1.layer[0].conv1.weight.grad is not None


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet_forward_matches_bearpaw(shortcut):
    m = build_model("resnet20", {"shortcut": shortcut, "normalize": False}, CIFAR)
    _randomize_bn(m)
    m.eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), bearpaw_resnet_reference(m.state_dict(), x, shortcut),
                                   rtol=1e-4, atol=1e-4)
    m.train()
    F.cross_entropy(m(x), torch.tensor([0, 1, 2])).backward()


def test_resnet_normalisation_layer():
    m = build_model("resnet110", None, CIFAR)
    assert isinstance(m[0], Normalize)
    torch.testing.assert_close(m[0].std.flatten(), torch.tensor([0.2023, 0.1994, 0.2010]))
    torch.testing.assert_close(m[0].mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))
    m = build_model("resnet20", {"norm_stats": "dataset"}, CIFAR)
    torch.testing.assert_close(m[0].std.flatten(), torch.tensor(CIFAR.std))
    m = build_model("resnet20", None, MNIST)
    torch.testing.assert_close(m[0].mean.flatten(), torch.tensor(MNIST.mean))
    assert not isinstance(build_model("resnet20", {"normalize": False}, CIFAR), nn.Sequential)


def test_per_image_standardisation():
    m = build_model("wrn28_4", None, CIFAR)
    std = m[0]
    x = torch.rand(4, 3, 32, 32)
    z = std(x).flatten(1)
    torch.testing.assert_close(z.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(1), torch.ones(4))          # advertorch: unbiased std
    flat = std(torch.full((1, 3, 32, 32), 0.7))                  # std 0: divided by 1/√3072
    assert torch.isfinite(flat).all() and flat.abs().max() < 1e-3
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(0.5 * x + 0.2), m(x), rtol=1e-4, atol=1e-4)


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        build_model("wrn34_10", {"depth": 28}, CIFAR)
    with pytest.raises(ConfigError, match="6n"):
        build_model("wrn", {"depth": 33}, CIFAR)
    with pytest.raises(ConfigError, match="exclusive"):
        build_model("wrn", {"normalize": True, "input_standardization": True}, CIFAR)
    with pytest.raises(ConfigError, match="6n"):
        build_model("cifar_resnet", {"depth": 21}, CIFAR)
    with pytest.raises(ConfigError, match="'A' | 'B'"):
        build_model("resnet20", {"shortcut": "C"}, CIFAR)


# ----------------------------------------------------------------------------- checkpoints

def _small_wrn(seed):
    torch.manual_seed(seed)
    return build_model("wrn", {"depth": 10, "widen_factor": 2}, CIFAR)


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("nest", [None, "state_dict", "model", "model_state_dict", "net"])
def test_strict_load_of_dataparallel_checkpoint(tmp_path, nest):
    src, dst = _small_wrn(1), _small_wrn(2)
    _randomize_bn(src)
    sd = {"module." + k: v for k, v in src.state_dict().items()}
    torch.save(sd if nest is None else {nest: sd, "epoch": 76}, tmp_path / "ckpt.pt")
    assert not torch.equal(src.conv1.weight, dst.conv1.weight)
    load_external_checkpoint(dst, tmp_path / "ckpt.pt")
    _assert_same_weights(src, dst)


def test_dataparallel_of_normalized_model(tmp_path):
    torch.manual_seed(1)
    src = build_model("resnet20", None, CIFAR)             # Sequential(Normalize, net)
    _randomize_bn(src)
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, tmp_path / "dp.pt")
    torch.manual_seed(2)
    dst = build_model("resnet20", None, CIFAR)
    load_external_checkpoint(dst, tmp_path / "dp.pt")
    _assert_same_weights(src, dst)


def test_sequential_prefix_realigned_and_normalize_buffers_optional(tmp_path):
    bare = build_model("resnet20", {"normalize": False}, CIFAR)
    _randomize_bn(bare)
    # Cohen et al. save nn.Sequential(NormalizeLayer, net): keys "1.…", no normaliser state
    cohen = {"1." + k: v for k, v in bare.state_dict().items()}
    torch.save({"arch": "cifar_resnet20", "state_dict": cohen}, tmp_path / "cohen.pth.tar")
    wrapped = build_model("resnet20", None, CIFAR)
    load_external_checkpoint(wrapped, tmp_path / "cohen.pth.tar")
    _assert_same_weights(bare, wrapped[1])
    torch.testing.assert_close(wrapped[0].std.flatten(), torch.tensor([0.2023, 0.1994, 0.2010]))
    other = build_model("resnet20", {"normalize": False}, CIFAR)
    load_external_checkpoint(other, tmp_path / "cohen.pth.tar")       # "1." stripped
    _assert_same_weights(bare, other)
    torch.save(bare.state_dict(), tmp_path / "bare.pt")
    wrapped2 = build_model("resnet20", None, CIFAR)
    load_external_checkpoint(wrapped2, tmp_path / "bare.pt")          # "1." added
    _assert_same_weights(bare, wrapped2[1])


def test_checkpoint_without_num_batches_tracked_loads(tmp_path):
    src, dst = _small_wrn(1), _small_wrn(2)
    torch.save({k: v for k, v in src.state_dict().items() if "num_batches_tracked" not in k},
               tmp_path / "old.pt")
    load_external_checkpoint(dst, tmp_path / "old.pt")
    assert torch.equal(src.fc.weight, dst.fc.weight)


def test_mismatch_names_missing_unexpected_and_shapes(tmp_path):
    src, dst = _small_wrn(1), _small_wrn(2)
    sd = src.state_dict()
    del sd["fc.bias"]
    sd["extra_head.weight"] = torch.zeros(3)
    sd["conv1.weight"] = torch.zeros(16, 1, 3, 3)
    torch.save(sd, tmp_path / "bad.pt")
    before = dst.conv1.weight.clone()
    with pytest.raises(CheckpointError) as e:
        load_external_checkpoint(dst, tmp_path / "bad.pt")
    msg = str(e.value)
    assert "1 missing key(s): fc.bias" in msg
    assert "1 unexpected key(s): extra_head.weight" in msg
    assert "conv1.weight (checkpoint (16, 1, 3, 3), model (16, 3, 3, 3))" in msg
    assert "\n" not in msg and "bad.pt" in msg
    assert torch.equal(dst.conv1.weight, before)          # nothing loaded on failure


def test_mismatch_listing_is_capped(tmp_path):
    torch.save(build_model("resnet20", {"normalize": False}, CIFAR).state_dict(), tmp_path / "r.pt")
    with pytest.raises(CheckpointError) as e:
        load_external_checkpoint(_small_wrn(0), tmp_path / "r.pt")
    msg = str(e.value)
    assert "missing key(s)" in msg and "unexpected key(s)" in msg and "more" in msg
    assert msg.count("layer1.") <= 10 and len(msg) < 3000


def test_non_strict_skips_new_head_with_warning(tmp_path):
    torch.manual_seed(1)
    src = build_model("wrn", {"depth": 10, "widen_factor": 2}, DATASETS.get("cifar10").info)
    src.fc = nn.Linear(128, 100)                                       # a 100-class head
    torch.save(src.state_dict(), tmp_path / "c100.pt")
    dst = _small_wrn(2)
    head = dst.fc.weight.clone()
    with pytest.warns(UserWarning, match="fc.weight"):
        load_external_checkpoint(dst, tmp_path / "c100.pt", strict=False)
    assert torch.equal(dst.block2.layer[0].conv1.weight, src.block2.layer[0].conv1.weight)
    assert torch.equal(dst.fc.weight, head)


def test_unreadable_checkpoints(tmp_path):
    model = _small_wrn(0)
    (tmp_path / "junk.pt").write_bytes(b"definitely not a checkpoint" * 10)
    torch.save(model.state_dict(), tmp_path / "full.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:5000])
    torch.save({"epoch": 3, "acc": 0.5}, tmp_path / "nostate.pt")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")                # needs full unpickling
    cases = {"junk.pt": "not a loadable", "cut.pt": "not a loadable", "missing.pt": "does not exist",
             "nostate.pt": "holds no state dict", "module.pt": "re-save only its state dict"}
    for name, what in cases.items():
        with pytest.raises(CheckpointError, match=what) as e:
            load_external_checkpoint(model, tmp_path / name)
        assert "\n" not in str(e.value), name


def test_mma_keys_rename_into_wrn28_4(tmp_path):
    from models.wideresnet import mma_to_trades_keys
    ours = build_model("wrn28_4", None, CIFAR)
    mma = {k.replace(".block", ".convgroup").replace("convShortcut", "conv_shortcut"): v
           for k, v in ours.state_dict().items()}
    assert "1.convgroup1.layer.0.conv_shortcut.weight" in mma
    torch.save({"epoch": 1, "model": mma_to_trades_keys(mma)}, tmp_path / "model_best.pt")
    dst = build_model("wrn28_4", None, CIFAR)
    load_external_checkpoint(dst, tmp_path / "model_best.pt")
    _assert_same_weights(ours, dst)


# ----------------------------------------------------------------------------- timm

def test_timm_resnet18_for_cifar(monkeypatch):
    import timm
    calls = []
    real = timm.create_model

    def spy(name, **kw):
        calls.append(kw)
        return real(name, **kw)

    monkeypatch.setattr(timm, "create_model", spy)
    model = build_model("timm:resnet18", None, CIFAR)
    assert calls and all(kw["pretrained"] is False and kw["num_classes"] == 10 for kw in calls)
    assert isinstance(model[0], Normalize)
    torch.testing.assert_close(model[0].mean.flatten(), torch.tensor(CIFAR.mean))
    assert model(torch.rand(4, 3, 32, 32)).shape == (4, 10)
    mnist = build_model("timm:resnet18", {"normalize": False}, MNIST)
    assert mnist.conv1.weight.shape[1] == 1 and mnist.eval()(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_timm_vit_gets_image_size():
    model = build_model("timm:vit_tiny_patch16_224", {"kwargs": {"patch_size": 4}}, CIFAR)
    assert model[1].pos_embed.shape[1] == 1 + 8 * 8          # sized for 32×32, not 224×224
    assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_timm_errors():
    with pytest.raises(PluginError, match=r"unknown timm model 'resnet181'.*did you mean.*'resnet18'"):
        build_model("timm:resnet181", None, CIFAR)
    with pytest.raises(PluginError, match="needs a timm model name"):
        build_model("timm", None, CIFAR)
    with pytest.raises(ConfigError, match="pretrained"):
        build_model("timm:resnet18", {"kwargs": {"pretrained": True}}, CIFAR)


# ----------------------------------------------------------------------------- MMA's released files

def _advertorch_wrn28_4_keys() -> dict[str, tuple]:
    """The state dict layout of MMA's CIFAR-10 model, written from advertorch_examples/models.py
    (`nn.Sequential(PerImageStandardize(), WideResNet(28, 10, 4))`, groups `convgroupN`, the
    shortcut `conv_shortcut`), not derived from our own module names."""
    def bn(prefix, c):
        return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}
    keys = {"1.conv1.weight": (16, 3, 3, 3)}
    widths = [16, 64, 128, 256]
    for g in (1, 2, 3):
        for i in range(4):
            cin, cout = (widths[g - 1] if i == 0 else widths[g]), widths[g]
            p = f"1.convgroup{g}.layer.{i}"
            keys.update(bn(f"{p}.bn1", cin))
            keys[f"{p}.conv1.weight"] = (cout, cin, 3, 3)
            keys.update(bn(f"{p}.bn2", cout))
            keys[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
            if cin != cout:
                keys[f"{p}.conv_shortcut.weight"] = (cout, cin, 1, 1)
    keys.update(bn("1.bn1", 256))
    keys.update({"1.fc.weight": (10, 256), "1.fc.bias": (10,)})
    return keys


def _numbered(layout: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """Each tensor filled with its own index, so a misplaced tensor is seen."""
    out = {}
    for i, (k, shape) in enumerate(layout.items()):
        dtype = torch.long if k.endswith("num_batches_tracked") else torch.float32
        out[k] = torch.full(shape, i + 1, dtype=dtype)
    return out


def test_mma_cifar_checkpoint_as_published_loads_into_wrn28_4(tmp_path):
    # MMA's trained_models/cifar10-*/model_best.pt: {'epoch', 'model': advertorch state dict},
    # saved by PyTorch 1.0 (the legacy, non-zip format); the plugin renames, the loader loads
    state = _numbered(_advertorch_wrn28_4_keys())
    path = tmp_path / "model_best.pt"
    torch.save({"epoch": 41, "model": state}, path, _use_new_zipfile_serialization=False)
    plugin = MODELS.get("wrn28_4")(MODELS.get("wrn28_4").Config())
    dst = build_model("wrn28_4", None, CIFAR)
    assert len(dst.state_dict()) == len(state)
    with pytest.raises(CheckpointError, match="missing key"):   # without the plugin's renaming
        load_external_checkpoint(build_model("wrn28_4", None, CIFAR), path)
    load_external_checkpoint(dst, path, rename=plugin.adapt_state_dict)
    got = dst.state_dict()
    for k, v in state.items():
        ours = k.replace("convgroup", "block").replace("conv_shortcut", "convShortcut")
        assert torch.equal(got[ours], v), k


def test_mma_mnist_checkpoint_as_published_loads_into_lenet5_madry(tmp_path):
    # MMA's trained_models/mnist-*/model_best.pt: advertorch_examples LeNet5Madry
    layout = {"conv1.weight": (32, 1, 5, 5), "conv1.bias": (32,), "conv2.weight": (64, 32, 5, 5),
              "conv2.bias": (64,), "linear1.weight": (1024, 3136), "linear1.bias": (1024,),
              "linear2.weight": (10, 1024), "linear2.bias": (10,)}
    state = _numbered(layout)
    path = tmp_path / "model_best.pt"
    torch.save({"epoch": 99, "model": state}, path, _use_new_zipfile_serialization=False)
    dst = build_model("lenet5_madry", None, MNIST)
    load_external_checkpoint(dst, path, rename=MODELS.get("lenet5_madry")().adapt_state_dict)
    assert {k: v.shape for k, v in dst.state_dict().items()} == {k: torch.Size(s) for k, s in layout.items()}
    for k, v in state.items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_runner_loads_an_mma_layout_checkpoint_by_url(tmp_path, data_root):
    # end to end: `checkpoint: {url: file://…}` of an MMA-layout file, arch wrn28_4, no defense
    from bench.db import database as db
    from bench.db.outcomes import unpack_outcomes
    from bench.db.schema import ModelRecord, ResultRecord
    from bench.run.plan import expand
    from bench.run.runner import Runner
    from bench.suite.load import load_suite
    if not (data_root / "cifar10-test.npz").exists():
        pytest.skip("no CIFAR-10 copy")
    torch.manual_seed(3)
    src = build_model("wrn28_4", None, CIFAR)
    for m in src.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    mma = {k.replace(".block", ".convgroup").replace("convShortcut", "conv_shortcut"): v
           for k, v in src.state_dict().items()}
    path = tmp_path / "model_best.pt"
    torch.save({"epoch": 1, "model": mma}, path, _use_new_zipfile_serialization=False)
    suite_path = tmp_path / "s.yaml"
    suite_path.write_text(
        "version: 1\nattacks:\n  clean: {plugin: clean}\nmodels:\n  mma:\n    dataset: cifar10\n"
        f"    arch: wrn28_4\n    checkpoint: {{url: '{path.as_uri()}'}}\n"
        "matrix:\n  - {name: e, models: [mma], attacks: [clean], eval: {n: 8, batch_size: 8}}\n")
    suite = load_suite(suite_path)
    engine = db.open_db(tmp_path / "r.sqlite")
    runner = Runner(suite, engine, data_root=data_root, device="cpu", results_dir=tmp_path / "res",
                    progress=False, out=lambda s: None)
    summary = runner.run(expand(suite))
    assert summary.exit_status == 0 and summary.loaded == ["mma"], summary.failed
    # the recorded outcomes are those of the source network on the same 8 images
    from bench.data.read import load_split
    x, y = load_split("cifar10", "test", data_root, offline=True)
    xb = torch.from_numpy(x[:8]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        want = (src.eval()(xb).argmax(1).numpy() == y[:8])
    from sqlalchemy import select
    from sqlalchemy.orm import Session
    with Session(engine) as s:
        r = s.scalars(select(ResultRecord)).one()
        assert (unpack_outcomes(r.outcomes, r.n) == want).all()
        assert s.scalars(select(ModelRecord)).one().defense == "external"


def test_trades_smallcnn_checkpoint_as_published_loads(tmp_path):
    # yaodongyu/TRADES models/small_cnn.py names its layers (OrderedDict): the layout of the
    # released model_mnist_smallcnn.pt, written from that file, not from our module
    layout = {"feature_extractor.conv1.weight": (32, 1, 3, 3), "feature_extractor.conv1.bias": (32,),
              "feature_extractor.conv2.weight": (32, 32, 3, 3), "feature_extractor.conv2.bias": (32,),
              "feature_extractor.conv3.weight": (64, 32, 3, 3), "feature_extractor.conv3.bias": (64,),
              "feature_extractor.conv4.weight": (64, 64, 3, 3), "feature_extractor.conv4.bias": (64,),
              "classifier.fc1.weight": (200, 1024), "classifier.fc1.bias": (200,),
              "classifier.fc2.weight": (200, 200), "classifier.fc2.bias": (200,),
              "classifier.fc3.weight": (10, 200), "classifier.fc3.bias": (10,)}
    state = _numbered(layout)
    torch.save(state, tmp_path / "model_mnist_smallcnn.pt")
    plugin = MODELS.get("small_cnn")(MODELS.get("small_cnn").Config())
    with pytest.raises(CheckpointError, match="missing key"):
        load_external_checkpoint(build_model("small_cnn", None, MNIST), tmp_path / "model_mnist_smallcnn.pt")
    dst = build_model("small_cnn", None, MNIST)
    load_external_checkpoint(dst, tmp_path / "model_mnist_smallcnn.pt", rename=plugin.adapt_state_dict)
    position = {"conv1": 0, "conv2": 2, "conv3": 5, "conv4": 7, "fc1": 0, "fc2": 3, "fc3": 5}
    for k, v in state.items():
        part, layer, what = k.split(".")
        assert torch.equal(dst.state_dict()[f"{part}.{position[layer]}.{what}"], v), k
    # and a DataParallel copy (ATENT saves `module.`-prefixed keys) too
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "dp.pt")
    dst2 = build_model("small_cnn", None, MNIST)
    load_external_checkpoint(dst2, tmp_path / "dp.pt", rename=plugin.adapt_state_dict)
    _assert_same_weights(dst, dst2)
