"""How fast is a CAM? The pipeline against the bare forward pass and against Captum.

    .venv/bin/python bench/cam_speed.py [--checkpoint equivariant] [--device cpu] [--repeats 5] \\
        [--second-stage CKPT]

On a full-size synthetic case (four modalities, 240 x 240 x 155) it prints, as median
(min-max) of ``--repeats`` runs, with the machine it ran on:

1. whole volume: the core generator alone, and the ``equicam cam`` command (wall time and
   peak memory of the process);
2. current slice, four modalities, as the CAM inspector computes it (normalised volumes
   cached, one slice per modality);
3. the limit: the bare batched forward pass of the networks the pipeline runs (BatchNorm
   folded, channels-last) on the same slices, and the ratio pipeline / bare; then where the
   pipeline's time goes: the networks and their CAMs (our CAM, maps only), resizing the
   slices to the networks' input and the maps back to the scan, and the rest (per-slice
   normalising and gating, the brain mask, writing into the volumes, the fusions), each as a
   share of the pipeline, round by round;
4. Captum's ``LayerGradCam`` on the trained networks in float32, as a user would call it, and
   on the same inference copies and precision our pipeline runs, against our CAM and Grad-CAM;
   and the largest difference between Captum's Grad-CAM and ours (both float32);
5. the second stage (:mod:`equicam.core.segnet`) on the whole volume: the core generator, and
   ``equicam cam`` with its checkpoint (wall time and peak memory).

The core generator and everything of 3 and 4 run in turns, round after round, and each ratio
is the median (min-max) of the round-by-round ratios: on a shared machine whose speed drifts,
separate timing blocks disagree by up to 50%, turns do not. Timing depends on the architecture
only, so without a bundled checkpoint it uses the CPU default architecture with random weights
(it says which); so does the second stage without ``--second-stage``: a network of the
default :class:`~equicam.core.segnet.SegConfig` (the input size of ``train_segnet``'s default)
with random weights.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from equicam.core.brats import load_case
from equicam.core.checkpoint import (
    CheckpointError,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from equicam.core.inference import _tumour_maps, cam_volume, resolve_precision, run_to_end
from equicam.core.model import ModelConfig, MultiModalCAM, fold_batchnorm
from equicam.core.preprocess import brain_mask, from_input, normalise_volume, to_input
from equicam.core.segnet import SegConfig, SegNet, load_segnet, save_segnet, segment_steps
from equicam.core.synth import write_case

# `equicam cam` with its own peak resident memory (VmHWM, MB) as the last word of stdout. Not
# ru_maxrss: Linux carries the forking parent's resident size over into the child's.
PEAK_OF_CAM = (
    "import sys; from equicam.cli import main; status = main(['cam', *sys.argv[1:]]); "
    "print(int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024); "
    "sys.exit(status)"
)


def timed(function, repeats: int) -> tuple[float, float, float]:
    """Median, min and max wall time of ``function()`` in seconds (after one warm-up)."""
    return spread(timed_together({"": function}, repeats)[""])


def timed_together(functions: dict, repeats: int) -> dict[str, list[float]]:
    """Wall times of each function, run in turns (after one warm-up each).

    Run in turns, every function meets the same moments of a shared machine, so the ratios
    between them hold even when the machine's speed drifts between rounds.
    """
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def spread(times: list[float]) -> tuple[float, float, float]:
    """Median, min and max."""
    return statistics.median(times), min(times), max(times)


def ratio(slow: list[float], fast: list[float]) -> str:
    """Median (min-max) of the round-by-round ratios ``slow / fast``."""
    r = [a / b for a, b in zip(slow, fast, strict=True)]
    return f"{statistics.median(r):8.2f} ({min(r):.2f}-{max(r):.2f})"


def share(part: list[float], whole: list[float]) -> str:
    """Median (min-max) of the round-by-round shares ``part / whole``, in percent."""
    r = [100.0 * a / b for a, b in zip(part, whole, strict=True)]
    return f"{statistics.median(r):7.1f} % ({min(r):.1f}-{max(r):.1f})"


def show(label: str, t: tuple[float, float, float], unit: str = "s") -> None:
    scale = 1000.0 if unit == "ms" else 1.0
    print(f"{label:52s} {t[0] * scale:8.3f} {unit} ({t[1] * scale:.3f}-{t[2] * scale:.3f})")


def model_for(spec: str, folder: Path) -> tuple[Path, str]:
    try:
        load_checkpoint(spec)
        return Path(spec), f"checkpoint {spec}"
    except CheckpointError:
        torch.manual_seed(0)
        model = MultiModalCAM(ModelConfig(widths=(16, 32, 64, 64), input_size=96))
        path = save_checkpoint(folder / "random.safetensors", model, {"threshold": 0.5})
        return path, "random weights, CPU default architecture (widths 16-64, 96 px)"


def second_stage_for(spec: str | None, folder: Path) -> tuple[Path, str]:
    if spec:  # a file or a bundled name
        return resolve_checkpoint(spec), f"checkpoint {spec}"
    torch.manual_seed(0)
    config = SegConfig()
    path = save_segnet(folder / "second_stage.safetensors", SegNet(config), {"threshold": 0.5})
    return path, (
        f"random weights, default architecture (widths {config.widths}, "
        f"{config.input_size} px, context {config.context}): time and memory do not depend "
        "on the weights"
    )


def cam_command(case_dir: Path, checkpoint: Path, out: Path, device: str):
    """A function that runs ``equicam cam`` in a fresh process, and the list of the peak
    memories (MB) of its runs."""
    command = [
        sys.executable,
        "-c",
        PEAK_OF_CAM,
        str(case_dir),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--device",
        device,
    ]
    peaks: list[float] = []

    def run():
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        peaks.append(float(done.stdout.split()[-1]))

    return run, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="equivariant")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--second-stage", help="second-stage checkpoint (default: random)")
    args = parser.parse_args()

    print(
        f"machine: {platform.node()}, {platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, device {args.device}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        case_dir = write_case(tmp, seed=0, index=0, size="full")
        checkpoint, what = model_for(args.checkpoint, tmp)
        bf16 = resolve_precision("auto", args.device) == "bf16"
        print(f"model: {what}; precision {'bf16' if bf16 else 'fp32'} (as `auto` picks here)")
        model, _ = load_checkpoint(checkpoint, device=args.device)
        case = load_case(case_dir)
        brain = brain_mask(case.images)
        images = {m: normalise_volume(v, brain) for m, v in case.images.items()}
        z = int(np.median(np.flatnonzero(case.whole_tumour.any(axis=(1, 2)))))
        slices = [i for i in range(len(brain)) if brain[i].any()]
        print(f"case: {case.geometry.display_shape}, {len(slices)} slices with brain")

        command, peaks = cam_command(case_dir, checkpoint, tmp / "out", args.device)
        show("1. whole volume, `equicam cam` (load, CAM, write)", timed(command, args.repeats))
        print(f"{'1. peak memory of `equicam cam` (VmHWM)':52s} {max(peaks):8.0f} MB")
        current = timed(
            lambda: run_to_end(cam_volume(model, images, slices=[z], device=args.device)),
            args.repeats,
        )
        show("2. current slice, four modalities", current, "ms")

        size = model.config.input_size
        batch = {
            m: to_input(torch.from_numpy(images[m][slices])[:, None], size)
            .to(args.device)
            .contiguous(memory_format=torch.channels_last)
            for m in model.modalities
        }
        folded = {
            m: fold_batchnorm(model.nets[m]).to(args.device, memory_format=torch.channels_last)
            for m in model.modalities
        }
        device_type = args.device.split(":")[0]

        def sync():  # CUDA runs asynchronously: time the work, not its launch
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        def pipeline():
            run_to_end(cam_volume(model, images, device=args.device))

        def bare():
            with torch.inference_mode(), torch.autocast(device_type, torch.bfloat16, enabled=bf16):
                for m in model.modalities:
                    for i in range(0, len(slices), 16):
                        folded[m](batch[m][i : i + 16])
            sync()

        def resize():  # the pipeline's two resizes: slices to the input, maps back
            for m in model.modalities:
                for i in range(0, len(slices), 16):
                    x = torch.from_numpy(images[m][slices[i : i + 16]])[:, None]
                    to_input(x.to(args.device), size)
                    from_input(batch[m][i : i + 16], case.geometry.display_shape[1:])
            sync()

        from captum.attr import LayerGradCam

        def ours(method):
            def run():
                for m in model.modalities:
                    for i in range(0, len(slices), 16):
                        _tumour_maps(folded[m], batch[m][i : i + 16], method, bf16)
                sync()

            return run

        def captum(nets, precision_of_ours: bool):
            def run():
                for m in model.modalities:
                    net = nets[m]
                    layer = LayerGradCam(lambda x, net=net: net(x).mean(dim=(2, 3)), net.last)
                    for i in range(0, len(slices), 16):
                        x = batch[m][i : i + 16]
                        with torch.autocast(
                            device_type, torch.bfloat16, enabled=bf16 and precision_of_ours
                        ):
                            layer.attribute(x, target=1, relu_attributions=True)
                sync()

            return run

        t = timed_together(
            {
                "pipeline": pipeline,
                "bare": bare,
                "captum": captum(model.nets, False),
                "captum copies": captum(folded, True),
                "cam": ours("cam"),
                "resize": resize,
                "gradcam": ours("gradcam"),
            },
            args.repeats,
        )
        show("1. whole volume, core generator (CAM)", spread(t["pipeline"]))
        show("3. bare batched forward, same nets and slices", spread(t["bare"]))
        print(f"{'3. pipeline / bare':52s} {ratio(t['pipeline'], t['bare'])}")
        rest = [p - c - r for p, c, r in zip(t["pipeline"], t["cam"], t["resize"], strict=True)]
        for label, part in (
            ("networks and CAMs (maps only)", t["cam"]),
            ("resize in and back", t["resize"]),
            ("the rest: normalise, gate, write, fuse", rest),
        ):
            print(f"{'3. share, ' + label:52s} {share(part, t['pipeline'])}")
        show("4. Captum LayerGradCam, trained nets, fp32", spread(t["captum"]))
        show("4. Captum LayerGradCam, our copies and precision", spread(t["captum copies"]))
        show("4. our CAM (maps only)", spread(t["cam"]))
        show("4. our Grad-CAM (maps only)", spread(t["gradcam"]))
        for label, theirs in (("trained nets", "captum"), ("our copies", "captum copies")):
            for ours_name, key in (("CAM", "cam"), ("Grad-CAM", "gradcam")):
                label_text = f"4. our {ours_name} over Captum, {label}"
                print(f"{label_text:52s} {ratio(t[theirs], t[key])}x")
        net, x = model.nets["flair"], batch["flair"][:16]
        theirs = (
            LayerGradCam(lambda v: net(v).mean(dim=(2, 3)), net.last)
            .attribute(x, target=1, relu_attributions=True)[:, 0]
            .detach()
        )
        mine, _ = _tumour_maps(folded["flair"], x, "gradcam")
        difference = float((theirs - mine).abs().max() / theirs.abs().max().clamp_min(1e-12))
        print(f"{'4. max |Captum - ours| / max |Captum|, Grad-CAM':52s} {difference:8.1e}")

        seg_path, seg_what = second_stage_for(args.second_stage, tmp)
        print(f"second stage: {seg_what}")
        seg, _ = load_segnet(seg_path, device=args.device)
        whole = timed(
            lambda: run_to_end(segment_steps(seg, images, device=args.device)), args.repeats
        )
        show("5. second stage, whole volume, core generator", whole)
        command, peaks = cam_command(case_dir, seg_path, tmp / "out_seg", args.device)
        show("5. second stage, `equicam cam` (load, run, write)", timed(command, args.repeats))
        print(f"{'5. peak memory of `equicam cam`, second stage':52s} {max(peaks):8.0f} MB")


if __name__ == "__main__":
    main()
