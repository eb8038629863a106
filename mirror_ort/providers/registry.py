"""The table of execution providers: adding one is adding an entry here, not an ``if`` elsewhere."""

import json

import onnxruntime as ort

from ..errors import MirrorError
from .spec import CPU_EP, DeviceRule, ProviderSpec


def _openvino_options(device: str | None, options: dict[str, str]) -> dict[str, str]:
    """Fold ``precision`` and ``cache_dir`` into ``load_config``.

    The plugin ignores them as plain options ("set it via the load_config"), and its CPU device
    computes in bf16 on AMX machines unless INFERENCE_PRECISION_HINT says f32.
    """
    options = dict(options)
    try:
        config = json.loads(options.pop("load_config", "{}"))
    except json.JSONDecodeError as e:
        raise MirrorError(f"openvino option load_config is not JSON ({e}): pass a JSON object such as "
                          '\'{"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}\'') from None
    device_config = config.setdefault(device or "CPU", {})
    if "precision" in options:
        device_config.setdefault("INFERENCE_PRECISION_HINT", options.pop("precision"))
    if "cache_dir" in options:
        device_config.setdefault("CACHE_DIR", options.pop("cache_dir"))
    if device_config:
        options["load_config"] = json.dumps(config, sort_keys=True)
    return options


PROVIDERS: dict[str, ProviderSpec] = {spec.name: spec for spec in (
    ProviderSpec(
        name="cpu", ort_name=CPU_EP,
        install_hint="pip install onnxruntime==1.32.0",
    ),
    ProviderSpec(
        name="cuda", ort_name="CUDAExecutionProvider",
        install_hint="pip install 'mirror-ort[gpu]' in an environment of its own: onnxruntime-gpu "
                     "replaces the CPU onnxruntime wheel (see docs/providers.md)",
        device=DeviceRule(option="device_id"),
        options=("device_id", "gpu_mem_limit", "arena_extend_strategy", "cudnn_conv_algo_search",
                 "do_copy_in_default_stream", "enable_cuda_graph", "use_tf32", "prefer_nhwc",
                 "tunable_op_enable", "tunable_op_tuning_enable", "enable_skip_layer_norm_strict_mode"),
        graph_capture_option="enable_cuda_graph",
    ),
    ProviderSpec(
        name="qnn", ort_name="QNNExecutionProvider",
        install_hint="pip install 'mirror-ort[qnn]' (onnxruntime-qnn==2.7.0, a plugin beside onnxruntime)",
        plugin_module="onnxruntime_qnn",
        device=DeviceRule(option="backend_type", choices=("htp", "gpu", "cpu"), default="htp"),
        options=("backend_type", "backend_path", "htp_performance_mode", "enable_htp_fp16_precision",
                 "soc_model", "htp_arch", "device_id", "vtcm_mb", "htp_graph_finalization_optimization_mode",
                 "qnn_context_priority", "offload_graph_io_quantization", "enable_htp_shared_memory_allocator",
                 "profiling_level", "profiling_file_path", "rpc_control_latency"),
        static_shapes=True,
    ),
    ProviderSpec(
        name="openvino", ort_name="OpenVINOExecutionProvider",
        install_hint="pip install 'mirror-ort[openvino]' (onnxruntime-ep-openvino==1.8.1, a plugin beside "
                     "onnxruntime)",
        plugin_module="onnxruntime_ep_openvino",
        device=DeviceRule(option=None, choices=("CPU", "GPU", "NPU"), default="CPU"),
        options=("precision", "cache_dir", "load_config", "reshape_input", "enable_causallm"),
        device_defaults={"CPU": {"precision": "f32"}},
        translate=_openvino_options,
    ),
    ProviderSpec(
        name="dml", ort_name="DmlExecutionProvider",
        install_hint="pip install onnxruntime-directml (Windows) in an environment of its own: it replaces "
                     "the onnxruntime wheel",
        device=DeviceRule(option="device_filter", choices=("gpu", "npu", "any")),
        options=("device_id", "device_filter", "performance_preference"),
        # DirectML cannot reuse a memory plan across runs nor run nodes in parallel.
        session_settings={"enable_mem_pattern": False, "execution_mode": ort.ExecutionMode.ORT_SEQUENTIAL},
    ),
    ProviderSpec(
        name="coreml", ort_name="CoreMLExecutionProvider",
        install_hint="CoreML is built into the onnxruntime wheel for macOS; it does not exist elsewhere",
        device=DeviceRule(option="MLComputeUnits",
                          choices=("ALL", "CPUAndNeuralEngine", "CPUAndGPU", "CPUOnly")),
        options=("MLComputeUnits", "ModelFormat", "RequireStaticInputShapes", "EnableOnSubgraphs",
                 "SpecializationStrategy", "AllowLowPrecisionAccumulationOnGPU", "ModelCacheDirectory"),
    ),
    ProviderSpec(
        name="webgpu", ort_name="WebGpuExecutionProvider",
        install_hint="pip install onnxruntime-ep-webgpu (a plugin beside onnxruntime)",
        plugin_module="onnxruntime_ep_webgpu",
        options=("preferredLayout", "enableGraphCapture", "validationMode", "storageBufferCacheMode"),
        graph_capture_option="enableGraphCapture",
    ),
    ProviderSpec(
        name="nv_tensorrt_rtx", ort_name="NvTensorRTRTXExecutionProvider",
        install_hint="pip install onnxruntime-ep-nv-tensorrt-rtx (a plugin beside onnxruntime; NVIDIA RTX GPU)",
        plugin_module="onnxruntime_ep_nv_tensorrt_rtx",
        options=("device_id", "enable_cuda_graph", "nv_max_workspace_size", "nv_runtime_cache_path",
                 "nv_profile_min_shapes", "nv_profile_opt_shapes", "nv_profile_max_shapes"),
        graph_capture_option="enable_cuda_graph",
    ),
)}


def lookup(name: str) -> ProviderSpec:
    """The entry for ``name``; an unknown name lists the known ones."""
    spec = PROVIDERS.get(name.lower())
    if spec is None:
        raise MirrorError(f"unknown execution provider {name!r}: use one of {', '.join(PROVIDERS)}")
    return spec
