"""Static-shape drafts (``export --static``) end to end: the draft on QNN's HTP emulator (or the
OpenVINO plugin, or the CPU through the same padding path) with the target on the CPU.

The models are tiny (hidden 32, 4 target layers, a 2-layer draft, W 8, capacity 64) because the
HTP emulator is slow; greedy output must equal target-only decoding, and the stats must name
the provider that really ran each graph.
"""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import export
from tiny_models import build_tiny_model

from mirror_ort.bundle import Bundle
from mirror_ort.cli import main
from mirror_ort.errors import MirrorError
from mirror_ort.export.static import static_sizes
from mirror_ort.providers import (
    PROVIDERS,
    ProviderChoice,
    create_session,
    graph_is_static,
    parse_provider,
)
from mirror_ort.runtime.masks import MASKED, causal_mask, positions
from mirror_ort.runtime.pipeline import Pipeline
from mirror_ort.runtime.session import GraphSession, _provider

HAS_QNN = importlib.util.find_spec("onnxruntime_qnn") is not None
HAS_OPENVINO = importlib.util.find_spec("onnxruntime_ep_openvino") is not None
needs_qnn = pytest.mark.skipif(not HAS_QNN, reason="onnxruntime-qnn is not installed (pip install 'mirror-ort[qnn]')")

W, C = 8, 64
PROMPTS = ["The capital of France is", "def fibonacci(n):"]
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, tokenizer):
    return build_tiny_model(tmp_path_factory.mktemp("small"), "llama", layers=4, hidden=32, heads=4, kv_heads=2,
                            seed=0, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def static_bundle(tmp_path_factory, small_model):
    """Validated: the export's parity check runs the static draft through the runtime's padding."""
    return export(small_model, tmp_path_factory.mktemp("sb") / "static", draft="layers:2",
                  static={"seq": W, "capacity": C}).path


@pytest.fixture(scope="module")
def qdq_bundle(tmp_path_factory, small_model):
    """The static draft as an A16W8 QDQ graph, calibrated on the target's text; validated."""
    return export(small_model, tmp_path_factory.mktemp("qb") / "qdq", draft="layers:2",
                  static={"seq": W, "capacity": C}, draft_precision="qdq").path


@pytest.fixture(scope="module")
def dynamic_bundle(tmp_path_factory, small_model):
    return export(small_model, tmp_path_factory.mktemp("db") / "dynamic", draft="layers:2", validate=False).path


def _lossless(pipe, prompts=PROMPTS, **settings):
    """Greedy sd and mirror equal ar; returns the last stats of each method."""
    last = {}
    for prompt in prompts:
        want = pipe.generate(prompt, method="ar", max_new_tokens=NEW_TOKENS).token_ids
        assert len(want) == NEW_TOKENS
        for method in ("sd", "mirror"):
            got = pipe.generate(prompt, method=method, max_new_tokens=NEW_TOKENS, **settings)
            assert got.token_ids == want, (prompt, method)
            assert got.stats["draft_error"] is None
            last[method] = got.stats
    return last


# --- export ------------------------------------------------------------------------------------

def test_static_draft_in_manifest_and_graph(static_bundle):
    bundle = Bundle.load(static_bundle)
    draft = bundle.graph("draft")
    assert draft.static == {"batch": 1, "seq": W, "capacity": C}
    assert bundle.graph("prefix").static is None and bundle.graph("suffix").static is None
    assert graph_is_static(draft.path) and not graph_is_static(bundle.graph("prefix").path)
    shapes = {v.name: v.shape for v in draft.inputs + draft.outputs}
    assert shapes["input_ids"] == [1, W] and shapes["attention_mask"] == [1, 1, W, C + W]
    assert shapes["head_rows"] == [W] and shapes["past.0.key"] == [1, C, 2, 8]
    assert shapes["present.1.value"] == [1, W, 2, 8] and shapes["logits"] == [1, W, 384]
    checks = {(c["name"], c.get("graph")): c for c in bundle.validation["checks"]}
    assert checks[("max_logit_diff", "draft")]["passed"] and checks[("argmax_agreement", "draft")]["value"] == 1.0


def test_static_sizes_bad_input():
    assert static_sizes({"seq": None, "capacity": None}) == {"batch": 1, "seq": 16, "capacity": 512}
    with pytest.raises(MirrorError, match="--static-seq 0 must be at least 1"):
        static_sizes({"seq": 0})
    with pytest.raises(MirrorError, match="--static-capacity 1024 exceeds the model's 512 positions"):
        static_sizes({"capacity": 1024}, max_positions=512)
    with pytest.raises(MirrorError, match="unknown static size 'width'"):
        static_sizes({"width": 4})


def test_static_without_a_draft_is_refused(tmp_path, small_model):
    with pytest.raises(MirrorError, match="--static shapes the draft graph but this export has none"):
        export(small_model, tmp_path / "b", draft=None, static={})


def test_qdq_draft_is_integer_but_for_the_mask_and_softmax(qdq_bundle):
    import onnx

    bundle = Bundle.load(qdq_bundle)
    entry = bundle.graph("draft")
    assert entry.precision == "qdq" and bundle.graph("prefix").precision == "fp32"
    quantization = entry.quantization
    assert quantization["activations"] == "uint16" and quantization["weights"] == "uint8"
    assert quantization["calibration"]["windows"] > quantization["calibration"]["sequences"] > 0
    graph = onnx.load(str(bundle.graph("draft").path)).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    float_nodes = set(quantization["float_nodes"])
    assert {n.op_type for n in graph.node if n.name in float_nodes} == {"Add", "Softmax"}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    assert matmuls and all(producers.get(i) == "DequantizeLinear" for n in matmuls for i in n.input)
    assert graph_is_static(bundle.graph("draft").path)
    # validate measured what the precision cost against the fp32 PyTorch draft: not nothing, not everything
    checks = {(c["name"], c.get("graph")): c for c in bundle.validation["checks"]}
    assert checks[("max_logit_diff", "draft")]["value"] > 1e-3
    assert checks[("argmax_agreement", "draft")]["value"] >= 0.5


def test_qdq_draft_on_cpu_equals_ar(qdq_bundle):
    stats = _lossless(Pipeline.from_bundle(qdq_bundle), gamma=3, max_branches=4)
    assert stats["sd"]["draft_calls"] > 0


def test_qdq_precision_bad_input(tmp_path, small_model):
    with pytest.raises(MirrorError, match="--draft-precision qdq quantizes a static draft for NPUs: add --static"):
        export(small_model, tmp_path / "a", draft="layers:2", draft_precision="qdq")
    with pytest.raises(MirrorError, match="pass --draft-precision fp32 or qdq"):
        export(small_model, tmp_path / "b", draft="layers:2", static={}, draft_precision="int4")
    assert not any(tmp_path.iterdir())  # nothing half-written


# --- the padding path, on the CPU ---------------------------------------------------------------

def test_static_draft_session_matches_the_dynamic_one(static_bundle, dynamic_bundle):
    """Chunked prompt, head rows across chunks and out of order, a window, a tree-masked level."""
    cpu = ProviderChoice()
    fixed, free = (GraphSession(Bundle.load(b).graph("draft"), create_session(Bundle.load(b).graph("draft").path, cpu),
                                C) for b in (static_bundle, dynamic_bundle))
    assert fixed.capacity == C and fixed.cache.buffer.shape[2] == C + W
    rng = np.random.default_rng(0)
    tree = np.full((1, 1, 5, 26), MASKED, dtype=np.float32)  # 5 nodes after 21 cached positions
    tree[0, 0, :, :21] = 0.0
    for r, seen in enumerate(([0], [1], [0, 2], [1, 3], [0, 2, 4])):
        tree[0, 0, r, [21 + s for s in seen]] = 0.0
    calls = [(19, causal_mask(0, 19), [18, 0, 9]),  # three chunks of W = 8
             (2, causal_mask(19, 2), None),
             (5, tree, [3, 4])]
    start = 0
    for seq, mask, rows in calls:
        ids = rng.integers(0, 384, (1, seq))
        rows = None if rows is None else np.array(rows, dtype=np.int64)
        a, b = (s.run(ids, positions(start, seq), mask, rows, outputs=("logits", "next_ids")) for s in (fixed, free))
        np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-4)
        np.testing.assert_array_equal(a["next_ids"], b["next_ids"])
        start += seq
        assert fixed.cache.length == free.cache.length == start
        np.testing.assert_allclose(fixed.cache.buffer[:, :, :start], free.cache.buffer[:, :, :start], atol=1e-4)
    with pytest.raises(MirrorError, match="exceeds the cache capacity 64: re-export with a larger --static-capacity"):
        fixed.run(rng.integers(0, 384, (1, 40)), positions(start, 40), causal_mask(start, 40))


def test_static_draft_on_cpu_equals_ar_and_drafts_like_the_dynamic_one(static_bundle, dynamic_bundle):
    static = _lossless(Pipeline.from_bundle(static_bundle), gamma=3, max_branches=4)
    dynamic = Pipeline.from_bundle(dynamic_bundle).generate(PROMPTS[-1], method="sd", max_new_tokens=NEW_TOKENS,
                                                            gamma=3).stats
    assert static["sd"]["accepted_draft_tokens"] == dynamic["accepted_draft_tokens"]  # the same proposals
    assert static["sd"]["draft_ep"] == static["mirror"]["target_ep"] == "CPUExecutionProvider"


def test_static_capacity_bounds_the_generation(static_bundle):
    pipe = Pipeline.from_bundle(static_bundle)
    prompt = pipe.encode(PROMPTS[0])
    usable = C - 2 * (2 + 2)  # gamma * (max_branches + 2) positions stay free for the draft tree
    got = pipe.generate(prompt, method="mirror", max_new_tokens=100, gamma=2, max_branches=2).token_ids
    assert len(prompt) + len(got) == usable
    assert got == pipe.generate(prompt, method="ar", max_new_tokens=len(got)).token_ids
    with pytest.raises(MirrorError, match=r"static draft's capacity 64 leaves 4 for the sequence \(60 positions"):
        pipe.generate(prompt, method="mirror", gamma=6, max_branches=8)


# --- QNN (HTP emulator) ---------------------------------------------------------------------------

@needs_qnn
def test_static_draft_on_qnn_equals_ar(static_bundle):
    pipe = Pipeline.from_bundle(static_bundle, target_ep="cpu", draft_ep="qnn")
    stats = _lossless(pipe, gamma=3, max_branches=4)
    for s in stats.values():
        assert s["draft_ep"] == "QNNExecutionProvider" and s["target_ep"] == "CPUExecutionProvider"
        assert s["draft_calls"] > 0


@needs_qnn
def test_qdq_draft_on_qnn_equals_ar(qdq_bundle):
    """The whole integer graph on the HTP (no CPU fallback: the session would refuse it)."""
    pipe = Pipeline.from_bundle(qdq_bundle, target_ep="cpu", draft_ep="qnn")
    assert pipe.draft.provider == "QNNExecutionProvider"
    stats = _lossless(pipe, gamma=3, max_branches=4)
    assert all(s["draft_ep"] == "QNNExecutionProvider" for s in stats.values())


@needs_qnn
def test_run_json_names_the_qnn_draft(static_bundle):
    """A real process: QNN's backend prints a LIBNATIVE line on file descriptor 1 when it loads,
    which must not land in front of the JSON."""
    result = subprocess.run([sys.executable, "-m", "mirror_ort.cli", "run", str(static_bundle), "--draft-ep", "qnn",
                             "--json", "--max-new-tokens", "6", "--gamma", "3", "--max-branches", "4",
                             "--prompt", PROMPTS[0]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)["stats"]
    assert stats["draft_ep"] == "QNNExecutionProvider" and stats["target_ep"] == "CPUExecutionProvider"
    assert stats["new_tokens"] == 6


@needs_qnn
def test_dynamic_draft_on_qnn_says_export_static(dynamic_bundle):
    with pytest.raises(MirrorError, match="the draft graph has dynamic shapes but qnn needs static shapes: "
                                          "re-export with `mirror-ort export --static`"):
        Pipeline.from_bundle(dynamic_bundle, draft_ep="qnn")
    result = CliRunner().invoke(main, ["run", str(dynamic_bundle), "--draft-ep", "qnn", "--prompt", "x"])
    assert result.exit_code == 2 and "mirror-ort export --static" in result.output


@needs_qnn
def test_split_graph_reports_both_providers(tmp_path):
    """With --allow-cpu-fallback the stats name every EP that took nodes, not just the one asked for."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                               helper.make_node("NonZero", ["r"], ["y"], name="nonzero")], "split",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [2, "n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "split.onnx")
    session = create_session(tmp_path / "split.onnx", parse_provider("qnn"), allow_cpu_fallback=True)
    assert _provider(session) == "QNNExecutionProvider+CPUExecutionProvider"


# --- OpenVINO -------------------------------------------------------------------------------------

def test_static_draft_on_openvino_equals_ar(static_bundle):
    if not HAS_OPENVINO:
        pytest.skip("onnxruntime-ep-openvino is not installed (pip install 'mirror-ort[openvino]')")
    from mirror_ort.providers.plugins import ep_devices

    offered = {d.device.type.name for d in ep_devices(PROVIDERS["openvino"])}
    if "CPU" not in offered:
        pytest.skip(f"the OpenVINO plugin offers no CPU device on this machine (it offers: "
                    f"{', '.join(sorted(offered)) or 'none'}; seen on AMD hosts)")
    stats = _lossless(Pipeline.from_bundle(static_bundle, target_ep="cpu", draft_ep="openvino:CPU"),
                      gamma=3, max_branches=4)
    assert all(s["draft_ep"] == "OpenVINOExecutionProvider" for s in stats.values())
