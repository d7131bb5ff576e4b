"""onnxruntime sessions on a pool's device, for the engines that run ONNX models.

Imported only inside engine processes (``EngineSpec.load``): onnxruntime stays out of the API.
"""

from __future__ import annotations

from typing import Any

from ..errors import EngineUnavailable
from ..pools import cuda_index


def session(model: str | bytes, *, threads: int, device: str, engine: str) -> Any:
    """An InferenceSession with ``threads`` intra-op threads on ``device`` ("cpu" or "cuda:N").

    onnxruntime quietly runs on the CPU when it cannot use CUDA (no GPU, CPU-only wheel, missing
    libraries); a pool placed on a GPU must not, so the session's providers are checked."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineUnavailable(f"{engine}: onnxruntime is not installed: {exc}") from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    gpu = cuda_index(device)
    if gpu is None:
        made = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        return _without_fallback(made)
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise EngineUnavailable(
            f"{engine} is placed on {device}, but this onnxruntime has no CUDA provider "
            f"(it has {', '.join(available)}): install onnxruntime-gpu, or place the pool on cpu"
        )
    try:
        made = onnxruntime.InferenceSession(
            model,
            sess_options=options,
            providers=[("CUDAExecutionProvider", {"device_id": gpu}), "CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for a bad device
        raise EngineUnavailable(f"{engine} cannot start on {device}: {exc}") from exc
    if made.get_providers()[0] != "CUDAExecutionProvider":
        raise EngineUnavailable(
            f"{engine} is placed on {device}, but onnxruntime could not use it (no usable GPU or "
            "CUDA libraries) and would have fallen back to the CPU"
        )
    return _without_fallback(made)


def _without_fallback(made: Any) -> Any:
    """onnxruntime rebuilds a session on the CPU after a GPU failure at run time, and keeps a
    session's model bytes (88 MB for Kokoro) for that one use. A pool must not fall back, so the
    fallback goes, and the bytes with it."""
    made.disable_fallback()
    made._model_bytes = None
    return made
