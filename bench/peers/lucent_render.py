"""Lucent's own render of VGG16 filters: the quality peer of ``python -m bench.fidelity --peer lucent``.

Not part of vizjax (torch is not a dependency): it runs in Lucent's environment, made by
``bash bench/peers/make_lucent_venv.sh`` (``bench/.venv-lucent``). It renders the given filters of
one layer with torch-lucent 0.1.8's ``render.render_vis`` and its defaults -- FFT + decorrelated
sigmoid image (``param.image(size, batch=n)``), ``transform.standard_transforms``, Adam(0.05),
ImageNet ``normalize()`` -- with ``fixed_image_size=size`` (without it Lucent upsamples every view
of a 128 px image to 224 px: 3.2x slower), on torchvision's VGG16 ``features`` carrying vizjax's
weights (``python -m bench.peer --export FILE.npz``), cut after the target layer's ReLU, frozen. The
objective is ``sum_i channel(layer, f_i, batch=i)``: every filter in one batch, as Lucent users do.

Writes an .npz: ``images`` (n, H, W, 3) float32 in [0, 1] (the param's image after the last step,
what ``render_vis`` returns), ``filters``, ``seconds`` (wall time of ``render_vis``), versions.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np

#: (keras name, index in torchvision's vgg16().features) of the 13 convolutions.
CONVS = (
    ("block1_conv1", 0),
    ("block1_conv2", 2),
    ("block2_conv1", 5),
    ("block2_conv2", 7),
    ("block3_conv1", 10),
    ("block3_conv2", 12),
    ("block3_conv3", 14),
    ("block4_conv1", 17),
    ("block4_conv2", 19),
    ("block4_conv3", 21),
    ("block5_conv1", 24),
    ("block5_conv2", 26),
    ("block5_conv3", 28),
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help=".npz from python -m bench.peer --export")
    p.add_argument("--layer", required=True)
    p.add_argument("--filters", required=True, help="comma-separated filter indices")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="torch's and numpy's seeds")
    p.add_argument("--batch", type=int, default=0, help="filters per render_vis call (0: all)")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import torch
    import torchvision
    from lucent.optvis import objectives, param, render

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # Lucent's transforms draw from numpy's global generator, which torch does not seed.
    np.random.seed(args.seed)  # noqa: NPY002
    index = dict(CONVS)[args.layer]
    features = torchvision.models.vgg16().features[: index + 2]  # through the layer's ReLU
    w = np.load(args.weights)
    for name, i in CONVS:
        if i > index:
            break
        kernel = torch.from_numpy(w[f"{name}/kernel"]).permute(3, 2, 0, 1)  # HWIO -> OIHW
        features[i].weight.data.copy_(kernel)
        features[i].bias.data.copy_(torch.from_numpy(w[f"{name}/bias"]))

    class Net(torch.nn.Module):  # lucent names hooks by attribute path: "features_<i>"
        def __init__(self) -> None:
            super().__init__()
            self.features = features

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x)

    model = Net().eval()
    for q in model.parameters():
        q.requires_grad_(False)
    filters = [int(f) for f in args.filters.split(",")]
    hook = f"features_{index + 1}"
    batch = args.batch or len(filters)
    images, seconds = [], 0.0
    for at in range(0, len(filters), batch):
        part = filters[at : at + batch]
        objective = sum(
            (objectives.channel(hook, f, batch=i) for i, f in enumerate(part[1:], start=1)),
            objectives.channel(hook, part[0], batch=0),
        )
        t = time.perf_counter()
        rendered = render.render_vis(
            model,
            objective,
            param_f=functools.partial(param.image, args.size, batch=len(part)),
            thresholds=(args.steps,),
            fixed_image_size=args.size,
            show_image=False,
            progress=False,
        )
        seconds += time.perf_counter() - t
        images.append(np.asarray(rendered[-1], np.float32))
        for m in model.modules():  # render_vis leaves its forward hooks behind
            m._forward_hooks.clear()
    np.savez(
        args.out,
        images=np.concatenate(images),
        filters=np.asarray(filters),
        seconds=seconds,
        torch=torch.__version__,
        torchvision=torchvision.__version__,
    )
    print(f"lucent: {len(filters)} filters of {args.layer}, {args.steps} steps, {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
