"""Step time of each attention loss relative to plain training (same model, batch and device).

    python bench/train_step.py --device cpu --model smallcnn
    python bench/train_step.py --device cuda --model resnet18 --batch-size 128

Prints a markdown table: milliseconds per optimizer step (median of --steps after --warmup) and
the ratio to plain cross-entropy training.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from crowdpatch.train.losses import Batch, build_objective
from crowdpatch.train.models import create_model

LOSSES = ("none", "cam", "bgswap", "bgswap+cam", "gradcam", "rrr")


def step_times(loss: str, args: argparse.Namespace) -> list[float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.model, 2, args.image_size).to(device)
    objective = build_objective(loss, 1.0, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    size = args.image_size
    images = torch.randn(args.batch_size, 3, size, size, device=device)
    labels = torch.randint(0, 2, (args.batch_size,), device=device)
    masks = (torch.rand(args.batch_size, 1, size, size, device=device) > 0.7).float()
    has_mask = torch.ones(args.batch_size, dtype=torch.bool, device=device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            total, _, _ = objective.loss(model, Batch(images, labels, masks, has_mask))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="smallcnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {name}; model {args.model}; batch {args.batch_size}; {args.image_size} px; torch {torch.__version__}"
    )
    print("| loss | ms / step (median) | x plain |")
    print("|---|---|---|")
    base = None
    for loss in LOSSES:
        median = statistics.median(step_times(loss, args))
        base = base or median
        print(f"| {loss} | {median:.1f} | {median / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
