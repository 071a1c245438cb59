"""Lightning-free parts of the pose task: LSP reader, splits, generator, PCP/PDJ, DeepPoseNet, geometry."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from datamodules.lsp_format import JOINT_NAMES, LSP_FLIP_PERMUTATION, LSPAnnotations, read_lsp, split_lsp
from datamodules.synthetic.lsp import generate_lsp
from tasks.metrics.pose import LIMBS, PCP, PDJ
from tasks.nets.deeppose import DeepPoseNet, select_joints
from tasks.pose.geometry import crop_around, denormalize_from_box, normalize_to_box, torso_diameter
from visionlab.errors import DataError

LSPET = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "lspet"


# ---------------------------------------------------------------- reader


@pytest.mark.skipif(not LSPET.is_dir(), reason="shared LSPet fixture not present")
def test_lspet_fixture_skips_annotations_without_images_and_hides_off_image_joints():
    with pytest.warns(UserWarning, match="390 of 400 annotations have no image"):
        ann = read_lsp(LSPET)
    assert ann.layout == "lspet" and len(ann) == 10 and len(ann.missing) == 390
    assert ann.joints.shape == (10, 14, 2) and ann.joints.dtype == np.float32
    assert ann.visible.shape == (10, 14) and ann.visible.dtype == bool
    assert [p.name for p in ann.image_paths[:2]] == ["im00001.jpg", "im00002.jpg"]
    assert list(ann.indices) == list(range(10)) and ann.missing[0] == 10
    width, height = ann.image_sizes[:, None, 0], ann.image_sizes[:, None, 1]
    x, y = ann.joints[..., 0], ann.joints[..., 1]
    outside = (x < 0) | (y < 0) | (x >= width) | (y >= height)
    assert set(np.flatnonzero(outside.any(axis=1))) == {0, 2, 4}  # images 1, 3 and 5
    assert not (ann.visible & outside).any()
    raw = scipy.io.loadmat(str(LSPET / "joints.mat"))["joints"][:, :, :10].transpose(2, 0, 1)
    # LSPet: 1 = visible; this fixture's off-image joints are also flagged invisible
    assert np.array_equal(ann.visible, raw[:, :, 2] == 1)
    with pytest.warns(UserWarning):
        inverted = read_lsp(LSPET, visible_value=0)
    assert np.array_equal(inverted.visible, (raw[:, :, 2] == 0) & ~outside)


def _write_lspet(root: Path, joints: np.ndarray, sizes: list[tuple[int, int]], in_root: bool = True) -> None:
    """joints: (N, 14, 3) x, y, flag (1 = visible) written as LSPet 14x3xN; images in the root."""
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(root / "joints.mat"), {"joints": joints.transpose(1, 2, 0)})
    folder = root if in_root else root / "images"
    folder.mkdir(exist_ok=True)
    for i, size in enumerate(sizes):
        Image.new("RGB", size).save(folder / f"im{i + 1:05d}.jpg")


def test_visible_flagged_joint_outside_the_image_becomes_invisible(tmp_path):
    joints = np.ones((2, 14, 3)) * [[[10.0, 10.0, 1.0]]]
    joints[0, 3, :2] = [50.0, 10.0]  # image 1 is 40 px wide
    joints[1, 5, :2] = [np.nan, 3.0]
    _write_lspet(tmp_path, joints, [(40, 30), (40, 30)])
    ann = read_lsp(tmp_path)
    assert [p.parent for p in ann.image_paths] == [tmp_path, tmp_path]
    assert ann.visible.sum() == 26 and not ann.visible[0, 3] and not ann.visible[1, 5]
    assert ann.joints[0, 3, 0] == 50.0 and np.isfinite(ann.joints).all()


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"joints\.mat"):
        read_lsp(tmp_path)
    (tmp_path / "joints.mat").write_bytes(b"MATLAB 5.0 MAT-file truncated")
    with pytest.raises(DataError, match=r"joints\.mat.*cannot read"):
        read_lsp(tmp_path)
    scipy.io.savemat(str(tmp_path / "joints.mat"), {"joints": np.zeros((14, 2, 5))})
    with pytest.raises(DataError, match=r"joints\.mat.*3x14xN.*14x3xN"):
        read_lsp(tmp_path)
    scipy.io.savemat(str(tmp_path / "joints.mat"), {"joints": np.zeros((3, 14, 5))})
    with pytest.raises(DataError, match=r"none of the 5 annotated images.*im0001\.jpg"):
        read_lsp(tmp_path)


def _fake_lsp(n: int, missing: tuple[int, ...] = ()) -> LSPAnnotations:
    rows = np.array([i for i in range(n) if i not in missing])
    return LSPAnnotations(
        joints=np.zeros((len(rows), 14, 2), np.float32),
        visible=np.ones((len(rows), 14), bool),
        image_paths=[Path(f"im{i + 1:04d}.jpg") for i in rows],
        image_sizes=np.full((len(rows), 2), 100),
        indices=rows,
        layout="lsp",
        missing=list(missing),
    )


def test_standard_lsp_split_first_1000_train_last_1000_test_with_seeded_val():
    ann = _fake_lsp(2000, missing=(5, 1500))
    split = split_lsp(ann, val_fraction=0.1, seed=0)
    train_val = np.concatenate([split.train, split.val])
    assert (ann.indices[train_val] < 1000).all() and (ann.indices[split.test] >= 1000).all()
    assert len(train_val) == 999 and len(split.test) == 999 and len(split.val) == 100
    assert not set(split.train) & set(split.val)
    again, other = split_lsp(ann, seed=0), split_lsp(ann, seed=1)
    assert np.array_equal(again.val, split.val) and not np.array_equal(other.val, split.val)


def test_fraction_split_for_lspet_and_small_lsp():
    ann = _fake_lsp(50)
    with pytest.warns(UserWarning, match="only 50 annotations"):
        split = split_lsp(ann, test_fraction=0.2, val_fraction=0.25)
    assert (len(split.train), len(split.val), len(split.test)) == (30, 10, 10)
    assert sorted(np.concatenate([split.train, split.val, split.test])) == list(range(50))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_lsp(ann, train_count=None)


# ---------------------------------------------------------------- generator


def test_generated_lsp_reads_back_with_consistent_joints(tmp_path):
    generate_lsp(tmp_path / "a", num_images=12, seed=3)
    mat = scipy.io.loadmat(str(tmp_path / "a" / "joints.mat"))["joints"]
    assert mat.shape == (3, 14, 12) and set(np.unique(mat[2])) <= {0.0, 1.0}
    assert (tmp_path / "a" / "images" / "im0012.jpg").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every annotation has its image
        ann = read_lsp(tmp_path / "a")
    assert ann.layout == "lsp" and len(ann) == 12 and ann.visible.dtype == bool
    assert 0.8 < ann.visible.mean() < 1.0  # some self-occlusion, mostly visible
    width, height = ann.image_sizes[:, None, 0], ann.image_sizes[:, None, 1]
    x, y = ann.joints[..., 0], ann.joints[..., 1]
    assert ((x >= 0) & (y >= 0) & (x < width) & (y < height))[ann.visible].all()
    assert ((ann.image_sizes >= 120) & (ann.image_sizes <= 320)).all()
    generate_lsp(tmp_path / "b", num_images=3, seed=3)
    again = scipy.io.loadmat(str(tmp_path / "b" / "joints.mat"))["joints"]
    assert np.array_equal(again, mat[:, :, :3])  # deterministic per seed and image index


# ---------------------------------------------------------------- metrics


def _skeleton() -> torch.Tensor:
    """A standing figure (1, 14, 2): limbs 40 px long, torso diameter l_shoulder-r_hip = 50 (30-40-50)."""
    pts = {
        8: (70, 60), 9: (100, 60), 7: (30, 60), 6: (-10, 60), 10: (140, 60), 11: (180, 60),
        2: (70, 100), 3: (100, 100), 1: (70, 140), 0: (70, 180), 4: (100, 140), 5: (100, 180),
        12: (85, 50), 13: (85, 10),
    }  # fmt: skip
    return torch.tensor([pts[j] for j in range(14)], dtype=torch.float32)[None]


def test_flip_permutation_swaps_left_and_right_names():
    names = [JOINT_NAMES[j] for j in LSP_FLIP_PERMUTATION]
    swapped = [n.replace("r_", "X").replace("l_", "r_").replace("X", "l_") for n in JOINT_NAMES]
    assert names == swapped and [LSP_FLIP_PERMUTATION[j] for j in LSP_FLIP_PERMUTATION] == list(range(14))
    groups = {"upper_arms", "lower_arms", "upper_legs", "lower_legs", "torso", "head"}
    assert {limb.group for limb in LIMBS} == groups


def test_pcp_perfect_prediction_is_one():
    gt, vis = _skeleton(), torch.ones(1, 14, dtype=torch.bool)
    pcp = PCP()
    pcp.update(gt, gt, vis)
    assert all(v.item() == 1.0 for v in pcp.compute().values())


@pytest.mark.parametrize(("offset", "lower_arms"), [(19.9, 1.0), (20.1, 0.5)])
def test_pcp_wrist_just_inside_or_outside_half_the_lower_arm(offset, lower_arms):
    gt, vis = _skeleton(), torch.ones(1, 14, dtype=torch.bool)
    pred = gt.clone()
    pred[0, 6, 1] += offset  # r_wrist; the r_lower_arm is 40 px, threshold 0.5 -> 20 px
    pcp = PCP(threshold=0.5)
    pcp.update(pred, gt, vis)
    out = pcp.compute()
    assert out["pcp/lower_arms"].item() == pytest.approx(lower_arms)
    assert out["pcp/upper_arms"].item() == 1.0
    assert out["pcp/mean"].item() == pytest.approx((3 + lower_arms) / 4)


def test_pcp_excludes_limbs_with_an_invisible_endpoint():
    gt, vis = _skeleton(), torch.ones(1, 14, dtype=torch.bool)
    pred = gt.clone()
    pred[0, 6] += 100.0  # r_wrist far off but not visible: r_lower_arm not scored
    pred[0, 3] += 100.0  # l_hip far off but visible: l_upper_leg and torso wrong
    vis[0, 6] = False
    pcp = PCP()
    pcp.update(pred, gt, vis)
    pcp.update(gt, gt, torch.ones(1, 14, dtype=torch.bool))  # a second, perfect sample
    out = pcp.compute()
    assert pcp.total.tolist() == [2, 2, 1, 2, 2, 2, 2, 2, 2, 2]
    assert out["pcp/lower_arms"].item() == 1.0
    assert out["pcp/upper_legs"].item() == pytest.approx(3 / 4)
    assert out["pcp/torso"].item() == pytest.approx(1 / 2)


def test_pdj_at_known_distances():
    gt, vis = _skeleton(), torch.ones(1, 14, dtype=torch.bool)
    assert torso_diameter(gt).item() == pytest.approx(50.0)
    pred = gt.clone()
    pred[0, 0, 0] += 9.9  # r_ankle within 0.2 x 50 = 10 px
    pred[0, 1, 1] += 10.1  # r_knee outside 10 px, inside 25 px
    pred[0, 6, 0] += 30.0  # r_wrist outside 25 px, but invisible
    vis[0, 6] = False
    pdj = PDJ(num_points=11)
    pdj.update(pred, gt, vis)
    out = pdj.compute()
    assert out["pdj@0.2/r_ankle"].item() == 1.0 and out["pdj@0.2/r_knee"].item() == 0.0
    assert torch.isnan(out["pdj@0.2/r_wrist"])
    assert out["pdj@0.2"].item() == pytest.approx(12 / 13)
    assert out["pdj@0.5"].item() == 1.0
    fractions, rates = pdj.curve()
    assert len(fractions) == 11 and fractions[0] == 0 and fractions[-1] == pytest.approx(0.5)
    assert rates[0].item() == pytest.approx(11 / 13)  # at fraction 0 only exact joints count
    assert (rates.diff() >= 0).all() and rates[-1].item() == 1.0
    assert pdj.curve(per_joint=True)[1].shape == (11, 14)


# ---------------------------------------------------------------- network


def test_deeppose_net_shapes_at_220_and_other_sizes():
    torch.manual_seed(0)
    net = DeepPoseNet(num_joints=14, dropout=0.6, input_size=220).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 220, 220))
        assert out.shape == (2, 14, 2) and out.abs().max() < 0.5  # starts near the box centre
        assert net(torch.rand(1, 3, 180, 260)).shape == (1, 14, 2)
    small = DeepPoseNet(num_joints=3, input_size=128, lrn=True)
    assert small(torch.rand(2, 3, 128, 128)).shape == (2, 3, 2)
    outputs = torch.arange(2 * 3 * 2.0).view(2, 3, 2)
    assert select_joints(outputs, torch.tensor([2, 0])).tolist() == [[4.0, 5.0], [6.0, 7.0]]


# ---------------------------------------------------------------- geometry


def test_box_normalisation_round_trip_and_range():
    center, size = torch.tensor([[50.0, 40.0], [10.0, 10.0]]), torch.tensor([[100.0, 80.0], [20.0, 20.0]])
    corners = torch.tensor([[[0.0, 0.0], [100.0, 80.0]], [[0.0, 0.0], [20.0, 20.0]]])
    norm = normalize_to_box(corners, center, size)
    assert torch.allclose(norm, torch.tensor([[-0.5, -0.5], [0.5, 0.5]]).expand(2, 2, 2))
    y = torch.rand(2, 14, 2) * 100
    assert torch.allclose(denormalize_from_box(normalize_to_box(y, center, size), center, size), y, atol=1e-5)
    square = normalize_to_box(y[:, 0], center, torch.tensor([100.0, 20.0]))
    assert torch.allclose(square, (y[:, 0] - center) / torch.tensor([[100.0], [20.0]]))


def test_crop_of_a_known_region_and_point_mapping():
    image = torch.arange(40 * 50, dtype=torch.float32).view(1, 1, 40, 50).expand(1, 3, 40, 50).contiguous()
    crops = crop_around(image, torch.tensor([[10.0, 12.0]]), torch.tensor([8.0]), out_size=8)
    assert torch.equal(crops.images[0, 0], image[0, 0, 8:16, 6:14])  # x 6..13, y 8..15
    # a bright dot at pixel (x=20, y=30) lands where its box-normalised position says, in a 2x shrunken crop
    dot = torch.zeros(1, 3, 40, 50)
    dot[..., 30:32, 20:22] = 1.0
    center = torch.tensor([[24.0, 26.0]])
    crops = crop_around(dot, center, torch.tensor([32.0]), out_size=16)
    dot_centre = torch.tensor([[21.0, 31.0]])
    norm = normalize_to_box(dot_centre, crops.box_center, crops.box_size)
    col, row = ((norm + 0.5) * 16).floor().long()[0].tolist()
    assert crops.images[0, 0].argmax().item() == row * 16 + col
    # many crops from one image via batch_index
    two = crop_around(image, torch.tensor([[10.0, 12.0], [30.0, 20.0]]), torch.tensor([8.0, 8.0]), 8,
                      batch_index=torch.tensor([0, 0]))  # fmt: skip
    assert two.images.shape == (2, 3, 8, 8) and torch.equal(two.images[1, 0], image[0, 0, 16:24, 26:34])


def test_lspet_fixture_copy_with_images_in_root(tmp_path):
    if not LSPET.is_dir():
        pytest.skip("shared LSPet fixture not present")
    shutil.copy(LSPET / "joints.mat", tmp_path / "joints.mat")
    for img in sorted((LSPET / "images").iterdir())[:3]:
        shutil.copy(img, tmp_path / img.name)
    with pytest.warns(UserWarning, match="397 of 400"):
        ann = read_lsp(tmp_path)
    assert len(ann) == 3 and ann.image_paths[0] == tmp_path / "im00001.jpg"
