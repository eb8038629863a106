"""The provider registry against real ONNX Runtime: CPU, QNN (HTP emulator) and OpenVINO sessions,
the options built for providers that cannot run here, and every bad input."""

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mirror_ort.errors import MirrorError
from mirror_ort.providers import (
    PROVIDERS,
    ProviderChoice,
    build_session_options,
    create_session,
    describe_providers,
    fallback_nodes,
    format_providers,
    graph_is_static,
    parse_provider,
    provider_options,
    require_static,
)
from mirror_ort.providers.plugins import ep_devices, is_installed, load_plugin
from mirror_ort.providers.spec import ProviderSpec

HAS_QNN = importlib.util.find_spec("onnxruntime_qnn") is not None
HAS_OPENVINO = importlib.util.find_spec("onnxruntime_ep_openvino") is not None
needs_qnn = pytest.mark.skipif(not HAS_QNN, reason="onnxruntime-qnn is not installed (pip install 'mirror-ort[qnn]')")
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO,
                                    reason="onnxruntime-ep-openvino is not installed (pip install 'mirror-ort[openvino]')")

RNG = np.random.default_rng(0)
WEIGHT = RNG.standard_normal((64, 64)).astype(np.float32)
BIAS = RNG.standard_normal(64).astype(np.float32)
X = RNG.standard_normal((8, 64)).astype(np.float32)
EXPECTED = X @ WEIGHT + BIAS


def _save(tmp_path, name, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def _matmul_add(tmp_path, batch=8):
    """x @ W + b; ``batch`` None gives the dynamic-shape version."""
    return _save(tmp_path, "static" if batch else "dynamic",
                 [helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul"),
                  helper.make_node("Add", ["y", "B"], ["z"], name="add")],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch or "batch", 64])],
                 [helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch or "batch", 64])],
                 [numpy_helper.from_array(WEIGHT, "W"), numpy_helper.from_array(BIAS, "B")])


@pytest.fixture
def static_graph(tmp_path):
    return _matmul_add(tmp_path)


@pytest.fixture
def dynamic_graph(tmp_path):
    return _matmul_add(tmp_path, batch=None)


@pytest.fixture
def nonzero_graph(tmp_path):
    """Relu (QNN takes it) then NonZero (QNN does not)."""
    return _save(tmp_path, "nonzero",
                 [helper.make_node("Relu", ["x"], ["r"], name="relu"),
                  helper.make_node("NonZero", ["r"], ["nz"], name="nonzero")],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                 [helper.make_tensor_value_info("nz", TensorProto.INT64, None)])


def _config(options, key):
    """A session config entry, None when unset (SessionOptions raises for unset keys)."""
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:
        return None


def _run(session):
    return session.run(None, {"x": X})[0]


# --- sessions that run here -------------------------------------------------------------------

def test_cpu_session_matches_numpy(static_graph):
    session = create_session(static_graph, parse_provider("cpu"), threads=1, spin=False)
    assert session.get_providers()[0] == "CPUExecutionProvider"
    np.testing.assert_allclose(_run(session), EXPECTED, rtol=1e-5, atol=1e-4)


@needs_qnn
def test_qnn_htp_emulator_session_matches_numpy(static_graph):
    session = create_session(static_graph, parse_provider("qnn:htp", ("htp_performance_mode=burst",)), role="draft")
    assert session.get_providers()[0] == "QNNExecutionProvider"
    np.testing.assert_allclose(_run(session), EXPECTED, rtol=1e-4, atol=1e-4)


@needs_openvino
def test_openvino_cpu_session_matches_numpy_in_fp32(static_graph):
    offered = {d.device.type.name for d in ep_devices(PROVIDERS["openvino"])}
    if "CPU" not in offered:
        pytest.skip(f"the OpenVINO plugin offers no CPU device on this machine (it offers: "
                    f"{', '.join(sorted(offered)) or 'none'}; seen on AMD hosts)")
    session = create_session(static_graph, parse_provider("openvino:CPU"), role="draft")
    assert session.get_providers()[0] == "OpenVINOExecutionProvider"
    # bf16 (the plugin's own default on AMX machines) differs by ~1e-2 here; f32 is forced.
    np.testing.assert_allclose(_run(session), EXPECTED, rtol=1e-4, atol=1e-4)


@needs_qnn
def test_cpu_fallback_allowed_runs_and_names_the_nodes(nonzero_graph):
    choice = parse_provider("qnn")
    assert fallback_nodes(nonzero_graph, choice) == ["nonzero (NonZero)"]
    session = create_session(nonzero_graph, choice, allow_cpu_fallback=True)
    assert session.get_providers()[0] == "QNNExecutionProvider"
    assert session.run(None, {"x": np.ones((4, 4), np.float32)})[0].shape == (2, 16)


# --- options for providers that cannot run here ------------------------------------------------
# CUDA (onnxruntime-gpu replaces this environment's onnxruntime wheel) and DirectML (Windows only)
# cannot create sessions on this machine: these tests check the options objects they would get.

def test_cuda_session_options():
    plan = build_session_options(parse_provider("cuda:1", ("gpu_mem_limit=2147483648",)), threads=2, spin=False)
    assert plan.providers == [("CUDAExecutionProvider", {"device_id": "1", "gpu_mem_limit": "2147483648"})]
    assert _config(plan.options, "session.disable_cpu_ep_fallback") == "1"
    assert _config(plan.options, "session.intra_op.allow_spinning") == "0"
    assert _config(plan.options, "session.force_spinning_stop") == "1"  # prefix and suffix take turns
    assert (plan.options.intra_op_num_threads, plan.options.inter_op_num_threads) == (2, 1)


def test_cuda_graphs_need_static_shapes():
    capture = parse_provider("cuda", ("enable_cuda_graph=1",))
    require_static(capture, graph_is_static=True, role="target")
    require_static(parse_provider("cuda"), graph_is_static=False, role="target")
    with pytest.raises(MirrorError, match="the target graph has dynamic shapes but cuda with enable_cuda_graph=1"):
        require_static(capture, graph_is_static=False, role="target")


def test_dml_session_options():
    plan = build_session_options(parse_provider("dml:NPU", ("performance_preference=minimum_power",)),
                                 allow_cpu_fallback=True)
    assert plan.providers == [("DmlExecutionProvider",
                               {"device_filter": "npu", "performance_preference": "minimum_power"})]
    assert plan.options.enable_mem_pattern is False
    assert plan.options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert _config(plan.options, "session.disable_cpu_ep_fallback") is None


def test_openvino_forces_fp32_on_its_cpu_device_only():
    def load_config(text, *options):
        return json.loads(provider_options(parse_provider(text, options))["load_config"])

    assert load_config("openvino") == {"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}
    assert load_config("openvino:npu", "precision=f16", "cache_dir=/tmp/ov") == {
        "NPU": {"INFERENCE_PRECISION_HINT": "f16", "CACHE_DIR": "/tmp/ov"}}
    assert "load_config" not in provider_options(parse_provider("openvino:GPU"))


def test_cpu_entry_never_disables_its_own_fallback():
    plan = build_session_options(ProviderChoice(), threads=1, spin=True)
    assert _config(plan.options, "session.intra_op.allow_spinning") == "1"
    assert _config(plan.options, "session.disable_cpu_ep_fallback") is None


def test_graph_is_static(static_graph, dynamic_graph):
    assert graph_is_static(static_graph) and not graph_is_static(dynamic_graph)


# --- describe ----------------------------------------------------------------------------------

def test_describe_providers_lists_every_entry():
    described = describe_providers()
    entries = {e["name"]: e for e in described["providers"]}
    assert list(entries) == list(PROVIDERS)
    assert entries["cpu"]["installed"] and entries["cpu"]["devices"][0]["type"] == "CPU"
    for entry in entries.values():
        assert entry["installed"] or entry["install_hint"]
    if HAS_QNN:
        assert entries["qnn"]["library"]["loaded"] and entries["qnn"]["devices"][0]["ep_name"] == "QNNExecutionProvider"
    text = format_providers(described)
    assert all(name in text for name in PROVIDERS)


# --- bad input: one MirrorError line naming the problem and the fix ----------------------------

@pytest.mark.parametrize("text, options, message", [
    ("tpu", (), "unknown execution provider 'tpu': use one of cpu, cuda, qnn, openvino"),
    ("qnn", ("vtcm",), "provider option 'vtcm' is not key=value"),
    ("qnn", ("precision=fp16",), "unknown option 'precision' for qnn: accepted options are backend_type,"),
    ("cpu", ("device_id=0",), "unknown option 'device_id' for cpu: accepted options are none"),
    ("openvino:XPU", (), "unknown device 'XPU' for openvino: use CPU, GPU, NPU"),
    ("cuda:first", (), "unknown device 'first' for cuda: use a device index"),
    ("cpu:0", (), "cpu takes no device"),
])
def test_bad_provider_text(text, options, message):
    with pytest.raises(MirrorError, match=message):
        parse_provider(text, options)


def test_provider_not_installed_names_the_package(static_graph):
    missing = next((spec for spec in PROVIDERS.values() if not is_installed(spec)), None)
    if missing is None:
        pytest.skip("every provider in the registry is installed here")
    with pytest.raises(MirrorError, match=f"execution provider {missing.name} is not installed: .*pip install"):
        create_session(static_graph, ProviderChoice(missing.name))


def test_plugin_library_that_fails_to_load(tmp_path, monkeypatch):
    not_a_library = tmp_path / "libbroken_ep.so"
    not_a_library.write_text("not an ELF file")
    package = tmp_path / "broken_ep_package"
    package.mkdir()
    (package / "__init__.py").write_text(f"def get_library_path():\n    return {str(not_a_library)!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = ProviderSpec(name="broken", ort_name="BrokenExecutionProvider", install_hint="pip install broken-ep",
                        plugin_module="broken_ep_package")
    with pytest.raises(MirrorError, match=f"cannot load the broken plugin library {not_a_library}: "
                                          r"Failed to load library .*; reinstall it: pip install broken-ep"):
        load_plugin(spec)


def test_plugin_package_without_its_library(tmp_path, monkeypatch):
    package = tmp_path / "hollow_ep_package"
    package.mkdir()
    (package / "__init__.py").write_text("def get_library_path():\n    raise FileNotFoundError('lib.so not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = ProviderSpec(name="hollow", ort_name="HollowExecutionProvider", install_hint="pip install hollow-ep",
                        plugin_module="hollow_ep_package")
    with pytest.raises(MirrorError, match=r"the hollow plugin library is missing \(lib.so not found\)"):
        load_plugin(spec)


def test_require_static_message():
    with pytest.raises(MirrorError) as error:
        require_static(parse_provider("qnn"), graph_is_static=False, role="draft")
    assert str(error.value) == ("the draft graph has dynamic shapes but qnn needs static shapes: "
                                "re-export with `mirror-ort export --static`")
    require_static(parse_provider("cpu"), graph_is_static=False, role="draft")


@needs_qnn
def test_dynamic_graph_on_qnn_is_refused_before_onnx_runtime_sees_it(dynamic_graph):
    with pytest.raises(MirrorError, match="the draft graph has dynamic shapes but qnn needs static shapes"):
        create_session(dynamic_graph, parse_provider("qnn"), role="draft")


@needs_qnn
def test_graph_the_provider_cannot_take_whole_names_the_nodes(nonzero_graph):
    with pytest.raises(MirrorError, match=r"qnn:htp cannot take the whole draft graph: 1 node\(s\) would fall back "
                                          r"to the CPU \(nonzero \(NonZero\)\): pass --allow-cpu-fallback"):
        create_session(nonzero_graph, parse_provider("qnn"), role="draft")


@needs_qnn
def test_backend_that_takes_nothing_is_an_error(static_graph):
    # libQnnGpu cannot initialise on x86 Linux: the whole graph would run on the CPU.
    with pytest.raises(MirrorError, match="qnn:gpu could not take any node of the draft graph"):
        create_session(static_graph, parse_provider("qnn:gpu"), role="draft")


@needs_openvino
def test_device_the_plugin_does_not_offer():
    offered = {d.device.type.name for d in ep_devices(PROVIDERS["openvino"])}
    absent = next((device for device in ("NPU", "GPU", "CPU") if device not in offered), None)
    if absent is None:
        pytest.skip("this machine offers every OpenVINO device")
    with pytest.raises(MirrorError, match=f"openvino offers no {absent} device on this machine"):
        build_session_options(parse_provider(f"openvino:{absent}"))
