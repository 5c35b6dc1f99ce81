"""`equicam cam` and `equicam evaluate` on small synthetic cases with a tiny checkpoint."""

import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from equicam.cli import main
from equicam.core.brats import CaseError, load_case
from equicam.core.cam_output import cam_case
from equicam.core.checkpoint import save_checkpoint
from equicam.core.errors import EquicamError
from equicam.core.evaluation import case_maps, evaluate, normalised_images
from equicam.core.inference import run_to_end
from equicam.core.metrics import assd, dice, hd95
from equicam.core.model import ModelConfig, MultiModalCAM
from tests.conftest import two_process_torchrun

ROOT = Path(__file__).resolve().parents[2]

MAPS = [
    "t1",
    "t1ce",
    "t2",
    "flair",
    "fused_mean",
    "fused_max",
    "fused_geometric",
    "fused_weighted",
]
CAM_MAPS = [m for m in MAPS if m != "fused_geometric"]  # what `equicam cam` writes


def _tiny_model():
    torch.manual_seed(0)
    model = MultiModalCAM(ModelConfig(widths=(4, 8, 8, 8), input_size=32))
    with torch.no_grad():  # lean towards "tumour" so that maps are not all gated to zero
        for net in model.nets.values():
            net.head.weight[1] += 0.3
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, _tiny_model(), {"threshold": 0.4})


def test_per_map_thresholds_of_the_checkpoint_are_used(synthetic_cases, tmp_path):
    per_map = {"t1": 0.2, "flair": 0.7, "fused_mean": 0.3}
    path = save_checkpoint(
        tmp_path / "per_map.safetensors", _tiny_model(), {"threshold": 0.4, "thresholds": per_map}
    )
    case = synthetic_cases / "BraTS2021_00000"
    cam_case(case, path, tmp_path / "out", device="cpu")
    used = json.loads((tmp_path / "out" / "BraTS2021_00000" / "cam.json").read_text())[
        "thresholds"
    ]
    assert used == {**dict.fromkeys(CAM_MAPS, 0.4), **per_map}
    for name in ("t1", "flair", "t2"):
        cam = np.asarray(
            nib.load(tmp_path / "out" / "BraTS2021_00000" / f"cam-{name}.nii.gz").dataobj
        )
        mask = np.asarray(
            nib.load(tmp_path / "out" / "BraTS2021_00000" / f"mask-{name}.nii.gz").dataobj
        )
        np.testing.assert_array_equal(mask, cam >= used[name])
    data = tmp_path / "data"
    data.mkdir()
    (data / case.name).symlink_to(case)
    results = evaluate(
        data, path, tmp_path / "eval", device="cpu", thresholds=(0.5,), log=lambda line: None
    )
    assert {k: v["threshold"] for k, v in results["summary"].items()} == {
        **dict.fromkeys(MAPS, 0.4),
        **per_map,
    }
    assert {v["threshold"] for v in results["sweep"]["0.5"].values()} == {0.5}
    cam_case(case, path, tmp_path / "fixed", device="cpu", threshold=0.6)
    fixed = json.loads((tmp_path / "fixed" / "BraTS2021_00000" / "cam.json").read_text())[
        "thresholds"
    ]
    assert set(fixed.values()) == {0.6}


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
    names = CAM_MAPS
    for name in names:
        cam, mask = (
            nib.load(tmp_path / "BraTS2021_00000" / f"cam-{name}.nii.gz"),
            nib.load(tmp_path / "BraTS2021_00000" / f"mask-{name}.nii.gz"),
        )
        for image in (cam, mask):
            np.testing.assert_array_equal(image.affine, scan.affine)
            assert image.shape == scan.shape
        assert cam.get_data_dtype() == np.float32 and mask.get_data_dtype() == np.uint8
        values = np.asarray(cam.dataobj)
        assert values.min() >= 0 and values.max() <= 1
        np.testing.assert_array_equal(np.asarray(mask.dataobj), values >= 0.4)
    provenance = json.loads((tmp_path / "BraTS2021_00000" / "cam.json").read_text())
    assert provenance["thresholds"] == dict.fromkeys(names, 0.4) and provenance["method"] == "cam"
    assert provenance["checkpoint_file"] == str(checkpoint)
    assert provenance["precision"] in ("fp32", "bf16")


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
    assert results["precision"] in ("fp32", "bf16")
    assert results["cases"] == ["BraTS2021_00000", "BraTS2021_00006"]
    assert set(results["summary"]) == set(MAPS)
    for row in results["summary"].values():
        assert set(row) >= {"dice_mean", "dice_std", "assd_mean", "hd95_mean", "threshold"}
        assert 0 <= row["dice_mean"] <= 1 and row["threshold"] == 0.4
        assert row["hd95_mean"] >= 0
    for case_id in results["cases"]:
        assert set(results["per_case"][case_id]) == set(MAPS)
        assert set(results["per_case"][case_id]["flair"]) == {"dice", "assd", "hd95", "fp_cm3"}
    assert results["failed"] == {} and results["tumour_patients"] == results["cases"]
    assert set(results["strata"]) == {"< 30 cm3", "30-100 cm3", "> 100 cm3"}
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


def _labelled_pair(synthetic_cases, folder):
    """Two labelled synthetic cases (linked) in a fresh data folder."""
    folder.mkdir()
    for name in ("BraTS2021_00000", "BraTS2021_00006"):
        (folder / name).symlink_to(synthetic_cases / name)
    return folder


def test_evaluate_scores_are_those_of_the_masks_cam_writes(synthetic_cases, checkpoint, tmp_path):
    data = _labelled_pair(synthetic_cases, tmp_path / "data")
    results = evaluate(
        data,
        checkpoint,
        tmp_path / "eval",
        device="cpu",
        threshold=0.3,
        thresholds=(0.3, 0.55),
        fusions=("mean", "max"),
        log=lambda line: None,
    )
    assert set(results["sweep"]) == {"0.3", "0.55"}
    for name, row in results["summary"].items():  # the sweep: Dice and FP volume only
        swept = results["sweep"]["0.3"][name]
        assert set(swept) == {"dice_mean", "dice_std", "fp_cm3_mean", "fp_cm3_std"} | {
            "threshold",
            "n_cases",
        }
        assert {k: row[k] for k in swept} == swept
    assert all(
        row["threshold"] == 0.3 and row["n_cases"] == 2 for row in results["summary"].values()
    )
    case = load_case(data / "BraTS2021_00006")
    cam_case(case.files.folder, checkpoint, tmp_path / "cam", device="cpu", threshold=0.3)
    for name in ("flair", "fused_max"):
        mask = case.geometry.to_display(
            np.asarray(nib.load(tmp_path / "cam" / case.case_id / f"mask-{name}.nii.gz").dataobj)
        )
        scores = results["per_case"]["BraTS2021_00006"][name]
        assert scores["dice"] == pytest.approx(dice(mask, case.whole_tumour))
        assert scores["assd"] == pytest.approx(assd(mask, case.whole_tumour, case.spacing))
        assert scores["hd95"] == pytest.approx(hd95(mask, case.whole_tumour, case.spacing))
        outside = np.count_nonzero(mask.astype(bool) & ~case.whole_tumour)
        assert scores["fp_cm3"] == pytest.approx(outside * np.prod(case.spacing) / 1000)
    table = (tmp_path / "eval" / "results.md").read_text()
    assert "| fused_max |" in table and "Mean Dice of tumour patients per threshold" in table
    assert (tmp_path / "eval" / "dice_vs_threshold.png").is_file()

    unswept = evaluate(
        data,
        checkpoint,
        tmp_path / "unswept",
        device="cpu",
        threshold=0.3,
        thresholds=(),
        fusions=("mean", "max"),
        precision=results["precision"],
        log=lambda line: None,
    )
    assert unswept["sweep"] == {} and unswept["per_case"] == results["per_case"]
    assert not (tmp_path / "unswept" / "dice_vs_threshold.png").exists()
    table = (tmp_path / "unswept" / "results.md").read_text()
    assert "| fused_max |" in table and "Mean Dice of tumour patients per threshold" not in table


def test_a_case_with_fewer_modalities_gives_the_maps_it_can(synthetic_cases, checkpoint, tmp_path):
    case = tmp_path / "data" / "BraTS2021_00000"
    case.mkdir(parents=True)
    for suffix in ("t2", "flair", "seg"):
        name = f"BraTS2021_00000_{suffix}.nii.gz"
        (case / name).symlink_to(synthetic_cases / "BraTS2021_00000" / name)
    with pytest.warns(UserWarning, match="no t1, t1ce file"):
        written = cam_case(case, checkpoint, tmp_path / "out", device="cpu")
    names = {p.name for p in written}
    assert {"cam-t2.nii.gz", "cam-flair.nii.gz", "cam-fused_mean.nii.gz"} <= names
    assert not any("t1" in n for n in names)
    provenance = json.loads((tmp_path / "out" / "BraTS2021_00000" / "cam.json").read_text())
    assert provenance["modalities"] == ["t2", "flair"]


def test_bad_output_folder_or_threshold_fail_before_any_work(
    synthetic_cases, checkpoint, tmp_path
):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    case = synthetic_cases / "BraTS2021_00000"
    with pytest.raises(EquicamError, match="cannot create the output folder") as error:
        cam_case(case, checkpoint, blocker / "out", device="cpu")
    assert "a_file" in str(error.value)
    with pytest.raises(CaseError, match="cannot create the output folder"):
        evaluate(synthetic_cases, checkpoint, blocker / "out", device="cpu")
    with pytest.raises(ValueError, match="threshold must lie strictly between 0 and 1"):
        cam_case(case, checkpoint, tmp_path / "out", device="cpu", threshold=1.5)


def test_evaluate_under_torchrun_shards_cases_and_gives_exactly_one_process_results(
    synthetic_cases, checkpoint, tmp_path
):
    data = _labelled_pair(synthetic_cases, tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    command = two_process_torchrun(
        "equicam.cli",
        "evaluate",
        str(data),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(tmp_path / "ddp"),
        "--device",
        "cpu",
    )
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for case_id in ("BraTS2021_00000", "BraTS2021_00006"):  # each case on one rank only
        assert run.stdout.count(f"{case_id} Dice:") == 1, run.stdout
    both = json.loads((tmp_path / "ddp" / "results.json").read_text())
    one = evaluate(
        data,
        checkpoint,
        tmp_path / "one",
        device="cpu",
        precision=both["precision"],
        log=lambda line: None,
    )
    assert both["ranks"] == 2 and both["cases"] == one["cases"] == sorted(one["per_case"])
    for key in ("per_case", "summary", "sweep", "strata", "tumour_free", "tumour_cm3"):
        assert both[key] == one[key], key


def _copy_case(source: Path, folder: Path, case_id: str, box=None) -> Path:
    """A copy of a synthetic case under a new id; with ``box`` (file-order slices) its
    segmentation becomes that box of oedema alone (a tumour of a chosen volume)."""
    target = folder / case_id
    target.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        image = nib.load(path)
        data = np.asarray(image.dataobj)
        if path.name.endswith("_seg.nii.gz") and box is not None:
            data = np.zeros_like(data)
            data[box] = 2
        suffix = path.name.split("_")[-1]
        nib.save(nib.Nifti1Image(data, image.affine, image.header), target / f"{case_id}_{suffix}")
    return target


@pytest.fixture(scope="module")
def cohort_dir(synthetic_cases, tmp_path_factory):
    """Six labelled cases: the three synthetic tumour patients, the tumour-free one, and three
    copies of a tumour patient whose tumour is a centred box of 8, 60 and 150 cm3 (2 mm voxels)
    so that every volume stratum has members whatever the generator draws."""
    folder = tmp_path_factory.mktemp("cohort")
    for case in ("BraTS2021_00000", "BraTS2021_00006", "BraTS2021_00008", "BraTS2021_00009"):
        (folder / case).symlink_to(synthetic_cases / case)
    source = synthetic_cases / "BraTS2021_00000"
    shape = nib.load(source / "BraTS2021_00000_seg.nii.gz").shape
    for case_id, sides in (
        ("BraTS2021_00100", (10, 10, 10)),
        ("BraTS2021_00101", (15, 20, 25)),
        ("BraTS2021_00102", (30, 25, 25)),
    ):
        box = tuple(
            slice(n // 2 - k // 2, n // 2 - k // 2 + k) for n, k in zip(shape, sides, strict=True)
        )
        _copy_case(source, folder, case_id, box)
    return folder


def _quiet(line):
    return None


def test_tumour_free_patients_strata_and_hd95_are_reported_apart(cohort_dir, checkpoint, tmp_path):
    results = evaluate(
        cohort_dir, checkpoint, tmp_path / "out", device="cpu", thresholds=(0.3,), log=_quiet
    )
    volumes = {}
    for case_id in results["cases"]:
        case = load_case(cohort_dir / case_id)
        volumes[case_id] = case.whole_tumour.sum() * np.prod(case.spacing) / 1000
        assert results["tumour_cm3"][case_id] == pytest.approx(volumes[case_id])
    assert results["tumour_free"]["cases"] == ["BraTS2021_00009"]
    with_tumour = [c for c in results["cases"] if volumes[c] > 0]
    assert results["tumour_patients"] == with_tumour and len(with_tumour) >= 4
    members = {name: stratum["cases"] for name, stratum in results["strata"].items()}
    assert members == {
        "< 30 cm3": [c for c in with_tumour if volumes[c] < 30],
        "30-100 cm3": [c for c in with_tumour if 30 <= volumes[c] <= 100],
        "> 100 cm3": [c for c in with_tumour if volumes[c] > 100],
    }
    assert all(members.values()), volumes  # the cohort was built to fill every stratum
    for name, row in results["summary"].items():
        dices = [results["per_case"][c][name]["dice"] for c in with_tumour]
        hd = [results["per_case"][c][name]["hd95"] for c in with_tumour]
        assert row["n_cases"] == len(with_tumour) and row["dice_mean"] == pytest.approx(
            np.mean(dices)
        )
        assert row["hd95_mean"] == pytest.approx(np.mean(hd))
        for stratum, cases in members.items():
            expected = np.mean([results["per_case"][c][name]["dice"] for c in cases])
            assert results["strata"][stratum]["summary"][name]["dice_mean"] == pytest.approx(
                expected
            )
    # The tumour-free patient: the false-positive volume of its masks, not a Dice.
    case = load_case(cohort_dir / "BraTS2021_00009")
    maps = run_to_end(
        case_maps(
            case,
            load_checkpoint_model(checkpoint),
            method="cam",
            device="cpu",
            fusions=("mean", "max", "geometric", "weighted"),
            precision=results["precision"],
        )
    ).all_maps()
    voxel_cm3 = np.prod(case.spacing) / 1000
    for name, volume in maps.items():
        fp = results["tumour_free"]["per_case"]["BraTS2021_00009"][name]
        assert fp == pytest.approx(np.count_nonzero(volume >= 0.4) * voxel_cm3)
        assert results["tumour_free"]["summary"][name]["fp_cm3_mean"] == pytest.approx(fp)
    assert any(v > 0 for v in results["tumour_free"]["per_case"]["BraTS2021_00009"].values())
    table = (tmp_path / "out" / "results.md").read_text()
    assert "HD95 (mm)" in table and "Tumour-free patients (1)" in table
    assert "< 30 cm3 (" in table and "| fused_weighted |" in table


def load_checkpoint_model(path):
    from equicam.core.checkpoint import load_checkpoint

    return load_checkpoint(path, device="cpu")[0]


def test_a_bad_case_is_listed_and_the_run_goes_on_then_resume_redoes_only_it(
    synthetic_cases, checkpoint, tmp_path
):
    data = _labelled_pair(synthetic_cases, tmp_path / "data")
    bad = _copy_case(synthetic_cases / "BraTS2021_00008", data, "BraTS2021_00050")
    good_t1 = (bad / "BraTS2021_00050_t1.nii.gz").read_bytes()
    (bad / "BraTS2021_00050_t1.nii.gz").write_bytes(b"not a NIfTI file at all")
    lines: list[str] = []
    args = ["evaluate", str(data), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]
    with pytest.warns(UserWarning, match="BraTS2021_00050 failed"):
        first = evaluate(data, checkpoint, tmp_path / "out", device="cpu", log=lines.append)
    assert first["cases"] == ["BraTS2021_00000", "BraTS2021_00006"]
    assert list(first["failed"]) == ["BraTS2021_00050"]
    assert "BraTS2021_00050_t1.nii.gz" in first["failed"]["BraTS2021_00050"]
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["failed"] == first["failed"]
    assert "BraTS2021_00050" in (tmp_path / "out" / "results.md").read_text()
    assert sorted(p.name for p in (tmp_path / "out" / "cases").iterdir()) == [
        "BraTS2021_00000.json",
        "BraTS2021_00006.json",
    ]

    (bad / "BraTS2021_00050_t1.nii.gz").write_bytes(good_t1)
    lines.clear()
    second = evaluate(
        data, checkpoint, tmp_path / "out", device="cpu", resume=True, log=lines.append
    )
    assert [line.split()[0] for line in lines if " Dice:" in line] == ["BraTS2021_00050"]
    assert second["failed"] == {} and len(second["cases"]) == 3
    for case_id in first["cases"]:
        assert second["per_case"][case_id] == first["per_case"][case_id]
    fresh = evaluate(data, checkpoint, tmp_path / "fresh", device="cpu", log=_quiet)
    assert fresh["per_case"] == second["per_case"] and fresh["summary"] == second["summary"]

    # Kept cases made with other settings are not mixed in.
    with pytest.raises(CaseError, match="other settings"):
        evaluate(data, checkpoint, tmp_path / "out", device="cpu", threshold=0.7, resume=True)
    assert main([*args, "--device", "cpu", "--resume"]) == 0
    # Nor those of another checkpoint written to the same path (a retrained run, say).
    run = save_checkpoint(tmp_path / "run.safetensors", _tiny_model(), {"threshold": 0.4})
    evaluate(data, run, tmp_path / "run_out", device="cpu", log=_quiet)
    save_checkpoint(run, _tiny_model(), {"threshold": 0.45})
    with pytest.raises(CaseError, match="other settings"):
        evaluate(data, run, tmp_path / "run_out", device="cpu", resume=True, log=_quiet)


def test_several_workers_give_exactly_the_results_of_one(cohort_dir, checkpoint, tmp_path):
    lines: list[str] = []
    one = evaluate(cohort_dir, checkpoint, tmp_path / "one", device="cpu", log=_quiet)
    two = evaluate(
        cohort_dir, checkpoint, tmp_path / "two", device="cpu", workers=2, log=lines.append
    )
    assert two["workers"] == 2 and sorted(line.split()[0] for line in lines) == two["cases"]
    for key in ("cases", "per_case", "summary", "sweep", "strata", "tumour_free", "tumour_cm3"):
        assert two[key] == one[key], key
    with pytest.raises(ValueError, match="workers must be at least 1"):
        evaluate(cohort_dir, checkpoint, tmp_path / "none", device="cpu", workers=0)


def test_the_refined_protocol_is_the_checkpoints_default_and_recorded(synthetic_cases, tmp_path):
    settings = {"threshold": 0.3, "largest_only": True, "min_component_mm3": 0.0, "grow_mm": 4.0}
    refined = {"z_sigma_mm": 4.0, "gate": 0.5, "maps": dict.fromkeys(MAPS, settings)}
    path = save_checkpoint(
        tmp_path / "refined.safetensors",
        _tiny_model(),
        {"threshold": 0.4, "refined": refined, "protocol": "refined"},
    )
    case = synthetic_cases / "BraTS2021_00006"
    data = tmp_path / "data"
    data.mkdir()
    (data / case.name).symlink_to(case)
    results = evaluate(
        data, path, tmp_path / "eval", device="cpu", thresholds=(), log=lambda line: None
    )
    assert results["protocol"] == "refined"
    assert results["protocol_settings"]["maps"]["fused_mean"] == settings
    assert "protocol `refined`" in (tmp_path / "eval" / "results.md").read_text()
    cam_case(case, path, tmp_path / "cam", device="cpu")
    written = tmp_path / "cam" / case.name  # equicam cam writes one folder per case
    provenance = json.loads((written / "cam.json").read_text())
    assert provenance["protocol"] == "refined"
    assert provenance["thresholds"] == dict.fromkeys(CAM_MAPS, 0.3)
    loaded = load_case(case)
    for name in ("flair", "fused_mean"):
        mask = loaded.geometry.to_display(
            np.asarray(nib.load(written / f"mask-{name}.nii.gz").dataobj)
        )
        labels, count = ndimage.label(mask, np.ones((3, 3, 3)))
        assert count <= 1  # the largest component only, grown
        assert results["per_case"][case.name][name]["dice"] == pytest.approx(
            dice(mask, loaded.whole_tumour)
        )
    paper = evaluate(
        data,
        path,
        tmp_path / "paper",
        device="cpu",
        thresholds=(),
        protocol="paper",
        log=lambda line: None,
    )
    assert paper["protocol"] == "paper"
    assert paper["protocol_settings"] == {"thresholds": dict.fromkeys(MAPS, 0.4)}


def test_guided_masks_are_bright_flair_regions_in_files_and_scores_alike(
    synthetic_cases, tmp_path
):
    settings = {"threshold": 0.3, "guide": "flair", "guide_z": 1.0}
    guided = {"z_sigma_mm": 0.0, "gate": 0.5, "maps": dict.fromkeys(MAPS, settings)}
    path = save_checkpoint(
        tmp_path / "guided.safetensors", _tiny_model(), {"threshold": 0.4, "guided": guided}
    )
    case = synthetic_cases / "BraTS2021_00006"
    data = tmp_path / "data"
    data.mkdir()
    (data / case.name).symlink_to(case)
    results = evaluate(
        data, path, tmp_path / "eval", device="cpu", protocol="guided", log=lambda line: None
    )
    assert results["protocol"] == "guided"
    cam_case(case, path, tmp_path / "cam", device="cpu", protocol="guided")
    written = tmp_path / "cam" / case.name
    assert json.loads((written / "cam.json").read_text())["protocol"] == "guided"
    loaded = load_case(case)
    flair = normalised_images(loaded, ["flair"])["flair"]
    for name in ("t1", "fused_mean"):
        mask = loaded.geometry.to_display(
            np.asarray(nib.load(written / f"mask-{name}.nii.gz").dataobj)
        ).astype(bool)
        assert mask.any() and (flair[mask] >= 1.0).all()
        assert results["per_case"][case.name][name]["dice"] == pytest.approx(
            dice(mask, loaded.whole_tumour)
        )


def test_refined_on_a_checkpoint_without_its_settings_is_a_clear_error(
    synthetic_cases, checkpoint, tmp_path, capsys
):
    args = _cam_args(synthetic_cases / "BraTS2021_00000", checkpoint, tmp_path / "out")
    assert main([*args, "--protocol", "refined"]) == 2
    error = capsys.readouterr().err
    assert "no calibrated settings for the refined protocol" in error and "tiny" in error
    assert not (tmp_path / "out").exists()


def test_bias_correction_changes_the_inputs_and_is_recorded(synthetic_cases, checkpoint, tmp_path):
    case = load_case(synthetic_cases / "BraTS2021_00000")
    plain = normalised_images(case, ["t1", "flair"])
    corrected = normalised_images(case, ["t1", "flair"], bias_correction=True)
    brain = plain["flair"] != 0
    assert np.array_equal(corrected["flair"] != 0, brain)
    assert abs(corrected["flair"][brain].mean()) < 0.05
    assert np.abs(corrected["flair"] - plain["flair"]).mean() > 0.02
    data = tmp_path / "data"
    data.mkdir()
    (data / "BraTS2021_00000").symlink_to(synthetic_cases / "BraTS2021_00000")
    out = tmp_path / "out"
    results = evaluate(data, checkpoint, out, device="cpu", bias_correction=True, log=str)
    assert results["bias_correction"] is True
    assert json.loads((out / "results.json").read_text())["bias_correction"] is True
    with pytest.raises(CaseError, match="other settings"):
        evaluate(data, checkpoint, out, device="cpu", resume=True, log=str)


def test_a_checkpoint_trained_on_corrected_scans_is_run_on_corrected_scans(
    synthetic_cases, tmp_path
):
    """``bias_correction`` in the metadata sets the default of ``cam`` and ``evaluate``; the
    command line's ``--no-bias-correction`` overrides it, and each output records it."""
    corrected = save_checkpoint(
        tmp_path / "bc.safetensors", _tiny_model(), {"threshold": 0.4, "bias_correction": True}
    )
    plain = save_checkpoint(tmp_path / "plain.safetensors", _tiny_model(), {"threshold": 0.4})
    case = synthetic_cases / "BraTS2021_00000"
    for path, expected in ((corrected, True), (plain, False)):
        out = tmp_path / f"cam_{path.stem}"
        cam_case(case, path, out, device="cpu")
        (written,) = out.iterdir()
        assert json.loads((written / "cam.json").read_text())["bias_correction"] is expected
    maps = {
        name: nib.load(
            tmp_path / f"cam_{name}" / "BraTS2021_00000" / "cam-flair.nii.gz"
        ).get_fdata()
        for name in ("bc", "plain")
    }
    assert np.abs(maps["bc"] - maps["plain"]).max() > 1e-3
    data = tmp_path / "data"
    data.mkdir()
    (data / "BraTS2021_00000").symlink_to(case)
    assert evaluate(data, corrected, tmp_path / "ev", device="cpu", log=str)["bias_correction"]
    args = ["evaluate", str(data), "--checkpoint", str(corrected), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "off"), "--no-bias-correction"]) == 0
    assert json.loads((tmp_path / "off" / "results.json").read_text())["bias_correction"] is False
