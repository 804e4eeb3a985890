"""ONNX Runtime session options for serving, shared by every encoder a bundle carries."""

from __future__ import annotations

import onnxruntime as ort


def serving_session_options(threads: int) -> ort.SessionOptions:
    """``threads`` intra-op threads, sequential execution, every graph optimisation, and no
    spinning: requests already run in parallel on the service's CPU pool, and spinning intra-op
    threads would steal those cores while idle."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
