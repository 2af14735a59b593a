"""The strongest peer in shared/NOTES-measured.md, re-measured on this machine: a hand-written PyTorch
CPU loop (frozen weights, channels_last, one filter per batch, the classic recipe), the same work as
bench/throughput.py.

Not part of vizjax (torch is not a dependency): it runs in its own environment (bench/README.md says
how to make ``bench/.venv-torch``). ``throughput.py --peer torch`` runs it with the same weights,
start image, filters, size and steps right after vizjax and compares the final activations. By hand::

    .venv/bin/python -m bench.peer --export /tmp/vgg16.npz                  # vizjax's venv
    bench/.venv-torch/bin/python bench/peers/torch_loop.py --weights /tmp/vgg16.npz

Prints one JSON line: wall seconds (median of ``--repeats`` after a warm-up), effective GFLOP/s and
each filter's final activation (the objective after the last step, computed outside the timing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
#: torchvision's preprocessing, used when the .npz does not carry its own.
TORCH_PREPROCESSING = {"scale": 255.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def layer_table():
    rows, cin = [], 3
    for b, (n, cout) in enumerate(BLOCKS, start=1):
        for c in range(1, n + 1):
            rows.append((f"block{b}_conv{c}", cin, cout))
            cin = cout
        rows.append((f"block{b}_pool", cout, cout))
    return rows


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", help=".npz written by python -m bench.peer --export")
    p.add_argument(
        "--start", help=".npy (H, W, 3) float32 start image, RGB 0-255 (default: N(127, 10))"
    )
    p.add_argument("--layer", default="block3_conv3")
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--size", type=int, default=128, help="without --start: the noise's side")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import torch
    import torch.nn.functional as F

    torch.set_grad_enabled(True)
    raw = np.load(args.weights)
    if args.start:
        x0 = torch.from_numpy(np.load(args.start).astype(np.float32)).permute(2, 0, 1)[None]
    else:
        gen = torch.Generator().manual_seed(0)
        x0 = 127 + 10 * torch.randn(1, 3, args.size, args.size, generator=gen)
    h, w = x0.shape[2], x0.shape[3]
    convs = []
    flops = 0.0
    for row in layer_table():
        name = row[0]
        if name.endswith("pool"):
            convs.append(("pool", None, None))
            h, w = h // 2, w // 2
        else:
            k = torch.from_numpy(np.ascontiguousarray(raw[f"{name}/kernel"].transpose(3, 2, 0, 1)))
            b = torch.from_numpy(raw[f"{name}/bias"])
            convs.append((name, k.contiguous(memory_format=torch.channels_last), b))
            flops += 2.0 * h * w * 9 * row[1] * row[2]
        if name == args.layer:
            break
    prep = dict(TORCH_PREPROCESSING)
    if "preprocessing/mean" in raw:
        prep = {k: raw[f"preprocessing/{k}"] for k in ("scale", "mean", "std")}
    bgr = bool(raw["preprocessing/bgr"]) if "preprocessing/bgr" in raw else False
    scale = float(prep["scale"])
    mean = torch.tensor(np.asarray(prep["mean"], np.float32)).view(1, 3, 1, 1)
    std = torch.tensor(np.asarray(prep["std"], np.float32)).view(1, 3, 1, 1)

    def objective(x, f):
        x = x.flip(1) if bgr else x
        y = ((x / scale - mean) / std).contiguous(memory_format=torch.channels_last)
        for name, k, b in convs:
            y = F.max_pool2d(y, 2) if name == "pool" else F.relu(F.conv2d(y, k, b, padding=1))
        return y[:, f].mean()

    def run():
        images = []
        for f in range(args.filters):
            x = x0.clone()
            for _ in range(args.steps):
                x.requires_grad_(True)
                value = objective(x, f)
                (g,) = torch.autograd.grad(value, x)
                with torch.no_grad():
                    x = x + g / (g.pow(2).mean().sqrt() + 1e-5)
            images.append(x)
        return images

    run()  # warm-up
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        images = run()
        times.append(time.perf_counter() - t)
    with torch.no_grad():  # the objective after the last step, as vizjax's objective[:, -1]
        final = [float(objective(x, f)) for f, x in enumerate(images)]
    wall = statistics.median(times)
    eff = 2 * flops * args.filters * args.steps / wall
    print(
        json.dumps(
            {
                "peer": f"pytorch {torch.__version__} hand-written loop, channels_last, "
                "one filter per batch",
                "layer": args.layer,
                "filters": args.filters,
                "size": int(x0.shape[2]),
                "steps": args.steps,
                "wall_s": wall,
                "walls_s": times,
                "eff_gflops": eff / 1e9,
                "threads": torch.get_num_threads(),
                "final": final,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
