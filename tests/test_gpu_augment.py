"""The batched device augmentation (`data.gpu_augment`, kornia), the device-resident MNIST batches and
`compile=`: keypoints and masks move with their images exactly as on the Albumentations path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from test_defect import TINY_DEFECT
from test_embed import TINY_EMBED
from test_pose import L_WRIST, R_WRIST, TINY_POSE, _colour_at, _marked_lsp, _single
from test_segment import TINY_SEGMENT, _check_aligned, _coded_sample

from datamodules.gpu_augment import build_gpu_augment
from datamodules.lsp_format import LSP_FLIP_PERMUTATION
from datamodules.mnist import MNISTDataModule
from visionlab.errors import ConfigError
from visionlab.runner import build_datamodule, train
from visionlab.validation import compile_mode

#: flips and rotation/scale/shift, the geometry of experiment=pose_augmented_gpu
POSE_GEOMETRY_GPU = [
    {"name": "RandomHorizontalFlip", "p": 0.5},
    {"name": "RandomAffine", "degrees": 20, "translate": [0.1, 0.1], "scale": [0.8, 1.2], "p": 1.0},
]
POSE_GEOMETRY_CPU = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "Affine", "rotate": [-20, 20], "scale": [0.8, 1.2], "translate_percent": [-0.1, 0.1], "p": 1.0},
]


def _check_wrists(image: np.ndarray, joints: np.ndarray, visible: np.ndarray) -> bool:
    """In `_marked_lsp` the right hand is red and visible, the left hand blue and occluded. Whatever the
    geometry, the visible wrist row must sit on red and the other on blue; False if a wrist left the frame."""
    size = image.shape[0]
    wrists = joints[[R_WRIST, L_WRIST]]
    if not ((wrists >= 2) & (wrists < size - 2)).all():
        return False
    shown, hidden = (R_WRIST, L_WRIST) if visible[R_WRIST] else (L_WRIST, R_WRIST)
    assert not visible[hidden], "exactly one wrist is flagged visible"
    red, blue = _colour_at(image, joints[shown]), _colour_at(image, joints[hidden])
    assert red[0] > 150 and red[2] < 100, f"visible wrist at {joints[shown]} is {red}, not red"
    assert blue[2] > 150 and blue[0] < 100, f"occluded wrist at {joints[hidden]} is {blue}, not blue"
    return True


def test_both_pose_paths_move_joints_and_flags_with_the_image(tmp_path: Path) -> None:
    _marked_lsp(tmp_path)
    checked_cpu = 0
    for draw in range(12):  # a fresh DataModule seeds its augmentation from torch.initial_seed()
        torch.manual_seed(draw)
        checked_cpu += _check_wrists(*_single(tmp_path, POSE_GEOMETRY_CPU))

    image, joints, visible = _single(tmp_path, None)
    augment = build_gpu_augment(POSE_GEOMETRY_GPU, mirror_permutation=LSP_FLIP_PERMUTATION)
    assert augment is not None
    batch = [torch.from_numpy(a).expand(16, *a.shape).clone() for a in (image, joints, visible)]
    images, out_joints, out_visible, _ = augment(*batch)
    mirrored = augment.mirror_count(16, torch.device("cpu")) % 2 == 1
    assert 0 < int(mirrored.sum()) < 16  # both cases are exercised
    assert images.dtype == torch.uint8 and images.shape == (16, 64, 64, 3)
    checked_gpu = sum(
        _check_wrists(images[i].numpy(), out_joints[i].numpy(), out_visible[i].numpy()) for i in range(16)
    )
    assert checked_cpu >= 6 and checked_gpu >= 8
    # a mirrored sample has its left wrist on the image's right half when the figure faces the camera
    for i in torch.nonzero(mirrored).flatten().tolist():
        assert out_joints[i, L_WRIST, 0] > out_joints[i, R_WRIST, 0]


def test_gpu_joints_pushed_out_of_the_frame_become_invisible(tmp_path: Path) -> None:
    _marked_lsp(tmp_path)
    image, joints, visible = _single(tmp_path, None)
    shift = build_gpu_augment([{"name": "RandomAffine", "degrees": 0, "translate": [0.45, 0.0], "p": 1.0}])
    assert shift is not None
    batch = [torch.from_numpy(a).expand(8, *a.shape).clone() for a in (image, joints, visible)]
    _, out_joints, out_visible, _ = shift(*batch)
    outside = (out_joints[..., 0] < 0) | (out_joints[..., 0] >= 64)
    assert outside.any() and not out_visible[outside].any()
    moved = out_joints - torch.from_numpy(joints)
    assert torch.allclose(moved[..., 1], torch.zeros(()), atol=1e-3)  # a pure horizontal shift
    assert torch.equal(out_visible[~outside], batch[2][~outside])


def test_gpu_masks_move_with_the_image_and_filled_areas_are_void() -> None:
    image, mask = _coded_sample()
    augment = build_gpu_augment(
        [
            {"name": "RandomHorizontalFlip", "p": 0.5},
            {"name": "RandomAffine", "degrees": 30, "scale": [0.8, 1.2], "p": 1.0},
            {"name": "RandomResizedCrop", "size": [64, 64], "scale": [0.5, 1.0], "p": 0.5},
        ]
    )
    assert augment is not None
    images = torch.from_numpy(image).expand(10, 64, 64, 3).clone()
    masks = torch.from_numpy(mask).expand(10, 64, 64).clone()
    out_images, _, _, out_masks = augment(images, masks=masks)
    assert out_masks.dtype == torch.uint8 and out_masks.shape == (10, 64, 64)
    assert set(out_masks.unique().tolist()) <= {0, 1, 2, 3, 255}  # nearest neighbour: no new classes
    assert (out_masks == 255).any()
    for i in range(10):
        _check_aligned(out_images[i].numpy(), out_masks[i].numpy(), margin=2)


def test_gpu_augment_draws_from_seed_epoch_and_batch_number() -> None:
    specs = [
        {"name": "RandomAffine", "degrees": 30, "p": 1.0},
        {"name": "RandomGaussianNoise", "std": 0.1, "p": 1.0},
    ]
    images = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    torch.manual_seed(5)
    first, again = build_gpu_augment(specs), build_gpu_augment(specs)
    assert first is not None and again is not None
    a0, a1 = first(images, epoch=0)[0], first(images, epoch=0)[0]
    torch.rand(100)  # the global random state does not matter
    b0, b1 = again(images, epoch=0)[0], again(images, epoch=0)[0]
    assert torch.equal(a0, b0) and torch.equal(a1, b1) and not torch.equal(a0, a1)
    assert torch.equal(again(images, epoch=1)[0], first(images, epoch=1)[0])  # a new epoch restarts the count


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "HorizontalFlip"}, r"data\.gpu_augment\[0\]\.name='HorizontalFlip' is not a kornia"),
        (
            {"name": "RandomAffine", "degreez": 3},
            r"data\.gpu_augment\[0\] \(RandomAffine\): invalid arguments",
        ),
    ],
)
def test_bad_gpu_augment_entries_are_named(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_gpu_augment([spec])


def test_a_size_changing_gpu_augment_is_named() -> None:
    augment = build_gpu_augment([{"name": "RandomResizedCrop", "size": [16, 16], "p": 1.0}])
    assert augment is not None
    with pytest.raises(ConfigError, match=r"data\.gpu_augment turns 32x32 batches into 16x16"):
        augment(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))


class _FirstBatch(Callback):
    """Keeps the uint8 images of the first training and validation batches as the steps receive them."""

    def __init__(self) -> None:
        self.images: torch.Tensor | None = None
        self.val_images: torch.Tensor | None = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.images is None:
            self.images = batch[-1].detach().cpu().clone()

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.val_images is None:
            self.val_images = batch[-1].detach().cpu().clone()


def test_the_trainer_applies_gpu_augment_to_training_batches_only(make_cfg, monkeypatch) -> None:
    import visionlab.runner as runner

    cfg = make_cfg(
        "data.augment=null", "data.gpu_augment=[{name: RandomInvert, p: 1.0}]", "trainer.max_epochs=1"
    )
    torch.manual_seed(cfg.seed)  # as train() seeds before it builds the data (the loader order follows)
    reference = build_datamodule(cfg)
    raw = next(iter(reference.train_dataloader()))[0]
    raw_val = next(iter(reference.val_dataloader()))[0]
    seen = _FirstBatch()
    monkeypatch.setattr(runner, "run_callbacks", lambda _cfg: [seen])
    train(cfg)
    assert seen.images is not None
    assert torch.equal(seen.images, 255 - raw)  # the same first batch, inverted on the device
    assert seen.val_images is not None and torch.equal(seen.val_images, raw_val)  # validation untouched


@pytest.mark.parametrize(
    ("base", "gpu_augment"),
    [
        (TINY_POSE, "[{name: RandomHorizontalFlip, p: 0.5}, {name: RandomAffine, degrees: 20, p: 0.7}, "
                    "{name: RandomGaussianNoise, std: 0.05, p: 0.3}]"),
        (TINY_SEGMENT, "[{name: RandomHorizontalFlip, p: 0.5}, {name: RandomAffine, degrees: 30, p: 0.7}]"),
        (TINY_DEFECT, "[{name: RandomHorizontalFlip, p: 0.5}, {name: RandomRotation, degrees: 10.0, p: 0.5}]"),
        (TINY_EMBED, "[{name: RandomAffine, degrees: 10, p: 0.5}, {name: RandomGaussianNoise, std: 0.05}]"),
    ],
    ids=["pose", "segment", "defect", "embed"],
)  # fmt: skip
def test_each_task_trains_with_gpu_augment(make_cfg, base: list[str], gpu_augment: str) -> None:
    cfg = make_cfg("data.augment=null", f"data.gpu_augment={gpu_augment}", "trainer.max_epochs=1", base=base)
    value = train(cfg)
    assert value is not None and np.isfinite(value)
    assert (Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt").is_file()


def test_device_resident_batches_equal_the_loaders() -> None:
    def batches(resident: bool) -> list[list[torch.Tensor]]:
        torch.manual_seed(3)
        dm = MNISTDataModule(str(Path(__file__).parent), root=None, batch_size=32, device_resident=resident)
        dm.datasets = _digits()
        return [list(b) for b in dm.train_dataloader()]

    loader, resident = batches(False), batches(True)
    assert len(loader) == len(resident) == 3  # 100 images, batch 32, last partial batch dropped
    for (x, y), (rx, ry) in zip(loader, resident, strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_a_device_resident_run_equals_a_dataloader_run(make_cfg) -> None:
    import json

    def final(resident: str, run: str) -> dict:
        cfg = make_cfg(f"data.device_resident={resident}", "trainer.max_epochs=1", run=run, base=TINY_EMBED)
        train(cfg)
        return json.loads((Path(cfg.paths.run_dir) / "metrics.json").read_text())

    resident, loader = final("true", "resident"), final("false", "loader")
    assert resident["test/acc"] == loader["test/acc"] and resident["val/loss"] == loader["val/loss"]


def test_device_resident_refuses_cpu_augmentation() -> None:
    with pytest.raises(ConfigError, match=r"data\.device_resident=true cannot run data\.augment"):
        MNISTDataModule("unused", device_resident=True, augment=[{"name": "Affine", "rotate": [-5, 5]}])


def _digits() -> dict:
    from datamodules.mnist import DigitDataset

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (100, 28, 28, 1), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (100,), generator=generator)
    return {"train": DigitDataset(images, labels), "val": DigitDataset(images[:10], labels[:10])}


def test_compile_keeps_checkpoint_keys_and_trains(make_cfg) -> None:
    from tasks.finetune import FinetuneTask

    cfg = make_cfg()
    dm = build_datamodule(cfg)
    module = FinetuneTask.from_config(cfg, dm.info())
    keys = set(module.state_dict())
    module.compile_networks(backend="eager")
    assert set(module.state_dict()) == keys  # checkpoints load with or without compile
    images, labels = next(iter(dm.train_dataloader()))
    loss = torch.nn.functional.cross_entropy(module(module.normalize(images)), labels)
    loss.backward()
    assert torch.isfinite(loss) and module.net.fc.weight.grad is not None


@pytest.mark.parametrize(
    ("value", "mode"), [(False, None), (True, "default"), ("max-autotune", "max-autotune")]
)
def test_compile_values(value: object, mode: str | None) -> None:
    assert compile_mode(value) == mode


def test_a_bad_compile_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"compile='fast' must be true, false or one of"):
        compile_mode("fast")


def test_device_batches_give_every_ddp_rank_the_same_number_of_batches() -> None:
    from datamodules.common import DeviceBatches

    torch.manual_seed(0)
    for count, drop_last in ((255, True), (257, False), (3, False)):
        ranks = [DeviceBatches([torch.arange(count)], 128, True, drop_last, rank, 2) for rank in range(2)]
        batches = [[b[0] for b in r] for r in ranks]
        assert len(batches[0]) == len(batches[1]) == len(ranks[0]), (count, drop_last)
        seen = torch.cat([torch.cat(b) for b in batches if b]) if any(batches) else torch.zeros(0)
        if not drop_last:  # together the ranks cover every sample (a few twice, as DistributedSampler pads)
            assert set(seen.tolist()) == set(range(count))


def test_gpu_augment_refuses_what_kornia_cannot_carry() -> None:
    with pytest.raises(
        ConfigError, match=r"data\.gpu_augment\[0\]\.name=RandomThinPlateSpline: kornia warps"
    ):
        build_gpu_augment([{"name": "RandomThinPlateSpline"}], image_shape=(32, 32, 3), keypoints=True)
    with pytest.raises(ConfigError, match=r"data\.gpu_augment: cannot run on 32x32x3 batches with masks"):
        build_gpu_augment([{"name": "RandomThinPlateSpline", "p": 1.0}], image_shape=(32, 32, 3), masks=True)
    with pytest.raises(ConfigError, match=r"data\.gpu_augment: cannot run on 28x28x1 batches: "):
        build_gpu_augment(
            [{"name": "RandomGaussianBlur", "kernel_size": 4, "sigma": [1.0, 1.0]}], image_shape=(28, 28, 1)
        )
