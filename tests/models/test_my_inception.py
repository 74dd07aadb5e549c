"""my_inception_v3: Table 2 row by row at 224 px, the §3.1 block, its options, pretrained tensors taken from
torchvision's Inception-v3 by role (copied or BN-folded, checked against torchvision's own outputs), the transfer
report, old checkpoints, and the study's experiments."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from torchvision.models import inception_v3

from caltech_cam.models import MODEL_SPECS, ClassifierModule, build_model, load_classifier
from caltech_cam.models.my_inception import MyInceptionV3, load_inception_v3_units
from tests.helpers import compose_train, one_step_checkpoint

VARIANTS = [(block, bn) for block in ("study", "inception_a") for bn in (False, True)]
# The preset statistics the tests feed (gray: the inception preset's; RGB: ImageNet's), written out as oracles.
GRAY = ((0.4589,), (0.2256,))
RGB = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _capture(model: nn.Module, names: list[str], x: Tensor, inputs: bool = False) -> dict[str, Tensor]:
    """The outputs (or first inputs) of the named modules during `model(x)`."""
    modules = dict(model.named_modules())
    seen: dict[str, Tensor] = {}

    def hook(name: str):
        return lambda _m, args, out: seen.__setitem__(name, (args[0] if inputs else out).detach().clone())

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


# ------------------------------------------------------------------------------------------- Table 2 at 224 px
# Each row: (module, channels, side at 224 px). Sides by hand, out = floor((n + 2p - k) / s) + 1 with the table's
# kernels, strides and paddings (unstated paddings 0): 224 -> 111 (3x3/2) -> 109 (3x3) -> 109 (3x3 pad 1)
# -> 54 (pool 3x3/2) -> 54, 54 (blocks keep the size) -> 26 (pool 3x3/2) -> 26, 26 -> 1 (global average pool).
# The table prints H/2, Ĥ/2, Ĥ/2, Ĥ/4, Ĥ/4, Ĥ/4, Ĥ/8, Ĥ/8, Ĥ/8: the hat marks these unpadded sizes as approximate.
TABLE2 = [
    ("stem.0", 32, 111),  # Conv1 + ReLU, 3x3 conv, stride 2
    ("stem.1", 32, 109),  # Conv2 + ReLU, 3x3 conv
    ("stem.2", 64, 109),  # Conv3 + ReLU, 3x3 conv, padding 1
    ("stem.3", 64, 54),  # MaxPool 3x3, stride 2
    ("inception3a", 256, 54),  # (64, 48, 64, 64, 96, 32)
    ("inception3b", 288, 54),  # (64, 48, 64, 64, 96, 64)
    ("maxpool", 288, 26),  # MaxPool 3x3, stride 2
    ("inception4a", 288, 26),
    ("inception4b", 288, 26),
    ("avgpool", 288, 1),  # global average pooling
]
# (b1, b2a, b2b, b3a, b3b, pool_proj) per block, Table 2's tuples.
TUPLES = {
    "inception3a": (64, 48, 64, 64, 96, 32),
    "inception3b": (64, 48, 64, 64, 96, 64),
    "inception4a": (64, 48, 64, 64, 96, 64),
    "inception4b": (64, 48, 64, 64, 96, 64),
}


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_table2_row_by_row_at_224_px() -> None:
    torch.manual_seed(0)
    model = build_model(
        "my_inception_v3", 257, in_channels=1
    ).eval()  # the study: gray 224 crops, 257 classes
    names = [row[0] for row in TABLE2]
    with torch.no_grad():
        out = _capture(model, names, torch.randn(1, 1, 224, 224))
        flat = _capture(model, ["dropout", "fc"], torch.randn(1, 1, 224, 224), inputs=True)
    assert {n: tuple(out[n].shape) for n in names} == {n: (1, c, s, s) for n, c, s in TABLE2}
    assert flat["dropout"].shape == flat["fc"].shape == (1, 288)  # Flatten 288, Dropout 288
    assert model.dropout.p == 0.4 and (model.fc.in_features, model.fc.out_features) == (288, 257)

    stem = [(c.kernel_size, c.stride, c.padding, c.out_channels) for c in _convs(model.stem)]
    assert stem == [((3, 3), (2, 2), (0, 0), 32), ((3, 3), (1, 1), (0, 0), 32), ((3, 3), (1, 1), (1, 1), 64)]
    for pool in (model.stem[3], model.maxpool):
        assert isinstance(pool, nn.MaxPool2d) and (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 0)

    # §3.1: four branches (1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1), widths read off the tuple.
    for block, (b1, b2a, b2b, b3a, b3b, pool_proj) in TUPLES.items():
        module = model.get_submodule(block)
        branches = [module.branch1, module.branch2, module.branch3, module.branch4]
        kernels = [[c.kernel_size[0] for c in _convs(b)] for b in branches]
        widths = [[c.out_channels for c in _convs(b)] for b in branches]
        assert kernels == [[1], [1, 3], [1, 5], [1]], block
        assert widths == [[b1], [b2a, b2b], [b3a, b3b], [pool_proj]], block
        pool = module.branch4[0]
        assert isinstance(pool, nn.MaxPool2d) and (pool.kernel_size, pool.stride) == (3, 1), block
    # "ReLU after each convolution", no batch norm: every conv is followed directly by a ReLU, and has a bias.
    units = [m for m in model.modules() if isinstance(m, nn.Sequential) and isinstance(m[0], nn.Conv2d)]
    assert len(units) == len(_convs(model)) == 3 + 4 * 6
    assert all(len(u) == 2 and isinstance(u[1], nn.ReLU) and u[0].bias is not None for u in units)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(("block", "batch_norm"), VARIANTS)
def test_every_variant_keeps_table2_shapes_and_cam_layers(block: str, batch_norm: bool) -> None:
    torch.manual_seed(0)
    options = {"block": block, "batch_norm": batch_norm}
    model = build_model("my_inception_v3", 5, in_channels=1, options=options).eval()
    cam = list(MODEL_SPECS["my_inception_v3"].cam_layers)
    with torch.no_grad():  # 75 px: 37 -> 35 -> 35 -> pool 17 (3a, 3b) -> pool 8 (4a, 4b)
        out = _capture(model, cam, torch.randn(1, 1, 75, 75))
    assert [tuple(out[n].shape) for n in cam] == [
        (1, 256, 17, 17),
        (1, 288, 17, 17),
        (1, 288, 8, 8),
        (1, 288, 8, 8),
    ]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == (len(_convs(model)) if batch_norm else 0)
    assert all(m.eps == 1e-3 for m in bns)
    assert all((c.bias is None) == batch_norm for c in _convs(model))
    if (
        block == "inception_a"
    ):  # torchvision's InceptionA: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1
        a = model.inception3a
        branches = [a.branch1x1, a.branch5x5, a.branch3x3dbl, a.branch_pool]
        assert [[c.kernel_size[0] for c in _convs(b)] for b in branches] == [[1], [1, 5], [1, 3, 3], [1]]
        assert [c.out_channels for c in _convs(a)] == [64, 48, 64, 64, 96, 96, 32]
        assert isinstance(a.branch_pool[0], nn.AvgPool2d)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"block": "inception_b"},
            r"model.options.block='inception_b'.*expected one of \['study', 'inception_a'\]",
        ),
        ({"batch_norm": "yes"}, r"model.options.batch_norm='yes'.*expected one of \[False, True\]"),
        ({"batch_norm": 1}, r"model.options.batch_norm=1 "),
        (
            {"batchnorm": True},
            r"no option 'batchnorm' \(model.options.batchnorm\); its options: batch_norm, block",
        ),
    ],
)
def test_bad_options_are_named(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model("my_inception_v3", 5, in_channels=1, options=options)
    with pytest.raises(ValueError, match=match):
        ClassifierModule("my_inception_v3", 5, preset="inception", options=options)


def test_models_without_options_refuse_them() -> None:
    with pytest.raises(ValueError, match=r"model 'resnet50' has no option 'block'.*its options: none"):
        build_model("resnet50", 5, options={"block": "study"})


# ------------------------------------------------------------------------------ pretrained tensors by role
@pytest.fixture(scope="module")
def tv_inception(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A random torchvision Inception-v3 (eval) with random BN statistics and affine, so folding matters; its
    state dict saved as a file stands in for the ImageNet weights."""
    torch.manual_seed(0)
    model = inception_v3(weights=None, init_weights=True, aux_logits=True)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    path = tmp_path_factory.mktemp("weights") / "inception_v3-random.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def _pretrained(path: Path, in_channels: int, stats: tuple, **options: object) -> MyInceptionV3:
    mean, std = stats
    return build_model(
        "my_inception_v3", 5, in_channels=in_channels, pretrained=True, weights_path=str(path),
        input_mean=mean, input_std=std, options=options,
    ).eval()  # fmt: skip


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize(
    ("in_channels", "stats"),
    [(3, ((0.5,) * 3, (0.5,) * 3)), (3, RGB), (1, GRAY)],
    ids=["same-input", "rgb-imagenet", "gray"],
)
def test_loaded_stem_reproduces_torchvision_stem(
    tv_inception: tuple[nn.Module, Path], batch_norm: bool, in_channels: int, stats: tuple
) -> None:
    """Our stem on the preset's x = (p - mean)/std == torchvision's conv+BN+ReLU stem (eval) on the weights'
    (p - 0.5)/0.5, gray copied to 3 channels. With mean = std = 0.5 both see the same tensor."""
    tv, path = tv_inception
    model = _pretrained(path, in_channels, stats, batch_norm=batch_norm)
    torch.manual_seed(1)
    p = torch.rand(2, in_channels, 64, 64)
    mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in stats)
    reference = nn.Sequential(tv.Conv2d_1a_3x3, tv.Conv2d_2a_3x3, tv.Conv2d_2b_3x3, tv.maxpool1)
    with torch.no_grad():
        want = reference(((p - 0.5) / 0.5).expand(-1, 3, -1, -1))
        got = model.stem((p - mean) / std)
    assert want.std() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.mark.parametrize("batch_norm", [False, True])
def test_inception_a_blocks_reproduce_mixed_5b_5c_5d(
    tv_inception: tuple[nn.Module, Path], batch_norm: bool
) -> None:
    """block=inception_a: 3b and 4a are Mixed_5c and Mixed_5d, BN copied or folded; 3a keeps Mixed_5b's spatial
    convs (its 1x1 convs see 64 channels, not 192)."""
    tv, path = tv_inception
    model = _pretrained(path, 1, GRAY, block="inception_a", batch_norm=batch_norm)
    torch.manual_seed(2)
    h256, h288 = torch.randn(2, 256, 9, 9), torch.randn(2, 288, 9, 9)
    h48, h64 = torch.randn(2, 48, 9, 9), torch.randn(2, 64, 9, 9)
    with torch.no_grad():
        pairs = [
            (model.inception3b(h256), tv.Mixed_5c(h256)),
            (model.inception4a(h288), tv.Mixed_5d(h288)),
            (model.inception3a.branch5x5[1](h48), tv.Mixed_5b.branch5x5_2(h48)),
            (
                model.inception3a.branch3x3dbl[1:](h64),
                tv.Mixed_5b.branch3x3dbl_3(tv.Mixed_5b.branch3x3dbl_2(h64)),
            ),
        ]
    for got, want in pairs:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_study_block_takes_the_1x1_convs_by_role(tv_inception: tuple[nn.Module, Path]) -> None:
    """The study's block: branch 1, the 1x1 reduces of branches 2 and 3 and the pool projection come from
    torchvision's branch1x1, branch5x5_1, branch3x3dbl_1 and branch_pool (folded); the rest is fresh."""
    tv, path = tv_inception
    model = _pretrained(path, 1, GRAY)
    torch.manual_seed(3)
    h = torch.randn(2, 256, 9, 9)
    block, theirs = model.inception3b, tv.Mixed_5c
    with torch.no_grad():
        pairs = [
            (block.branch1(h), theirs.branch1x1(h)),
            (block.branch2[0](h), theirs.branch5x5_1(h)),
            (block.branch3[0](h), theirs.branch3x3dbl_1(h)),
            (block.branch4[1](h), theirs.branch_pool(h)),
        ]
    for got, want in pairs:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


# Conv units that take torchvision tensors, by hand: the stem everywhere; with the study's block the four 1x1 convs
# of 3b and 4a; with inception_a all of 3b and 4a and 3a's spatial convs. 4b, 3a's 1x1 convs and fc are fresh.
STUDY_1X1 = ("branch1", "branch2.0", "branch3.0", "branch4.1")
INCEPTION_A = (
    "branch1x1",
    "branch5x5.0",
    "branch5x5.1",
    "branch3x3dbl.0",
    "branch3x3dbl.1",
    "branch3x3dbl.2",
)
TAKEN = {
    "study": ["stem.0", "stem.1", "stem.2", *(f"{b}.{u}" for b in ("inception3b", "inception4a") for u in STUDY_1X1)],
    "inception_a": [
        "stem.0", "stem.1", "stem.2",
        "inception3a.branch5x5.1", "inception3a.branch3x3dbl.1", "inception3a.branch3x3dbl.2",
        *(f"{b}.{u}" for b in ("inception3b", "inception4a") for u in (*INCEPTION_A, "branch_pool.1")),
    ],
}  # fmt: skip


@pytest.mark.parametrize(("block", "batch_norm"), VARIANTS)
def test_transfer_report_counts_copied_folded_fresh(
    tv_inception: tuple[nn.Module, Path], block: str, batch_norm: bool, caplog: pytest.LogCaptureFixture
) -> None:
    _, path = tv_inception
    torch.manual_seed(0)
    scratch = MyInceptionV3(5, 1, block=block, batch_norm=batch_norm)
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="caltech_cam.models"):
        model = _pretrained(path, 1, GRAY, block=block, batch_norm=batch_norm)
    state = torch.load(path, weights_only=True)
    report = load_inception_v3_units(model, state, block, input_scale=[1.0], input_shift=[0.0])

    suffixes = ("0.weight", "1.weight", "1.bias") if batch_norm else ("0.weight", "0.bias")
    taken = {f"{unit}.{s}" for unit in TAKEN[block] for s in suffixes}
    assert set(report.copied if batch_norm else report.folded) == taken
    assert not (report.folded if batch_norm else report.copied)
    params = dict(model.named_parameters())
    assert set(report.fresh) == set(params) - taken and {"fc.weight", "fc.bias"} <= set(report.fresh)
    total = sum(p.numel() for p in params.values())
    kind = "copied" if batch_norm else "folded"
    assert report.fraction(kind) == pytest.approx(sum(params[n].numel() for n in taken) / total)
    assert report.fraction("fresh") == pytest.approx(1 - report.fraction(kind))
    # Fresh parameters are the scratch initialisation, untouched by the load.
    scratch_params = dict(scratch.named_parameters())
    assert all(torch.equal(params[n], scratch_params[n]) for n in report.fresh)
    assert all(not torch.equal(params[n], scratch_params[n]) for n in taken)
    # The log says it, with the same numbers.
    assert f"my_inception_v3 (block={block}, batch_norm={str(batch_norm).lower()}) from {path}" in caplog.text
    assert report.summary() in caplog.text and f"{total:,} parameters" in report.summary()


def test_weights_that_fit_no_layout_are_refused(tv_inception: tuple[nn.Module, Path], tmp_path: Path) -> None:
    _, path = tv_inception
    resnet_like = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}, resnet_like)
    with pytest.raises(
        ValueError, match=r"resnet.pth does not fit torchvision's Inception-v3.*Conv2d_1a_3x3\.conv"
    ):
        _pretrained(resnet_like, 1, GRAY)
    state = torch.load(path, weights_only=True)
    state["Mixed_5c.branch_pool.conv.weight"] = torch.zeros(64, 288, 1, 1)
    bent = tmp_path / "bent.pth"
    torch.save(state, bent)
    with pytest.raises(ValueError, match=r"wrong shapes \['Mixed_5c.branch_pool.conv.weight \(64, 288, 1, 1\) != "
                       r"\(64, 256, 1, 1\)'\] \(1\)"):  # fmt: skip
        _pretrained(bent, 1, GRAY)
    with pytest.raises(ValueError, match="gray input needs input_mean/input_std"):
        build_model("my_inception_v3", 5, in_channels=1, pretrained=True, weights_path=str(path))


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def inception_a_checkpoint(tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    """Today's checkpoint of the layout earlier releases had (InceptionA block with BN), after one step."""
    return one_step_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "epoch000.ckpt",
        "my_inception_v3",
        ["a", "b", "c"],
        {"name": "inception", "resize": 40},
        torch.randn(4, 1, 35, 35),
        torch.tensor([0, 1, 2, 0]),
        options={"block": "inception_a", "batch_norm": True},
    )


def test_checkpoint_records_options_and_format(inception_a_checkpoint: Path) -> None:
    hparams = torch.load(inception_a_checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert (
        hparams["options"] == {"block": "inception_a", "batch_norm": True} and hparams["hparams_format"] == 2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        module = load_classifier(inception_a_checkpoint)
    assert module.hparams.options == {"block": "inception_a", "batch_norm": True}
    assert isinstance(module.model.inception3a.branch1x1[1], nn.BatchNorm2d)


def test_old_checkpoint_without_options_loads_as_inception_a_with_bn(
    inception_a_checkpoint: Path, tmp_path: Path
) -> None:
    """The layout before architecture options: no `options`, no `hparams_format`. Mapped, warned, same model."""
    ckpt = torch.load(inception_a_checkpoint, map_location="cpu", weights_only=True)
    del ckpt["hyper_parameters"]["options"], ckpt["hyper_parameters"]["hparams_format"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with pytest.warns(
        FutureWarning, match=r"before architecture options.*'block': 'inception_a', 'batch_norm': True"
    ):
        module = load_classifier(old)
    new = load_classifier(inception_a_checkpoint)
    x = torch.randn(2, 1, 35, 35)
    with torch.no_grad():
        torch.testing.assert_close(module(x), new(x), rtol=0, atol=0)
    # A checkpoint from a later format is refused by name, not misread.
    ckpt["hyper_parameters"]["hparams_format"] = 3
    torch.save(ckpt, old)
    with pytest.raises(ValueError, match=r"format 3; this release reads formats up to 2"):
        load_classifier(old)


def test_resuming_with_other_options_is_refused_by_name(inception_a_checkpoint: Path) -> None:
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    module = ClassifierModule(
        "my_inception_v3", 3, ["a", "b", "c"], preset={"name": "inception", "resize": 40}
    )
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    data = DataLoader(TensorDataset(torch.randn(4, 1, 35, 35), torch.tensor([0, 1, 2, 0])), batch_size=2)
    with pytest.raises(
        ValueError, match=r"resume it with model.options.block=inception_a model.options.batch_norm=true"
    ):
        trainer.fit(module, data, ckpt_path=inception_a_checkpoint)


BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def test_inception_a_with_bn_has_the_earlier_releases_state_dict() -> None:
    """The state dict keys of the layout before this release (its ConvBNReLU = conv, bn, relu; branch names of
    torchvision's InceptionA), so old checkpoints load strictly."""
    keys = MyInceptionV3(5, 1, block="inception_a", batch_norm=True).state_dict().keys()
    stem = [f"stem.{i}.{t}" for i in range(3) for t in ("0.weight", *(f"1.{b}" for b in BN))]
    assert stem == [k for k in keys if k.startswith("stem.")]
    units = ("branch1x1", "branch5x5.0", "branch5x5.1", "branch3x3dbl.0", "branch3x3dbl.1", "branch3x3dbl.2",
             "branch_pool.1")  # fmt: skip
    expected = {f"{b}.{u}.{t}" for b in TUPLES for u in units for t in ("0.weight", *(f"1.{s}" for s in BN))}
    assert {k for k in keys if k.startswith("inception")} == expected
    assert len(keys) == len(stem) + len(expected) + 2  # + fc.weight, fc.bias


# ------------------------------------------------------------------------------------- the study's experiments
@pytest.mark.parametrize(
    ("experiment", "model", "preset", "crop", "options", "backbone_lr_mult"),
    [
        ("seed_my_resnet50", "my_resnet50", "resnet", None, None, 0.1),
        (
            "seed_my_inception_v3",
            "my_inception_v3",
            "inception",
            224,
            {"block": "study", "batch_norm": False},
            1.0,
        ),
        ("seed_resnet50", "resnet50", "resnet", None, None, 0.1),
        ("seed_inception_v3", "inception_v3", "inception", 224, None, 0.1),
    ],
)
def test_seed_experiments_compose(
    experiment: str, model: str, preset: str, crop: int | None, options: dict | None, backbone_lr_mult: float
) -> None:
    cfg = compose_train([f"experiment={experiment}"])
    assert cfg.model.model_name == model and cfg.model.pretrained is True
    assert OmegaConf.to_container(cfg.model).get("options") == options
    assert cfg.data.preset == preset and cfg.data.resize == 256 and cfg.data.crop == crop
    assert cfg.model.backbone_lr_mult == backbone_lr_mult and cfg.task_name == experiment
    assert cfg.data.synthetic is None and list(cfg.data.split.fractions) == [0.7, 0.15, 0.15]


def test_options_compose_from_the_command_line() -> None:
    cfg = compose_train(
        ["model=my_inception_v3", "model.options.block=inception_a", "model.options.batch_norm=true"]
    )
    assert OmegaConf.to_container(cfg.model.options) == {"block": "inception_a", "batch_norm": True}
    assert compose_train(["model=my_inception_v3"]).model.pretrained is False  # mostly fresh: from scratch
