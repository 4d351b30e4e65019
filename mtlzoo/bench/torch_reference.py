"""A PyTorch reference of a hard-sharing MobileNetV3-Small recipe, for `mtlzoo bench step compare=torch`.

`TorchReference.from_recipe(recipe)` builds, in plain PyTorch, the model that
`recipe.build()` builds in Keras (e.g. `driving_perception_lite`): the
keras.applications MobileNetV3-Small trunk up to its four taps (strides 4, 8,
16, 32; same blocks, kernels, TF-"same" paddings, hard-swish/hard-sigmoid,
squeeze-excite, BatchNorm epsilon 1e-3 and the recipe's momentum), the FPN neck
and the segmentation, depth, detection and multi-label heads, with the same
masked losses (`mtlzoo.bench.torch_reference_losses`), the recipe's loss
weights and Adam. It trains channels-first; `channels_last=True` uses
PyTorch's channels-last memory format instead.

Train steps built as mtlzoo's candidates: `equal`, `t_backward` (T backward
passes, summed), `pcgrad` and `mgda_ub`. `copy_keras_weights` loads a Keras
model's weights, so both frameworks can be compared number for number.

Example:
```python
from mtlzoo.bench.torch_reference import TorchReference
ref = TorchReference.from_recipe(mtlzoo.get_recipe("driving_perception_lite"))
x, y = ref.batch(keras_x, keras_y)
ref.train_step(x, y, method="pcgrad")
```
"""

from __future__ import annotations

import statistics
import time

from mtlzoo.bench.torch_reference_losses import copy_keras_weights, mgda_ub_backward, pcgrad_backward, task_loss

import torch  # noqa: E402  (torch_reference_losses raised the install hint if it is missing)
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

__all__ = ["COUNTERPARTS", "METHODS", "TorchReference", "TorchMultiTaskModel", "copy_keras_weights",
           "counterparts", "part_parameter_counts"]
METHODS = ("equal", "t_backward", "pcgrad", "mgda_ub")
#: mtlzoo `bench step` candidate -> its PyTorch counterpart.
COUNTERPARTS = {"equal": "equal", "t_backward": "t_backward", "aggregator:pcgrad": "pcgrad",
                "aggregator:mgda_ub": "mgda_ub"}


def _depth(v, divisor=8):
    """keras.applications' channel rounding (to a multiple of 8, never 10% below `v`)."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


class SqueezeExcite(nn.Module):
    def __init__(self, channels, squeezed):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        s = F.relu(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * F.hardsigmoid(self.expand(s))


class InvertedResidual(nn.Module):
    """keras.applications' `_inverted_res_block`; stride 2 pads like TF "same" (less before than after)."""

    def __init__(self, in_ch, expansion, out_ch, kernel, stride, se, hswish, block_id, bn):
        super().__init__()
        hidden = _depth(in_ch * expansion)
        self.prefix = f"expanded_conv_{block_id}_" if block_id else "expanded_conv_"
        self.expand = nn.Conv2d(in_ch, hidden, 1, bias=False) if block_id else None
        self.expand_bn = bn(hidden) if block_id else None
        self.pad = nn.ZeroPad2d((kernel // 2 - 1, kernel // 2) * 2) if stride == 2 else None
        self.depthwise = nn.Conv2d(hidden, hidden, kernel, stride, padding=0 if stride == 2 else kernel // 2,
                                   groups=hidden, bias=False)
        self.depthwise_bn = bn(hidden)
        self.se = SqueezeExcite(hidden, _depth(hidden * 0.25)) if se else None
        self.project = nn.Conv2d(hidden, out_ch, 1, bias=False)
        self.project_bn = bn(out_ch)
        self.act = nn.Hardswish() if hswish else nn.ReLU()
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x):
        y = x if self.expand is None else self.act(self.expand_bn(self.expand(x)))
        if self.pad is not None:
            y = self.pad(y)
        y = self.act(self.depthwise_bn(self.depthwise(y)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project(y))
        return x + y if self.residual else y

    def keras_layers(self):
        p = self.prefix
        out = {f"{p}depthwise": self.depthwise, f"{p}depthwise_bn": self.depthwise_bn, f"{p}project": self.project,
               f"{p}project_bn": self.project_bn}
        if self.expand is not None:
            out.update({f"{p}expand": self.expand, f"{p}expand_bn": self.expand_bn})
        if self.se is not None:
            out.update({f"{p}squeeze_excite_conv": self.se.reduce, f"{p}squeeze_excite_conv_1": self.se.expand})
        return out


# (expansion, out channels, kernel, stride, squeeze-excite, hard-swish) of MobileNetV3-Small's blocks 0..10.
_SMALL_BLOCKS = [(1, 16, 3, 2, True, False), (72 / 16, 24, 3, 2, False, False), (88 / 24, 24, 3, 1, False, False),
                 (4, 40, 5, 2, True, True), (6, 40, 5, 1, True, True), (6, 40, 5, 1, True, True),
                 (3, 48, 5, 1, True, True), (3, 48, 5, 1, True, True), (6, 96, 5, 2, True, True),
                 (6, 96, 5, 1, True, True), (6, 96, 5, 1, True, True)]
_SMALL_TAPS = (0, 2, 7, 10)  # expanded_conv_project_bn, expanded_conv_2_add, _7_add, _10_add


class MobileNetV3SmallTrunk(nn.Module):
    """MobileNetV3-Small (minimalistic=False) up to block 10, returning the four taps; input RGB in [0, 255]."""

    def __init__(self, bn):
        super().__init__()
        self.stem_pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.stem = nn.Conv2d(3, 16, 3, 2, bias=False)
        self.stem_bn = bn(16)
        blocks, ch = [], 16
        for i, (e, out, k, s, se, hs) in enumerate(_SMALL_BLOCKS):
            blocks.append(InvertedResidual(ch, e, out, k, s, se, hs, i, bn))
            ch = out
        self.blocks = nn.ModuleList(blocks)
        self.channels = [_SMALL_BLOCKS[i][1] for i in _SMALL_TAPS]

    def forward(self, x):
        x = F.hardswish(self.stem_bn(self.stem(self.stem_pad(x / 127.5 - 1.0))))
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in _SMALL_TAPS:
                taps.append(x)
        return taps

    def keras_layers(self):
        out = {"conv": self.stem, "conv_bn": self.stem_bn}
        for block in self.blocks:
            out.update(block.keras_layers())
        return out


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_ch, out_ch, bn):
        super().__init__(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), bn(out_ch), nn.ReLU())


class FPNNeck(nn.Module):
    """`mtlzoo.neck.build_neck`: 1x1 laterals, nearest x2 top-down sums, a 3x3 block on the finest level."""

    def __init__(self, in_channels, channels, bn):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = ConvBNReLU(channels, channels, bn)

    def forward(self, features):
        outs = [lateral(f) for lateral, f in zip(self.laterals, features)]
        for i in range(len(outs) - 2, -1, -1):
            outs[i] = outs[i] + F.interpolate(outs[i + 1], scale_factor=2, mode="nearest")
        outs[0] = self.smooth(outs[0])
        return outs

    def keras_layers(self):
        out = {f"neck_lateral{i}": m for i, m in enumerate(self.laterals)}
        return {**out, "neck_smooth_conv": self.smooth[0], "neck_smooth_bn": self.smooth[1]}


class DenseHead(nn.Module):
    """Segmentation / depth head: conv blocks on P2, 1x1 logits, bilinear x4 (depth: max_depth * sigmoid)."""

    def __init__(self, name, channels, depth, out_ch, in_ch, bn, max_depth=None):
        super().__init__()
        self.name, self.max_depth = name, max_depth
        self.blocks = nn.Sequential(*[ConvBNReLU(in_ch if i == 0 else channels, channels, bn) for i in range(depth)])
        self.logits = nn.Conv2d(channels if depth else in_ch, out_ch, 1)

    def forward(self, features):
        x = F.interpolate(self.logits(self.blocks(features[0])), scale_factor=4, mode="bilinear", align_corners=False)
        return x if self.max_depth is None else self.max_depth * torch.sigmoid(x)

    def keras_layers(self):
        out = {f"{self.name}__logits": self.logits}
        for i, block in enumerate(self.blocks):
            out.update({f"{self.name}__block{i}_conv": block[0], f"{self.name}__block{i}_bn": block[1]})
        return out


class DetectionHead(nn.Module):
    """CenterNet head on P2: one conv block, sigmoid heatmaps (prior-initialised bias), size, sigmoid offset."""

    def __init__(self, name, num_classes, channels, prior, in_ch, bn):
        import math

        super().__init__()
        self.name = name
        self.block = ConvBNReLU(in_ch, channels, bn)
        self.heatmap = nn.Conv2d(channels, num_classes, 1)
        nn.init.constant_(self.heatmap.bias, -math.log((1 - prior) / prior))
        self.size = nn.Conv2d(channels, 2, 1)
        self.offset = nn.Conv2d(channels, 2, 1)

    def forward(self, features):
        x = self.block(features[0])
        return torch.cat([torch.sigmoid(self.heatmap(x)), self.size(x), torch.sigmoid(self.offset(x))], dim=1)

    def keras_layers(self):
        n = self.name
        return {f"{n}__block0_conv": self.block[0], f"{n}__block0_bn": self.block[1], f"{n}__heatmap": self.heatmap,
                f"{n}__size": self.size, f"{n}__offset": self.offset}


class PooledHead(nn.Module):
    """Multi-label / classification head: global average pool of P5, optional hidden ReLU layer, logits."""

    def __init__(self, name, units, hidden, dropout, in_ch):
        super().__init__()
        self.name = name
        self.hidden = nn.Linear(in_ch, hidden) if hidden else None
        self.dropout = nn.Dropout(dropout) if dropout else None
        self.out = nn.Linear(hidden or in_ch, units)

    def forward(self, features):
        x = features[-1].mean((2, 3))
        if self.hidden is not None:
            x = F.relu(self.hidden(x))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.out(x)

    def keras_layers(self):
        return {self.name: self.out, **({f"{self.name}__hidden": self.hidden} if self.hidden is not None else {})}


class TorchMultiTaskModel(nn.Module):
    """Trunk (MobileNetV3-Small + FPN neck) shared by one head per task; `forward` returns {task: output}."""

    def __init__(self, heads, kinds, neck_channels=64, bn_momentum=0.99):
        super().__init__()

        def bn(c):  # Keras: epsilon 1e-3, moving = m * moving + (1 - m) * batch  ->  PyTorch momentum 1 - m
            return nn.BatchNorm2d(c, eps=1e-3, momentum=1.0 - bn_momentum)

        self.kinds = dict(kinds)
        self.backbone = MobileNetV3SmallTrunk(bn)
        self.neck = FPNNeck(self.backbone.channels, neck_channels, bn)
        modules = {}
        for t, head in heads.items():
            kind = kinds[t]
            if kind in ("segmentation", "depth"):
                out = head.num_classes if kind == "segmentation" else 1
                modules[t] = DenseHead(t, head.channels, head.depth, out, neck_channels, bn,
                                       head.max_depth if kind == "depth" else None)
            elif kind == "detection":
                modules[t] = DetectionHead(t, head.num_classes, head.channels, head.prior, neck_channels, bn)
            elif kind in ("multilabel", "classification"):
                modules[t] = PooledHead(t, head.num_classes, head.hidden, head.dropout, neck_channels)
            else:
                raise ValueError(f"The PyTorch reference has no {kind!r} head (task {t!r}); it covers segmentation, "
                                 "depth, detection, multilabel and classification.")
        self.heads = nn.ModuleDict(modules)

    def trunk(self, x):
        """The neck's pyramid [P2, P3, P4, P5]."""
        return self.neck(self.backbone(x))

    def head_outputs(self, pyramid):
        return {t: head(pyramid) for t, head in self.heads.items()}

    def forward(self, x):
        return self.head_outputs(self.trunk(x))

    def keras_layers(self):
        """Keras layer name -> the PyTorch module holding the same weights."""
        out = {**self.backbone.keras_layers(), **self.neck.keras_layers()}
        for head in self.heads.values():
            out.update(head.keras_layers())
        return out


def _to_torch_label(kind, y):
    y = torch.as_tensor(y)
    if kind in ("segmentation", "classification"):
        return y.long()
    if y.dim() == 4:  # NHWC maps (depth, detection) -> NCHW
        return y.float().permute(0, 3, 1, 2).contiguous()
    return y.float()


class TorchReference:
    """The PyTorch model of a recipe with its losses, loss weights, Adam and train steps.

    Args:
        model: `TorchMultiTaskModel`.
        heads: dict task -> the recipe's `mtlzoo.heads.Head` (hyperparameters of the losses).
        loss_weights: dict task -> float.
        learning_rate: float. Adam's learning rate. Defaults to 1e-3.
        threads: int or None. `torch.set_num_threads` (None leaves it). Defaults to None.
        channels_last: bool. Train in the channels-last memory format. Defaults to False.
        seed: int. Seed of PCGrad's task orders. Defaults to 0.
        adam: dict. Other Adam settings (Keras names: beta_1, beta_2, epsilon).

    Example:
    ```python
    ref = TorchReference.from_recipe(mtlzoo.get_recipe("driving_perception_lite"), threads=2)
    ```
    """

    def __init__(self, model, heads, loss_weights, learning_rate=1e-3, threads=None, channels_last=False, seed=0,
                 adam=None):
        if threads:
            torch.set_num_threads(int(threads))
        self.model, self.heads, self.loss_weights = model, dict(heads), dict(loss_weights)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        adam = dict(adam or {})
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=float(learning_rate),
                                          betas=(float(adam.get("beta_1", 0.9)), float(adam.get("beta_2", 0.999))),
                                          eps=float(adam.get("epsilon", 1e-7)))
        self.shared = list(self.model.backbone.parameters()) + list(self.model.neck.parameters())
        self.own = {t: list(h.parameters()) for t, h in self.model.heads.items()}
        self.generator = torch.Generator().manual_seed(int(seed))

    @classmethod
    def from_recipe(cls, recipe, threads=None, channels_last=False, seed=0):
        """Builds the reference of an mtlzoo `Recipe` (hard sharing, mobilenetv3_small backbone)."""
        from mtlzoo.registry import HEADS

        if recipe.backbone != "mobilenetv3_small" or recipe.sharing != "hard":
            raise ValueError(f"The PyTorch reference covers sharing=hard on backbone=mobilenetv3_small; recipe "
                             f"{recipe.name!r} has sharing={recipe.sharing!r}, backbone={recipe.backbone!r}.")
        opt = dict(recipe.optimizer)
        if str(opt.pop("name", "adam")).lower() != "adam" or opt.get("schedule") is not None:
            raise ValueError(f"The PyTorch reference trains with constant-rate Adam; recipe {recipe.name!r} "
                             f"has optimizer {recipe.optimizer!r}.")
        torch.manual_seed(int(seed))
        heads = {t: HEADS.get(spec.kind)(**spec.head_args) for t, spec in recipe.tasks.items()}
        kinds = {t: spec.kind for t, spec in recipe.tasks.items()}
        momentum = 0.99 if recipe.bn_momentum is None else float(recipe.bn_momentum)
        model = TorchMultiTaskModel(heads, kinds, int(recipe.neck_channels), momentum)
        weights = {t: float(spec.loss_weight) for t, spec in recipe.tasks.items()}
        return cls(model, heads, weights, opt.pop("learning_rate", 1e-3), threads, channels_last, seed, opt)

    # ------------------------------------------------------------------ data and losses
    def batch(self, x, y):
        """A Keras batch (NHWC images, {task: label}) as PyTorch tensors (NCHW images and maps)."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        xt = torch.as_tensor(x).float().permute(0, 3, 1, 2).contiguous(memory_format=fmt)
        return xt, {t: _to_torch_label(self.model.kinds[t], y[t]) for t in self.model.heads}

    def task_losses(self, outputs, y):
        return {t: task_loss(self.model.kinds[t], self.heads[t], outputs[t], y[t]) for t in self.model.heads}

    def total(self, losses):
        return sum(self.loss_weights[t] * losses[t] for t in losses)

    # ------------------------------------------------------------------ train steps
    def train_step(self, x, y, method="equal"):
        """One step: zero_grad, forward, masked losses, backward as `method` builds it, Adam; returns the total."""
        if method not in METHODS:
            raise ValueError(f"Unknown PyTorch reference method {method!r}; choose from {METHODS}.")
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        if method == "mgda_ub":
            total = mgda_ub_backward(self, x, y)
        else:
            losses = self.task_losses(self.model(x), y)
            terms = [self.loss_weights[t] * losses[t] for t in losses]
            total = sum(terms)
            if method == "equal":
                total.backward()
            elif method == "t_backward":
                for i, term in enumerate(terms):  # .grad accumulates: the sum of the T gradients
                    term.backward(retain_graph=i < len(terms) - 1)
            else:
                pcgrad_backward(terms, self.shared, [self.own[t] for t in losses], self.generator)
        self.optimizer.step()
        return total.detach()

    # ------------------------------------------------------------------ breakdown
    def stages(self, x, y):
        """The four cumulative stages of a train step as callables (see `breakdown`)."""
        model = self.model

        def forward():
            model.train()
            return self.total(self.task_losses(model(x), y))

        def heads_backward():
            model.train()
            model.zero_grad(set_to_none=True)
            pyramid = [f.detach() for f in model.trunk(x)]
            self.total(self.task_losses(model.head_outputs(pyramid), y)).backward()

        def full_backward():
            model.zero_grad(set_to_none=True)
            forward().backward()

        return {"forward+losses": forward, "+heads backward": heads_backward, "+full backward": full_backward,
                "full step": lambda: self.train_step(x, y)}

    def breakdown(self, x, y, steps=5, rounds=3):
        """Median seconds of each stage: forward + losses; + backward through the heads only (trunk
        outputs detached); + the full backward; the full step (with the Adam update)."""
        fns = self.stages(x, y)
        times = {name: [] for name in fns}
        for _ in range(int(rounds)):
            for name, fn in fns.items():
                start = time.perf_counter()
                for _ in range(int(steps)):
                    fn()
                times[name].append((time.perf_counter() - start) / int(steps))
        return {name: statistics.median(ts) for name, ts in times.items()}


def counterparts(recipe, names, x, y, threads, channels_last=False, warmup=3):
    """`bench step` candidate name -> a zero-argument PyTorch train step of its counterpart (own model and Adam).

    Candidates without a counterpart (see `COUNTERPARTS`) are left out; each
    step runs `warmup` times here so no first-call cost lands in a timed round.
    """
    out = {}
    for name in names:
        if name not in COUNTERPARTS:
            continue
        ref = TorchReference.from_recipe(recipe, threads=threads, channels_last=channels_last)
        xt, yt = ref.batch(x, y)
        out[name] = lambda ref=ref, xt=xt, yt=yt, method=COUNTERPARTS[name]: ref.train_step(xt, yt, method)
        for _ in range(int(warmup)):
            out[name]()
    return out


def count_parameters(module) -> int:
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def part_parameter_counts(reference) -> dict:
    """Trainable parameters per part: backbone, neck, each task head, total."""
    m = reference.model if isinstance(reference, TorchReference) else reference
    out = {"backbone": count_parameters(m.backbone), "neck": count_parameters(m.neck)}
    out.update({t: count_parameters(h) for t, h in m.heads.items()})
    out["total"] = count_parameters(m)
    return out
