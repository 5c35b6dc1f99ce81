"""How much does the method cost over plain training? Step throughput and data-loading share.

    .venv/bin/python -m bench.train_speed [--config training/configs/cpu_full.toml]
        [--cache data/synth80_cache] [--steps 10] [--device cpu]

Prints slices per second of a training step of the configured method (forward of x and Ax,
every loss term, backward, one optimizer step per network) against the bare forward +
backward of the same networks on the same batch (x and Ax through every network,
cross-entropy only), the overhead in percent, and the share of time the data loader takes.
Both run as training runs them: channels-last, under bf16 autocast when the config asks for
``amp`` and the device computes bf16 natively.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from equicam.core.device import supports_bf16
from equicam.core.losses import LossWeights
from equicam.core.model import ModelConfig, MultiModalCAM
from equicam.core.preprocess import to_input
from equicam.core.transforms import apply_transform, sample_transform
from training.data import SliceCache
from training.train import PairForward, load_config, training_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="training/configs/cpu_full.toml")
    parser.add_argument("--cache", default=None, help="default: the config's data.cache")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    config = load_config(args.config)
    cfg = config["model"]
    model_cfg = ModelConfig(tuple(cfg["modalities"]), tuple(cfg["widths"]), int(cfg["input_size"]))
    data = SliceCache(args.cache or config["data"]["cache"], "train", model_cfg.modalities)
    batch_size = int(config["train"]["batch_size"])
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)
    amp = bool(config["train"]["amp"]) and supports_bf16(args.device)
    print(
        f"machine: {platform.node()}, {platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, device {args.device}; config {args.config}, "
        f"batch {batch_size}, {model_cfg.input_size} px, widths {list(model_cfg.widths)}, "
        f"{'bf16 autocast' if amp else 'fp32'}"
    )

    torch.manual_seed(0)
    model = MultiModalCAM(model_cfg).to(args.device, memory_format=torch.channels_last).train()
    pair = PairForward(model)
    optimizers = {
        m: torch.optim.AdamW(model.nets[m].parameters(), lr=1e-4) for m in model.modalities
    }
    weights = LossWeights(**config["loss"])
    generator = torch.Generator().manual_seed(0)

    batches, load_times = [], []
    iterator = iter(loader)
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        x, y = next(iterator)
        load_times.append(time.perf_counter() - start)
        x = to_input(x.to(args.device), model_cfg.input_size)
        batches.append((x.contiguous(memory_format=torch.channels_last), y.to(args.device)))
    transforms = [sample_transform(generator, model_cfg.input_size) for _ in batches]

    def method(i):
        training_step(pair, optimizers, *batches[i], transforms[i], weights, amp=amp)

    def bare(i):
        x, y = batches[i]
        ax = apply_transform(x, transforms[i])
        xs = {m: x[:, j : j + 1] for j, m in enumerate(model.modalities)}
        axs = {m: ax[:, j : j + 1] for j, m in enumerate(model.modalities)}
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            cams_x, cams_ax = pair(xs, axs)
            loss = sum(
                F.cross_entropy(c.mean(dim=(2, 3)), y)
                for cams in (cams_x, cams_ax)
                for c in cams.values()
            )
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers.values():
            opt.step()

    results = {}
    for name, step in (("method step", method), ("bare forward + backward", bare)):
        step(0)  # warm-up
        times = []
        for i in range(1, len(batches)):
            start = time.perf_counter()
            step(i)
            times.append(time.perf_counter() - start)
        results[name] = times
        rate = batch_size / statistics.median(times)
        print(
            f"{name:28s} {rate:7.1f} slices/s  (step median {statistics.median(times):.3f} s, "
            f"{min(times):.3f}-{max(times):.3f})"
        )
    overhead = (
        statistics.median(results["method step"])
        / statistics.median(results["bare forward + backward"])
        - 1
    )
    print(f"{'overhead of the method':28s} {overhead * 100:7.1f} %  (variant {config['variant']})")
    share = statistics.median(load_times[1:]) / (
        statistics.median(load_times[1:]) + statistics.median(results["method step"])
    )
    print(
        f"{'data loader share':28s} {share * 100:7.1f} %  "
        f"(median {statistics.median(load_times[1:]) * 1000:.1f} ms per batch)"
    )


if __name__ == "__main__":
    main()
