"""Fine-tune a second stage on the masks a radiologist corrected and saved from the plugin.

    python -m training.finetune_segnet --cases DIR --segnet CKPT --out NEW.safetensors
        [--steps N] [--batch-size B] [--lr LR] [--seed S] [--device D]

Every case under ``DIR`` with a saved mask (its newest ``<case id>_mask*.nii.gz``, found as
the case navigator finds them) is learnt as a full label; the threshold and input sizes are
chosen again on those cases (:func:`~equicam.core.segnet_fit.fine_tune`). Writes
``NEW.safetensors``, a new file: never over an existing one, never inside the installed
package. The plugin's
*Learn from corrections* button runs the same code.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None) -> dict:
    """Command line; returns :func:`~equicam.core.segnet_fit.fine_tune`'s summary."""
    from equicam.core.device import resolve_device
    from equicam.core.errors import EquicamError
    from equicam.core.evaluation import bias_correction_of
    from equicam.core.inference import run_to_end
    from equicam.core.segnet import load_segnet
    from equicam.core.segnet_fit import check_new_checkpoint, fine_tune
    from equicam.plugin.cases import corrected_cases

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", required=True, type=Path, help="folder of corrected cases")
    parser.add_argument("--segnet", required=True, type=Path, help="second stage to start from")
    parser.add_argument("--out", required=True, type=Path, help="new .safetensors file")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:
        check_new_checkpoint(args.out)  # before the slow part
        device = resolve_device(args.device)
        segnet, meta = load_segnet(args.segnet)
        cases, sources = corrected_cases(args.cases, segnet.modalities, bias_correction_of(meta))
        summary = run_to_end(
            fine_tune(
                args.segnet,
                cases,
                args.out,
                steps=args.steps,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                device=device,
                sources=sources,
            )
        )
    except EquicamError as error:  # names the file and the problem
        parser.error(str(error))
    print(
        f"wrote {summary['path']}: {len(cases)} corrected cases, loss "
        f"{summary['loss_before']:.4f} -> {summary['loss_after']:.4f}, input sizes "
        f"{list(summary['input_sizes'])}, threshold {summary['threshold']} "
        f"(Dice {summary['dice']})"
    )
    return summary


if __name__ == "__main__":
    main()
