"""Repair of a known broken export: MeanVarianceNormalization without an epsilon.

ONNX's MeanVarianceNormalization computes (x - mean) / sqrt(var) with no epsilon, so a constant
group (a zero-padded crop border, a flat wall) divides zero by zero. Intel's own IRs of the same
networks compute sqrt(var + 1e-5); `person-reidentification-retail-0267.onnx` as shipped gives
NaN for every crop in ONNX Runtime. We replace each such node with the same arithmetic plus that
epsilon, in ops every opset since 1 has.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ray_deepsort.reid.backends import import_extra

MVN_EPSILON = 1e-5
_DEFAULT_MVN_AXES = (0, 2, 3)


def count_mean_variance_nodes(model_bytes: bytes) -> int:
    """How many MeanVarianceNormalization nodes the graph has (0 without the `onnx` package)."""
    try:
        import onnx
    except ImportError:
        return 0
    model = onnx.load_from_string(model_bytes)
    return sum(node.op_type == "MeanVarianceNormalization" for node in model.graph.node)


def add_mean_variance_epsilon(model_bytes: bytes, epsilon: float = MVN_EPSILON) -> bytes:
    """The graph with every MeanVarianceNormalization as (x - m) / sqrt(var + epsilon)."""
    onnx = import_extra("onnx", "onnx", "repairing an ONNX export")
    helper = onnx.helper
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    eps_name = "ray_deepsort_mvn_epsilon"
    graph.initializer.append(
        onnx.numpy_helper.from_array(np.asarray(epsilon, np.float32), name=eps_name)
    )
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)
    nodes: list[Any] = []
    for index, node in enumerate(graph.node):
        if node.op_type != "MeanVarianceNormalization":
            nodes.append(node)
            continue
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        axes = list(_DEFAULT_MVN_AXES) if axes is None else axes
        x, y = node.input[0], node.output[0]
        p = f"ray_deepsort_mvn{index}_"

        def reduce_mean(source: str, target: str, axes: list[int] = axes, p: str = p) -> Any:
            if opset < 18:  # axes moved from an attribute to an input in opset 18
                return helper.make_node("ReduceMean", [source], [target], axes=axes, keepdims=1)
            axes_name = p + "axes"
            if axes_name not in {i.name for i in graph.initializer}:
                graph.initializer.append(
                    onnx.numpy_helper.from_array(np.asarray(axes, np.int64), name=axes_name)
                )
            return helper.make_node("ReduceMean", [source, axes_name], [target], keepdims=1)

        nodes += [
            reduce_mean(x, p + "mean"),
            helper.make_node("Sub", [x, p + "mean"], [p + "centred"]),
            helper.make_node("Mul", [p + "centred", p + "centred"], [p + "squared"]),
            reduce_mean(p + "squared", p + "var"),
            helper.make_node("Add", [p + "var", eps_name], [p + "var_eps"]),
            helper.make_node("Sqrt", [p + "var_eps"], [p + "std"]),
            helper.make_node("Div", [p + "centred", p + "std"], [y]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString()
