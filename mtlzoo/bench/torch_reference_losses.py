"""PyTorch counterparts of mtlzoo's masked task losses, PCGrad, MGDA-UB, and the Keras weight copy.

Plain PyTorch, channels-first (NCHW), written to compute the same numbers as
`mtlzoo.losses` (see each function) so `mtlzoo bench step compare=torch`
compares the same work. Used by `mtlzoo.bench.torch_reference`.

Example:
```python
from mtlzoo.bench.torch_reference_losses import pcgrad
d = pcgrad(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]), torch.Generator().manual_seed(0))
```
"""

from __future__ import annotations

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "The PyTorch reference of `mtlzoo bench step compare=torch` needs PyTorch: "
        "pip install 'mtlzoo[compare]' (or pip install torch)."
    ) from e


def _mean_over(values, valid):
    """Sum of `values` where `valid`, divided by the number of valid elements (0 when none)."""
    valid = valid.to(values.dtype)
    return (values * valid).sum() / valid.sum().clamp(min=1.0)


def masked_cross_entropy(logits, labels, ignore_class=-1):
    """`MaskedSparseCategoricalCrossentropy`: softmax CE over pixels whose label is not `ignore_class`.

    Args:
        logits: float tensor [B, C, H, W] (or [B, C]).
        labels: int64 tensor [B, H, W] (or [B]).
        ignore_class: int. Label value to skip. Defaults to -1.
    """
    total = F.cross_entropy(logits, labels, ignore_index=ignore_class, reduction="sum")
    return total / (labels != ignore_class).sum().clamp(min=1)


def masked_binary_crossentropy(logits, labels):
    """`MaskedBinaryCrossentropy`: sigmoid CE per entry, entries `< 0` skipped."""
    valid = labels >= 0
    values = F.binary_cross_entropy_with_logits(logits, labels.clamp(min=0.0), reduction="none")
    return _mean_over(values, valid)


def depth_l1(pred, labels):
    """`DepthL1`: mean |pred - label| over pixels with label > 0 (both [B, 1, H, W])."""
    valid = labels > 0
    return _mean_over((pred - labels).abs(), valid)


def centernet_loss(pred, target, num_classes, alpha=2.0, beta=4.0, size_weight=0.1, offset_weight=1.0):
    """`CenterNetLoss`: focal loss on heatmaps + L1 on size and offset, over the examples that have a target.

    Args:
        pred: [B, C + 4, h, w]: sigmoid heatmaps, size (2), offset (2).
        target: [B, C + 5, h, w]: heatmaps, size, offset, center indicator; all -1 = missing.
        num_classes: int. C.

    Reference:
        Zhou et al., "Objects as Points", arXiv:1904.07850, 2019.
    """
    c = num_classes
    present = (target[:, c + 4 : c + 5] >= 0).to(pred.dtype).amin(dim=(1, 2, 3), keepdim=True)
    heat_t = target[:, :c].clamp(0.0, 1.0)
    heat_p = pred[:, :c].clamp(1e-4, 1.0 - 1e-4)
    center = target[:, c + 4 : c + 5].clamp(0.0, 1.0) * present
    is_peak = (heat_t >= 1.0 - 1e-6).to(pred.dtype)
    pos = -((1.0 - heat_p) ** alpha) * torch.log(heat_p) * is_peak
    neg = -((1.0 - heat_t) ** beta) * heat_p**alpha * torch.log(1.0 - heat_p) * (1.0 - is_peak)
    focal = ((pos + neg) * present).sum()
    size = ((pred[:, c : c + 2] - target[:, c : c + 2]).abs() * center).sum()
    offset = ((pred[:, c + 2 : c + 4] - target[:, c + 2 : c + 4]).abs() * center).sum()
    return (focal + size_weight * size + offset_weight * offset) / center.sum().clamp(min=1.0)


def task_loss(kind, head, pred, label):
    """The loss of a task of `kind` (the mtlzoo head kind) on channels-first `pred` and `label`."""
    if kind in ("segmentation", "classification"):
        return masked_cross_entropy(pred, label)
    if kind == "depth":
        return depth_l1(pred, label)
    if kind == "detection":
        return centernet_loss(pred, label, head.num_classes)
    if kind == "multilabel":
        return masked_binary_crossentropy(pred, label)
    raise ValueError(f"The PyTorch reference has no loss for task kind {kind!r}; it covers segmentation, "
                     "classification, depth, detection and multilabel.")


def pcgrad(grads, generator):
    """PCGrad: the sum of the task gradients, each projected off those it conflicts with.

    For each task i, in a random order of all tasks (as in the authors' code; the
    task itself is a no-op), g_i <- g_i - min(g_i.g_j, 0) / ||g_j||^2 g_j.

    Args:
        grads: float tensor [T, P], one flattened task gradient per row.
        generator: `torch.Generator` for the task orders.

    Returns:
        The aggregated gradient [P].

    Reference:
        Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.
    """
    t = grads.shape[0]
    sq_norms = (grads * grads).sum(dim=1).clamp(min=1e-20)
    out = torch.zeros_like(grads[0])
    for i in range(t):
        g = grads[i].clone()
        for j in torch.randperm(t, generator=generator).tolist():
            g -= torch.clamp(torch.dot(g, grads[j]), max=0.0) / sq_norms[j] * grads[j]
        out += g
    return out


def min_norm_weights(gram, max_iter=250, tol=1e-5):
    """Frank-Wolfe on the simplex: w minimising w^T G w (the MGDA min-norm problem on the Gram matrix).

    Starts at the best single task (the smallest diagonal entry); each iteration
    moves towards the vertex with the smallest (G w)_t by the exact line search
    between two points, and stops when the step changes w by less than `tol`.

    Args:
        gram: float64 tensor [T, T], G_ij = g_i . g_j.
        max_iter: int. Iteration cap. Defaults to 250.
        tol: float. Stopping threshold on the change of w. Defaults to 1e-5.

    Reference:
        Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.
    """
    t = gram.shape[0]
    w = torch.zeros(t, dtype=gram.dtype)
    w[torch.argmin(torch.diagonal(gram))] = 1.0
    for _ in range(max_iter):
        gw = gram @ w
        k = int(torch.argmin(gw))
        v1v1, v1v2, v2v2 = w @ gw, gw[k], gram[k, k]
        denom = v1v1 + v2v2 - 2.0 * v1v2
        gamma = 0.0 if denom <= 0 else float(((v1v1 - v1v2) / denom).clamp(0.0, 1.0))
        step = torch.zeros_like(w)
        step[k] = 1.0
        new = (1.0 - gamma) * w + gamma * step
        if (new - w).abs().sum() < tol:
            return new
        w = new
    return w


def pcgrad_backward(terms, shared, own, generator):
    """Sets `.grad` for a PCGrad step: one backward per task term (its shared and own parameters), the
    shared rows aggregated by `pcgrad`, each head keeping its own task's gradient.

    Args:
        terms: list of T scalar tensors `w_t * L_t` on one graph.
        shared: list of the shared parameters.
        own: list of T lists, the parameters only task t uses.
        generator: `torch.Generator` of the task orders.
    """
    rows = []
    for term, params in zip(terms, own):
        g = torch.autograd.grad(term, shared + params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if gi is None else gi).reshape(-1) for gi, p in zip(g, shared)]))
        for p, gi in zip(params, g[len(shared):]):
            p.grad = gi
    direction = pcgrad(torch.stack(rows), generator)
    offset = 0
    for p in shared:
        p.grad = direction[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def mgda_ub_backward(ref, x, y):
    """Sets `.grad` for an MGDA-UB step of a `TorchReference`; returns the weighted total loss.

    The task weights are the min-norm point (no gradient normalisation) of the
    gradients of `w_t * L_t` w.r.t. the shared features the heads read (P2 for
    the dense heads, P5 for the pooled ones), one pass through each head; each
    head's parameters get lambda_t times their gradient and the trunk one
    backward of sum_t lambda_t * dL_t/dfeatures. mtlzoo's `aggregator:mgda_ub`
    solves the same problem exactly (active set) instead of by Frank-Wolfe.
    """
    model = ref.model
    pyramid = model.trunk(x)
    read = [0, len(pyramid) - 1]
    leaves = [pyramid[i].detach().requires_grad_() for i in read]
    inputs = list(pyramid)
    for i, leaf in zip(read, leaves):
        inputs[i] = leaf
    losses = ref.task_losses(model.head_outputs(inputs), y)
    rows, feature_grads, head_grads = [], [], []
    for t in model.heads:
        g = torch.autograd.grad(ref.loss_weights[t] * losses[t], leaves + ref.own[t], retain_graph=True,
                                allow_unused=True)
        f = [torch.zeros_like(leaf) if gi is None else gi for gi, leaf in zip(g[: len(leaves)], leaves)]
        feature_grads.append(f)
        head_grads.append(g[len(leaves):])
        rows.append(torch.cat([gi.reshape(-1) for gi in f]))
    matrix = torch.stack(rows).double()
    lam = min_norm_weights(matrix @ matrix.T).float()
    for i, t in enumerate(model.heads):
        for p, gi in zip(ref.own[t], head_grads[i]):
            p.grad = None if gi is None else lam[i] * gi
    upstream = [sum(lam[i] * feature_grads[i][k] for i in range(len(rows))) for k in range(len(leaves))]
    torch.autograd.backward([pyramid[i] for i in read], grad_tensors=upstream)
    return ref.total(losses)


def _keras_layers_by_name(model):
    out, stack, seen = {}, [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if layer.weights and not hasattr(layer, "layers"):
            out[layer.name] = layer
        stack.extend(getattr(layer, "layers", []) or [])
    return out


@torch.no_grad()
def copy_keras_weights(keras_model, reference):
    """Copies every weight of the Keras model into the PyTorch reference (kernels HWIO -> OIHW, depthwise
    HWC1 -> C1HW, Dense [in, out] -> [out, in], BatchNorm gamma/beta/moving statistics); returns the count."""
    m = getattr(reference, "model", reference)  # a TorchReference or its TorchMultiTaskModel
    layers = _keras_layers_by_name(keras_model)
    targets = m.keras_layers()
    missing = sorted(set(targets) - set(layers))
    if missing:
        raise ValueError(f"The Keras model has no layers {missing}: is it the same recipe?")
    for name, module in targets.items():
        w = [torch.as_tensor(v) for v in layers[name].get_weights()]
        if isinstance(module, nn.BatchNorm2d):
            for dst, src in zip((module.weight, module.bias, module.running_mean, module.running_var), w):
                dst.copy_(src)
            continue
        if isinstance(module, nn.Linear):
            module.weight.copy_(w[0].T)
        elif module.groups > 1:
            module.weight.copy_(w[0].permute(2, 3, 0, 1))
        else:
            module.weight.copy_(w[0].permute(3, 2, 0, 1))
        if module.bias is not None:
            module.bias.copy_(w[1])
    return len(targets)
