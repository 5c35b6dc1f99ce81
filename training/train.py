"""Train the per-modality CAM networks with the method's losses.

    python -m training.train --config training/configs/cpu_full.toml [key=value ...]
    torchrun --nproc_per_node N -m training.train --config ... (DDP: nccl on GPU, gloo on CPU)

Overrides use dotted keys, e.g. ``train.epochs=2 loss.er=0 data.cache=/path/to/cache``.
``train.augment=P`` draws each intensity change of :mod:`equicam.core.augment` with
probability P per slice and sequence (0: none, the paper's setting), the bias field's
half-amplitude up to ``train.augment_bias`` (0.3: 0.7-1.3);
``loss.cmer_reduction=sum`` makes CMER a per-sample cosine distance (``mean``: as published).
With ``train.balanced=true``, ``train.epoch_slices=N`` draws N slices per epoch (0: as many as
the training split holds). ``train.min_tumour_mm2=A`` leaves out of training the tumour slices
with less than A mm2 of tumour (label noise at the network's resolution); validation keeps all.
``train.init=CKPT`` starts from the networks of a checkpoint (path or bundled name) of the same
architecture instead of random weights.
A run folder receives ``checkpoint.safetensors`` (each modality's network from its best
validation-accuracy epoch, with the threshold chosen on validation), ``metrics.jsonl``,
``curves.png`` and ``last_state.pt`` (to resume with ``train.resume=true``).
``train.select=dice`` keeps instead the epoch whose fused-mean validation Dice is highest
(the same epoch for every network; pixel labels of the validation split, as the thresholds).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import sys
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from equicam.core.atomic import write_file
from equicam.core.augment import IntensityAugment, augment_intensity
from equicam.core.checkpoint import load_checkpoint, save_checkpoint
from equicam.core.device import resolve_device, supports_bf16
from equicam.core.errors import EquicamError
from equicam.core.losses import TERMS, LossWeights, method_losses
from equicam.core.model import ModelConfig, MultiModalCAM
from equicam.core.preprocess import NORMALISATION, to_input
from equicam.core.transforms import apply_transform, sample_transform
from training.calibrate import calibrate, calibration_metadata
from training.data import BalancedSampler, SliceCache

DEFAULTS: dict = {
    "name": "run",
    "variant": "full",
    "data": {"cache": "data/cache"},
    "model": {
        "modalities": ["t1", "t1ce", "t2", "flair"],
        "widths": [64, 128, 256, 256],
        "input_size": 240,
        "input_norm": "case",
    },
    "loss": {
        "cls": 1.0,
        "kl": 0.5,
        "er": 1.0,
        "cmer": 1.0,
        "temperature": 10.0,
        "cmer_reduction": "mean",
    },
    "train": {
        "epochs": 30,
        "batch_size": 16,
        "lr": 5e-5,
        "weight_decay": 0.5,
        "seed": 0,
        "num_workers": 0,
        "device": "auto",
        "amp": True,
        "max_steps": 0,
        "log_every": 20,
        "run_dir": "",
        "resume": False,
        "save_rank_states": False,
        "threads": 0,
        "balanced": False,
        "schedule": "constant",
        "warmup_epochs": 0.0,
        "select": "accuracy",
        "augment": 0.0,
        "augment_bias": IntensityAugment.bias,
        "epoch_slices": 0,
        "min_tumour_mm2": 0.0,
        "init": "",
    },
}


def _merge(base: dict, update: dict, source: str | Path, where: str = "") -> dict:
    """``update`` over ``base``; a key or a type that ``base`` does not know is refused."""
    out = dict(base)
    for key, value in update.items():
        name = f"{where}{key}"
        if key not in base:
            raise EquicamError(source, f"unknown config key '{name}'")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise EquicamError(source, f"config key '{name}' must be a table")
            out[key] = _merge(base[key], value, source, f"{name}.")
        else:
            out[key] = _checked(value, base[key], name, source)
    return out


def _checked(value, default, name: str, source: str | Path):
    """``value`` if it has the type of ``default`` (an integer is a number too)."""
    kind = type(default)
    fits = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not fits:
        raise EquicamError(
            source,
            f"config key '{name}' must be {_KIND_NAMES[kind]}, got {value!r}",
        )
    return value


_KIND_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
}


def _read_toml(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise EquicamError(path, f"not a valid TOML config ({error})") from None
    except UnicodeDecodeError:
        raise EquicamError(path, "not a text file; give a TOML config") from None
    parent = data.pop("base", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise EquicamError(path, f"'base' must name a config file, got {parent!r}")
    merged = _read_toml(path.parent / parent)
    for key, value in data.items():
        if isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict:
    """``a.b=value`` -> ``{"a": {"b": value}}``; the value is read as TOML, else a string."""
    if "=" not in text:
        raise EquicamError(text, "not key=value (e.g. train.epochs=2)")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def load_config(path: str | Path, overrides=()) -> dict:
    """A config file (with its ``base`` chain) over :data:`DEFAULTS`, then the overrides.

    Raises
    ------
    EquicamError
        Naming the file (or the override) for invalid TOML, an unknown key or a value of the
        wrong type.
    """
    config = _merge(DEFAULTS, _read_toml(Path(path)), path)
    for text in overrides:
        config = _merge(config, parse_override(text), f"override {text}")
    return config


class PairForward(nn.Module):
    """One forward for x and Ax, so that DDP sees one forward per backward."""

    def __init__(self, model: MultiModalCAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: dict, ax: dict):
        return self.model(x), self.model(ax)


def training_step(pair, optimizers: dict, x, y, t, weights: LossWeights, *, amp: bool = False):
    """One step of the method for every modality at once.

    Parameters
    ----------
    pair
        :class:`PairForward` (or its DDP wrapper).
    optimizers
        Modality -> optimizer of that modality's network (the keys give the channel order).
    x
        ``(N, M, S, S)`` normalised slices, one channel per modality.
    y
        ``(N,)`` slice labels.
    t
        The transform A of this batch.
    weights
        Loss weights.
    amp
        bf16 autocast on the device of ``x`` (CUDA, or a CPU with native bf16) for the networks'
        bodies; their CAM heads and the losses run in float32.

    Returns
    -------
    (dict, dict)
        The loss terms per modality and the CAMs of x.
    """
    ax = apply_transform(x, t)
    xs = {m: x[:, i : i + 1] for i, m in enumerate(optimizers)}
    axs = {m: ax[:, i : i + 1] for i, m in enumerate(optimizers)}
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        cams_x, cams_ax = pair(xs, axs)
    losses = method_losses(cams_x, cams_ax, y, t, weights)
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    sum(terms["total"] for terms in losses.values()).backward()
    for opt in optimizers.values():
        opt.step()
    return losses, cams_x


def learning_rate(base: float, progress: float, epochs: int, schedule: str) -> float:
    """The learning rate after ``progress`` epochs (fractional) of ``epochs``.

    ``constant`` (the paper's) or ``cosine``: from ``base`` down to 0 at the last step.
    """
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * min(progress / epochs, 1.0)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; use constant or cosine")


def warmed_up(weights: LossWeights, progress: float, warmup_epochs: float) -> LossWeights:
    """``weights`` with kl, er and cmer scaled from 0 up to their value over the first
    ``warmup_epochs`` epochs (linearly in ``progress``); cls and the temperature unchanged."""
    if warmup_epochs <= 0 or progress >= warmup_epochs:
        return weights
    f = progress / warmup_epochs
    return replace(weights, kl=weights.kl * f, er=weights.er * f, cmer=weights.cmer * f)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank() if world > 1 else 0), world


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _accuracy(model: MultiModalCAM, data: SliceCache, device: str, size: int) -> dict:
    model.eval()
    correct = dict.fromkeys(model.modalities, 0)
    loader = DataLoader(data, batch_size=64)
    with torch.inference_mode():
        for x, y in loader:
            x = to_input(x.to(device), size)
            cams = model({m: x[:, i : i + 1] for i, m in enumerate(model.modalities)})
            for m, cam in cams.items():
                correct[m] += int((cam.mean(dim=(2, 3)).argmax(dim=1).cpu() == y).sum())
    return {m: c / max(1, len(data)) for m, c in correct.items()}


def _plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 3.5))
    epochs = [h["epoch"] for h in history]
    for m in history[0]["loss"]:
        left.plot(epochs, [h["loss"][m]["total"] for h in history], marker="o", label=m)
        middle.plot(epochs, [h["val_accuracy"][m] for h in history], marker="o", label=m)
    for name in history[0]["val_dice"]:
        right.plot(epochs, [h["val_dice"][name] for h in history], marker="o", label=name)
    left.set(xlabel="epoch", ylabel="training loss (total)", title="loss")
    middle.set(xlabel="epoch", ylabel="validation accuracy", title="slice classification")
    right.set(xlabel="epoch", ylabel="validation Dice (best threshold)", title="pseudo-masks")
    for ax in (left, middle, right):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_STATE_KEYS = (
    "epoch",
    "model",
    "optimizers",
    "best",
    "best_score",
    "best_epoch",
    "history",
    "model_config",
)


def _save_state(state: dict, handle) -> None:
    torch.save(state, handle)


def _initialise(model: MultiModalCAM, spec: str) -> None:
    """Start from the networks of checkpoint ``spec`` (a path or a bundled name).

    Raises EquicamError when its architecture is not this run's.
    """
    trained, _ = load_checkpoint(spec)
    if trained.config != model.config:
        raise EquicamError(
            spec,
            f"cannot start train.init= from it: its networks are {trained.config}, "
            f"not {model.config}",
        )
    model.load_state_dict(trained.state_dict())


def _load_state(path: Path, model_config: ModelConfig, device: str) -> dict:
    """Read ``last_state.pt`` for a resume, refusing one that cannot continue this run.

    Raises
    ------
    EquicamError
        Naming the file, when it was written by an older version of this module or for other
        networks (modalities, widths, input size or normalisation) than ``model_config``.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # noqa: BLE001 - a truncated file, a pickle with code, ...
        raise EquicamError(
            path,
            "cannot resume, not a training state this module wrote "
            f"({type(error).__name__}); start afresh with train.resume=false",
        ) from None
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise EquicamError(
            path,
            "cannot resume, the file was written by an older version of the training "
            f"module (no {', '.join(missing)}); start afresh with train.resume=false",
        )
    saved = ModelConfig.from_dict(json.loads(state["model_config"]))
    if saved != model_config:
        raise EquicamError(
            path,
            "cannot resume, it holds networks for model config {saved}, "
            f"not {model_config}; start afresh with train.resume=false or another train.run_dir",
        )
    return state


def train(config: dict) -> Path:
    """Run one training; returns the checkpoint path (rank 0) or the run folder."""
    cfg = config["train"]
    rank, world = _distributed()
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    device = resolve_device(cfg["device"])
    if world > 1 and device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    run_dir = Path(cfg["run_dir"] or f"runs/{config['name']}")
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    _seed_everything(int(cfg["seed"]))

    model_cfg = ModelConfig(
        modalities=tuple(config["model"]["modalities"]),
        widths=tuple(config["model"]["widths"]),
        input_size=int(config["model"]["input_size"]),
        input_norm=str(config["model"]["input_norm"]),
    )
    weights = LossWeights(**config["loss"])
    train_data = SliceCache(config["data"]["cache"], "train", model_cfg.modalities)
    val_data = SliceCache(config["data"]["cache"], "val", model_cfg.modalities)
    if cfg["min_tumour_mm2"]:
        dropped = train_data.drop_small_tumours(float(cfg["min_tumour_mm2"]))
        if rank == 0:
            print(
                f"left out {dropped} training slices under {cfg['min_tumour_mm2']} mm2 of tumour"
            )
    model = MultiModalCAM(model_cfg)
    if cfg["init"]:
        _initialise(model, cfg["init"])
    # channels-last lets oneDNN (CPU) and cuDNN pick their fast convolution kernels.
    model = model.to(device, memory_format=torch.channels_last)
    use_cuda = device.startswith("cuda")
    amp = bool(cfg["amp"]) and supports_bf16(device)
    pair = PairForward(model)
    if world > 1:
        pair = nn.parallel.DistributedDataParallel(
            pair, device_ids=[int(device.split(":")[1])] if use_cuda else None
        )
    optimizers = {
        m: torch.optim.AdamW(
            model.nets[m].parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"]
        )
        for m in model.modalities
    }
    if cfg["select"] not in ("accuracy", "dice"):
        raise ValueError(f"train.select is {cfg['select']!r}; use accuracy or dice")
    history, best, start = [], {}, 0
    best_score, best_epoch = dict.fromkeys(model.modalities, -1.0), {}
    state_path = run_dir / "last_state.pt"
    if cfg["resume"] and state_path.is_file():
        state = _load_state(state_path, model_cfg, device)
        model.load_state_dict(state["model"])
        for m, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][m])
        best, best_score, start = state["best"], state["best_score"], state["epoch"]
        best_epoch = state["best_epoch"]
        history = json.loads(state["history"])
        if rank == 0:
            print(f"resumed after epoch {start}")
            # the log holds the state's epochs: a kill may fall between writing one and the other
            rows = "".join(json.dumps(record) + "\n" for record in history)
            write_file(run_dir / "metrics.jsonl", rows, replace=True)
    elif rank == 0:  # a fresh run replaces an earlier run's log instead of appending to it
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)

    generator = torch.Generator().manual_seed(int(cfg["seed"]))
    if start and "generator" in state:  # the transforms draw on as if never interrupted
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
    augment = IntensityAugment(p=float(cfg["augment"]), bias=float(cfg["augment_bias"]))
    for epoch in range(start, int(cfg["epochs"])):
        if cfg["balanced"]:
            sampler = BalancedSampler(
                train_data.labels,
                seed=int(cfg["seed"]),
                rank=rank,
                world=world,
                draws=int(cfg["epoch_slices"]),
            )
        elif world > 1:
            sampler = DistributedSampler(train_data, world, rank, seed=int(cfg["seed"]))
        else:
            sampler = None
        if sampler:
            sampler.set_epoch(epoch)
        shuffle = torch.Generator().manual_seed(int(cfg["seed"]) * 1000 + epoch)
        loader = DataLoader(
            train_data,
            batch_size=int(cfg["batch_size"]),
            sampler=sampler,
            shuffle=sampler is None,
            generator=None if sampler else shuffle,
            num_workers=int(cfg["num_workers"]),
            drop_last=True,
        )
        model.train()
        sums = {m: dict.fromkeys((*TERMS, "total"), 0.0) for m in model.modalities}
        correct = dict.fromkeys(model.modalities, 0)
        seen, tic = 0, time.perf_counter()
        for steps, (x, y) in enumerate(loader, 1):
            x = to_input(x.to(device), model_cfg.input_size)
            if cfg["augment"]:
                x = augment_intensity(x, generator, augment)
            x, y = x.contiguous(memory_format=torch.channels_last), y.to(device)
            t = sample_transform(generator, model_cfg.input_size)
            progress = epoch + (steps - 1) / len(loader)
            lr = learning_rate(float(cfg["lr"]), progress, int(cfg["epochs"]), cfg["schedule"])
            for opt in optimizers.values():
                for group in opt.param_groups:
                    group["lr"] = lr
            step_weights = warmed_up(weights, progress, float(cfg["warmup_epochs"]))
            losses, cams_x = training_step(pair, optimizers, x, y, t, step_weights, amp=amp)
            for m, terms in losses.items():
                for k, v in terms.items():
                    sums[m][k] += float(v.detach()) * len(y)
                correct[m] += int((cams_x[m].mean(dim=(2, 3)).argmax(dim=1) == y).sum())
            seen += len(y)
            if rank == 0 and steps % int(cfg["log_every"]) == 0:
                rate = seen * world / (time.perf_counter() - tic)
                mean_total = np.mean([sums[m]["total"] / seen for m in sums])
                print(
                    f"epoch {epoch + 1} step {steps}/{len(loader)} loss {mean_total:.4f} "
                    f"{rate:.1f} slices/s",
                    flush=True,
                )
            if cfg["max_steps"] and steps >= int(cfg["max_steps"]):
                break
        val_acc = _accuracy(model, val_data, device, model_cfg.input_size)
        chosen = calibrate(model, val_data, device)["maps"]
        val_dice = {k: v["dice"] for k, v in chosen.items()}
        for m in model.modalities:
            score = val_dice["fused_mean"] if cfg["select"] == "dice" else val_acc[m]
            if score >= best_score[m]:
                best_score[m] = score
                best_epoch[m] = epoch + 1
                best[m] = {k: v.detach().clone() for k, v in model.nets[m].state_dict().items()}
        record = {
            "epoch": epoch + 1,
            "seconds": round(time.perf_counter() - tic, 1),
            "slices": seen * world,
            "loss": {m: {k: v / max(1, seen) for k, v in s.items()} for m, s in sums.items()},
            "train_accuracy": {m: c / max(1, seen) for m, c in correct.items()},
            "val_accuracy": val_acc,
            "val_dice": val_dice,
        }
        history.append(record)
        if rank == 0:
            print(
                f"epoch {epoch + 1}: val accuracy "
                + " ".join(f"{m} {a:.3f}" for m, a in val_acc.items()),
                flush=True,
            )
            with open(run_dir / "metrics.jsonl", "a") as log:
                log.write(json.dumps(record) + "\n")
            _plot(history, run_dir / "curves.png")
            state = {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizers": {m: o.state_dict() for m, o in optimizers.items()},
                "best": best,
                "best_score": best_score,
                "best_epoch": best_epoch,
                "history": json.dumps(history),
                "model_config": json.dumps(model_cfg.to_dict()),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
            }
            write_file(state_path, functools.partial(_save_state, state), replace=True)

    if cfg["save_rank_states"]:
        from safetensors.torch import save_file

        run_dir.mkdir(parents=True, exist_ok=True)
        params = {k: v.detach().cpu().contiguous() for k, v in model.named_parameters()}
        save_file(params, run_dir / f"rank{rank}_parameters.safetensors")
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        torch.distributed.destroy_process_group()
        return run_dir

    for m, state in best.items():
        model.nets[m].load_state_dict(state)
    model.eval()
    calibration = calibrate(model, val_data, device, refine=True)
    chosen, model.fusion_weights = calibration["maps"], calibration["fusion_weights"]
    default = chosen.get("fused_mean", {"threshold": 0.5})["threshold"]
    meta = {
        "variant": config["variant"],
        "config": config,
        "preprocessing": NORMALISATION,
        "bias_correction": train_data.bias_correction,
        "threshold": default,
        **calibration_metadata(calibration),
        "selected_epoch": best_epoch,
        "val_accuracy": {m: history[e - 1]["val_accuracy"][m] for m, e in best_epoch.items()},
        "data": {
            "cache": str(config["data"]["cache"]),
            "source": train_data.meta.get("source"),
            "train_cases": len(train_data.case_ids),
            "val_cases": len(val_data.case_ids),
            "train_slices": len(train_data),
        },
        "epochs": len(history),
    }
    path = save_checkpoint(run_dir / "checkpoint.safetensors", model.cpu(), meta)
    print(
        f"wrote {path} (threshold {default}, val Dice "
        + " ".join(f"{k} {v['dice']:.3f}" for k, v in chosen.items())
        + ")",
        flush=True,
    )
    if world > 1:
        torch.distributed.destroy_process_group()
    return path


def main(argv=None) -> None:
    """Command line: ``--config FILE [key=value ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a TOML file in training/configs/")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    train(load_config(args.config, args.overrides))


if __name__ == "__main__":
    from equicam.cli import run_module

    sys.exit(run_module("training.train", main))
