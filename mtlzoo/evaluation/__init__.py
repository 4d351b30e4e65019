"""Evaluation of multi-task models: task metrics in NumPy, Δm against single-task baselines, cost.

The training-time Keras metrics are running estimates meant for progress
bars; this module computes the numbers reported in papers, over a whole
dataset, in NumPy:

- segmentation: mean IoU (over classes that occur in the labels or the
  predictions) and pixel accuracy, from one confusion matrix; label `-1` is
  ignored;
- depth: absolute error, absolute relative error and the share of pixels with
  δ = max(d/d*, d*/d) < 1.25, over valid pixels (label > 0);
- detection: AP at IoU 0.5 per class and their mean (mAP@0.5), with COCO-style
  greedy matching by score and all-point interpolated AP, on boxes decoded by
  the detection head;
- scene tags (multi-label): mean over tags of the average precision of the
  tag's ranking, micro F1 and macro F1 at probability 0.5; `-1` entries are
  ignored;
- classification: accuracy; regression: mean absolute error;
- surface normals (NYUv2-style `normal` labels): mean and median angle error
  and the share of pixels within 11.25°, 22.5° and 30° (`normal_errors`).

Shares and accuracies are fractions in [0, 1] (papers print them ×100); Δm is
unaffected because it is relative.

`evaluate(model, data, baselines)` runs a model over a dataset and returns an
`EvaluationReport`: the metrics per task, Δm against the stored single-task
baselines (lower is better), and the cost of the multi-task model (parameters,
FLOPs, measured inference step time) against the sum of the single-task
models. `baselines(recipe, ...)` trains those single-task models (one per
task, same backbone and budget) and stores their metrics and costs in
`baselines.json`.

Example:
```python
import mtlzoo
from mtlzoo.evaluation import baselines, evaluate
stl = baselines("driving_perception_lite", epochs=5, out_dir="runs/stl")
result = mtlzoo.train("driving_perception_lite", epochs=5, out_dir="runs/mtl")
report = evaluate(result.model, "synthetic_driving", baselines="runs/stl/baselines.json")
print(report.table())
report.delta_m          # percent; negative = better than the single-task models
```

Reference:
    Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge",
    IJCV 2010 (all-point interpolated AP); Lin et al., "Microsoft COCO: Common
    Objects in Context", ECCV 2014 (greedy matching by score); Eigen et al.,
    "Depth Map Prediction from a Single Image using a Multi-Scale Deep
    Network", NeurIPS 2014 (depth errors); Eigen and Fergus, "Predicting
    Depth, Surface Normals and Semantic Labels with a Common Multi-Scale
    Convolutional Architecture", ICCV 2015 (normal errors); Maninis et al.,
    "Attentive Single-Tasking of Multiple Tasks", CVPR 2019 (Δm).
"""

from mtlzoo.deprecation import forward_moved
from mtlzoo.evaluation.baselines_file import BASELINES_FORMAT, read_baselines
from mtlzoo.evaluation.cost import measure_step_time, model_cost
from mtlzoo.evaluation.evaluator import evaluate
from mtlzoo.evaluation.report import EvaluationReport
from mtlzoo.evaluation.single_task import baselines
from mtlzoo.metrics.headline import HEADLINE, HIGHER_IS_BETTER

__all__ = ["BASELINES_FORMAT", "EvaluationReport", "HIGHER_IS_BETTER", "baselines", "evaluate",
           "measure_step_time", "model_cost", "read_baselines"]

# The NumPy metrics moved to mtlzoo.metrics (one place per task kind); the old names forward there.
_MOVED = {name: ("mtlzoo.metrics", name) for name in (
    "average_precision", "box_iou", "boxes_from_centernet_target", "confusion_matrix", "depth_errors",
    "detection_average_precision", "multilabel_metrics", "normal_errors", "segmentation_metrics")}
_MOVED.update({"_DepthSums": ("mtlzoo.metrics", "DepthSums"), "_MultiLabelSums": ("mtlzoo.metrics", "MultiLabelSums"),
               "_NormalSums": ("mtlzoo.metrics", "NormalSums")})


__getattr__ = forward_moved(__name__, _MOVED)
