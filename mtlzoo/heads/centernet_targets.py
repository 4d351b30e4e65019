"""CenterNet target encoding and decoding (NumPy; used by data pipelines and tests).

Target layout for an image of size (H, W) and a head of stride `s`, on a grid of
(h, w) = (H // s, W // s) cells, with C classes — one float32 tensor [h, w, C + 5]:

- `[..., :C]`      class heatmaps: a Gaussian splat (peak 1) at each object's center;
- `[..., C:C+2]`   box size (height, width) in grid cells, at the center cell;
- `[..., C+2:C+4]` sub-cell offset (dy, dx) of the true center, in [0, 1);
- `[..., C+4]`     1 at center cells, 0 elsewhere.

An example whose detection label is missing is encoded as all `-1`
(`MISSING_VALUE`), which the detection loss and metrics skip.

Reference:
    Zhou et al., "Objects as Points", arXiv:1904.07850, 2019.
"""

from __future__ import annotations

import numpy as np

MISSING_VALUE = -1.0


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """The CenterNet/CornerNet radius keeping IoU >= `min_overlap` for a box of (height, width)."""
    a1 = 1.0
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2 = 4.0
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + np.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + np.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return float(min(r1, r2, r3))


def encode_centernet_targets(boxes, classes, image_shape, num_classes: int, stride: int = 4) -> np.ndarray:
    """Encodes boxes into the dense CenterNet target described in the module docstring.

    Args:
        boxes: array [N, 4] of (ymin, xmin, ymax, xmax) in input-image pixels.
        classes: int array [N] of class ids in [0, num_classes).
        image_shape: (H, W) of the input image.
        num_classes: int. Number of detection classes C.
        stride: int. Output stride of the detection head. Defaults to 4.

    Returns:
        float32 array [H // stride, W // stride, num_classes + 5].
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    gh, gw = height // stride, width // stride
    target = np.zeros((gh, gw, num_classes + 5), np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    if len(boxes) != len(classes):
        raise ValueError(f"detection: got {len(boxes)} boxes but {len(classes)} class ids.")
    ys = np.arange(gh, dtype=np.float32)[:, None]
    xs = np.arange(gw, dtype=np.float32)[None, :]
    for box, cls in zip(boxes, classes):
        if not 0 <= cls < num_classes:
            raise ValueError(f"detection: class id {cls} outside [0, {num_classes}).")
        y0, x0, y1, x1 = np.clip(box, 0, [height, width, height, width]) / stride
        bh, bw = y1 - y0, x1 - x0
        if bh <= 0 or bw <= 0:
            continue
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        iy, ix = min(int(cy), gh - 1), min(int(cx), gw - 1)
        radius = max(0.0, gaussian_radius(bh, bw))
        sigma = (2 * int(radius) + 1) / 6.0
        splat = np.exp(-((ys - iy) ** 2 + (xs - ix) ** 2) / (2 * sigma**2))
        target[..., cls] = np.maximum(target[..., cls], splat)
        target[iy, ix, num_classes : num_classes + 2] = (bh, bw)
        target[iy, ix, num_classes + 2 : num_classes + 4] = (cy - iy, cx - ix)
        target[iy, ix, num_classes + 4] = 1.0
    return target


def missing_centernet_target(image_shape, num_classes: int, stride: int = 4) -> np.ndarray:
    """The all-`MISSING_VALUE` target of an example without detection labels."""
    gh, gw = int(image_shape[0]) // stride, int(image_shape[1]) // stride
    return np.full((gh, gw, num_classes + 5), MISSING_VALUE, np.float32)


def decode_centernet(prediction, num_classes: int, stride: int = 4, max_detections: int = 50,
                     score_threshold: float = 0.1, pool_size: int = 3):
    """Decodes one image's head output [h, w, C + 4] into boxes.

    Peaks are cells that equal the maximum of their `pool_size` neighbourhood in
    their class heatmap (the max-pool NMS of CenterNet).

    Returns:
        (boxes [K, 4] in input pixels (ymin, xmin, ymax, xmax), scores [K], classes [K]),
        sorted by decreasing score.
    """
    pred = np.asarray(prediction, np.float32)
    heat = pred[..., :num_classes]
    size = pred[..., num_classes : num_classes + 2]
    offset = pred[..., num_classes + 2 : num_classes + 4]
    gh, gw, _ = heat.shape
    pad = pool_size // 2
    padded = np.pad(heat, ((pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
    neighbourhood = np.full_like(heat, -np.inf)
    for dy in range(pool_size):
        for dx in range(pool_size):
            neighbourhood = np.maximum(neighbourhood, padded[dy : dy + gh, dx : dx + gw])
    peaks = (heat >= neighbourhood) & (heat >= score_threshold)
    iy, ix, ic = np.nonzero(peaks)
    scores = heat[iy, ix, ic]
    order = np.argsort(-scores)[:max_detections]
    iy, ix, ic, scores = iy[order], ix[order], ic[order], scores[order]
    cy = iy + offset[iy, ix, 0]
    cx = ix + offset[iy, ix, 1]
    h = np.maximum(size[iy, ix, 0], 0)
    w = np.maximum(size[iy, ix, 1], 0)
    boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1) * stride
    return boxes.astype(np.float32), scores.astype(np.float32), ic.astype(np.int64)
