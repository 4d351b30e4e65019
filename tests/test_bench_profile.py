"""The profile summary of `mtlzoo bench step profile=DIR`: op types grouped, oneDNN's kernels with their op."""

import pytest

from mtlzoo.bench.profile import summarize


@pytest.mark.parametrize("op_type,group", [
    ("_MklNativeDepthwiseConv2dNativeBackpropFilter", "depthwise conv (fwd+bwd)"),
    ("DepthwiseConv2dNativeBackpropInput", "depthwise conv (fwd+bwd)"),
    ("_MklNativeDepthwiseConv2dNative", "depthwise conv (fwd+bwd)"),
    ("_MklNativeConv2DBackpropFilter", "conv backward"),
    ("Conv2DBackpropInput", "conv backward"),
    ("_MklNativeConv2D", "conv forward"),
    ("_MklNativeFusedConv2D", "conv forward"),
    ("_FusedConv2D", "conv forward"),
    ("_FusedMatMul", "matmul"),
    ("_MklNativeFusedBatchNormGradV3", "batch norm"),
    ("FusedBatchNormV3", "batch norm"),
    ("_MklMatMul", "matmul"),
    ("ResizeBilinearGrad", "resize / upsampling"),
    ("ResourceApplyAdam", "optimizer update"),
    ("Sum", "reductions"),
    ("Mul", "elementwise and the rest"),
    ("SelectV2", "elementwise and the rest"),
])
def test_every_op_type_lands_in_its_group(op_type, group):
    summary = summarize([{"type": op_type, "self_us": 3000.0}, {"type": "AddV2", "self_us": 1000.0}], steps=2)
    groups = {r["name"]: r["ms_per_step"] for r in summary["groups"]}
    expected = {group: 1.5, "elementwise and the rest": 0.5}  # AddV2 is always element-wise
    if group == "elementwise and the rest":
        expected = {group: 2.0}
    assert groups == pytest.approx(expected)
    assert summary["total_ms_per_step"] == pytest.approx(2.0)
    assert sum(r["share"] for r in summary["groups"]) == pytest.approx(1.0)


def test_types_are_ranked_by_time_and_cut_to_top():
    stats = [{"type": f"Op{i}", "self_us": float(i)} for i in range(1, 21)] + [{"type": "Op20", "self_us": 5.0}]
    summary = summarize(stats, steps=1, top=3)
    assert [r["name"] for r in summary["types"]] == ["Op20", "Op19", "Op18"]
    assert summary["types"][0]["ms_per_step"] == pytest.approx(0.025)
