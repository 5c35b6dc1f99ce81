"""`equicam cam` and `equicam evaluate` on small synthetic cases with a tiny checkpoint."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from equicam.cli import main
from equicam.core.checkpoint import save_checkpoint
from equicam.core.model import ModelConfig, MultiModalCAM

MAPS = ["t1", "t1ce", "t2", "flair", "fused_mean", "fused_max", "fused_geometric"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = MultiModalCAM(ModelConfig(widths=(4, 8, 8, 8), input_size=32))
    with torch.no_grad():  # lean towards "tumour" so that maps are not all gated to zero
        for net in model.nets.values():
            net.head.weight[1] += 0.3
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, model, {"threshold": 0.4})


def _cam_args(case, checkpoint, out):
    return [
        "cam",
        str(case),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]


def test_cam_writes_maps_and_masks_in_the_case_geometry(synthetic_cases, checkpoint, tmp_path):
    case = synthetic_cases / "BraTS2021_00000"
    assert main(_cam_args(case / "BraTS2021_00000_t2.nii.gz", checkpoint, tmp_path)) == 0
    scan = nib.load(case / "BraTS2021_00000_flair.nii.gz")
    names = ["t1", "t1ce", "t2", "flair", "fused_mean", "fused_max"]
    for name in names:
        cam, mask = (
            nib.load(tmp_path / f"cam_{name}.nii.gz"),
            nib.load(tmp_path / f"mask_{name}.nii.gz"),
        )
        for image in (cam, mask):
            np.testing.assert_array_equal(image.affine, scan.affine)
            assert image.shape == scan.shape
        assert cam.get_data_dtype() == np.float32 and mask.get_data_dtype() == np.uint8
        values = np.asarray(cam.dataobj)
        assert values.min() >= 0 and values.max() <= 1
        np.testing.assert_array_equal(np.asarray(mask.dataobj), values >= 0.4)
    provenance = json.loads((tmp_path / "cam.json").read_text())
    assert provenance["threshold"] == 0.4 and provenance["method"] == "cam"


def test_a_rerun_keeps_a_mask_the_user_edited(synthetic_cases, checkpoint, tmp_path):
    args = _cam_args(synthetic_cases / "BraTS2021_00000", checkpoint, tmp_path)
    assert main(args) == 0
    edited = tmp_path / "mask_fused_mean.nii.gz"
    image = nib.load(edited)
    data = np.asarray(image.dataobj).copy()
    data[10:20, 10:20, 30] = 1 - data[10:20, 10:20, 30]
    nib.save(nib.Nifti1Image(data, image.affine, image.header), edited)
    before = edited.read_bytes()
    with pytest.warns(UserWarning, match="differs from this run's mask and was kept"):
        assert main(args) == 0
    assert edited.read_bytes() == before
    assert (tmp_path / "mask_fused_mean_2.nii.gz").is_file()
    assert not (tmp_path / "mask_t1_2.nii.gz").exists()


def test_evaluate_writes_the_documented_schema(synthetic_cases, checkpoint, tmp_path):
    with pytest.warns(UserWarning, match="no segmentation"):
        data = tmp_path / "data"
        data.mkdir()
        for case in sorted(synthetic_cases.iterdir())[:2]:
            (data / case.name).symlink_to(case)
        unlabelled = data / "BraTS2021_00099"
        unlabelled.mkdir()
        source = sorted(synthetic_cases.iterdir())[0]
        for modality in ("t1", "t1ce", "t2", "flair"):
            name = f"BraTS2021_00099_{modality}.nii.gz"
            (unlabelled / name).symlink_to(source / f"BraTS2021_00000_{modality}.nii.gz")
        assert (
            main(
                [
                    "evaluate",
                    str(data),
                    "--checkpoint",
                    str(checkpoint),
                    "--out",
                    str(tmp_path / "out"),
                    "--method",
                    "gradcampp",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["checkpoint"] == str(checkpoint) and results["method"] == "gradcampp"
    assert results["cases"] == ["BraTS2021_00000", "BraTS2021_00006"]
    assert set(results["summary"]) == set(MAPS)
    for row in results["summary"].values():
        assert set(row) >= {"dice_mean", "dice_std", "assd_mean", "threshold"}
        assert 0 <= row["dice_mean"] <= 1 and row["threshold"] == 0.4
    for case_id in results["cases"]:
        assert set(results["per_case"][case_id]) == set(MAPS)
        assert set(results["per_case"][case_id]["flair"]) == {"dice", "assd"}
    assert set(results["sweep"]) == {"0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8"}
    assert "| fused_mean |" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "dice_vs_threshold.png").stat().st_size > 1000


def test_a_bad_checkpoint_is_a_clear_command_line_error(synthetic_cases, tmp_path, capsys):
    bad = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    code = main(
        [
            "cam",
            str(synthetic_cases / "BraTS2021_00000"),
            "--checkpoint",
            str(bad),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "model.pt" in capsys.readouterr().err
