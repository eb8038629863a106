"""Target-only decoding, op by op: mirror-ort's target (fused, or prefix + suffix) beside onnxruntime-genai's graph.

Both run the same prompt (token ids) through ONNX Runtime with its own profiler on: one
prefill, then ``steps`` decode steps on a cache of the same length (mirror-ort rolls its cache
back after each step; onnxruntime-genai's cache grows by one position a step, which is the
same length within a few positions). The profiles are summed per op type and per layer
(nodes are assigned to the layer whose attention node precedes them), and set against the wall
time of each step: ``kernels`` (time inside kernels), ``session overhead`` (inside
``Run`` but outside kernels) and ``between runs`` (the Python and runtime work between runs).

    mirror-ort profile BUNDLE --ops --markdown docs/profile-fp32.md
"""

import gc
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import MirrorError

ATTENTION_OPS = ("GroupQueryAttention", "Attention", "MultiHeadAttention")


def _is_attention(node) -> bool:
    """An attention op, or the grouped attention's Q.K^T product (export/grouped_attention.py): one a layer."""
    if node.op_type in ATTENTION_OPS:
        return True
    return node.op_type == "FusedMatMul" and any(a.name == "transBatchB" and a.i for a in node.attribute) and any(
        a.name == "transB" and a.i for a in node.attribute)


def _profile_events(path: Path) -> list[dict]:
    events = json.loads(Path(path).read_text())
    return [e for e in events if e.get("ph") == "X"]


def _layer_of_nodes(model: Path | str | bytes) -> dict[str, str]:
    """Node name -> "embed", "layer K" (from the K-th attention node on) or "head" (after the last layer).
    ``model``: a file, or a serialized model (the fused target)."""
    import onnx

    graph = (onnx.load_from_string(model) if isinstance(model, bytes)
             else onnx.load(str(model), load_external_data=False)).graph
    layer, names, seen = -1, {}, 0
    attention = sum(_is_attention(n) for n in graph.node)
    for node in graph.node:
        if _is_attention(node):
            layer += 1
            seen += 1
        names[node.name] = "embed" if layer < 0 else f"layer {layer}"
    # nodes after the last layer's MLP are the head: the last Add of the residual stream ends the layers
    tail = [n.name for n in graph.node]
    if attention:
        last_add = max((i for i, n in enumerate(graph.node) if n.op_type in ("Add", "SkipSimplifiedLayerNormalization")
                        and names[n.name] == f"layer {layer}"), default=len(tail) - 1)
        for name in tail[last_add + 1:]:
            names[name] = "head"
    return names


def summarize(events: list[dict], node_layers: dict[str, str], runs: int) -> dict:
    """Per op type and per layer: ms per run; plus ms per run inside Run and inside kernels."""
    by_op, by_layer = defaultdict(float), defaultdict(float)
    kernels = run_total = 0.0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            ms = e["dur"] / 1000
            op = e.get("args", {}).get("op_name", "?")
            node = e["name"][: -len("_kernel_time")]
            by_op[op] += ms
            by_layer[node_layers.get(node, "other")] += ms
            kernels += ms
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            run_total += e["dur"] / 1000
    scale = 1 / max(runs, 1)
    return {"ops": {k: v * scale for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
            "layers": {k: v * scale for k, v in by_layer.items()},
            "kernels_ms": kernels * scale, "run_ms": run_total * scale}


def by_run(events: list[dict]) -> list[list[dict]]:
    """Each ``Run``'s events (the model_run event first), in order."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"), key=lambda e: e["ts"])
    grouped = [[r] for r in runs]
    starts = [r["ts"] for r in runs]
    for e in events:
        if e.get("cat") != "Node":
            continue
        i = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if i >= 0 and e["ts"] <= runs[i]["ts"] + runs[i]["dur"]:
            grouped[i].append(e)
    return grouped


def phases(events: list[dict], node_layers: dict[str, str], steps: int) -> dict:
    """The first run is the prefill, the last ``steps`` the timed decode steps (a warm-up step
    between them may or may not run the graph: onnxruntime-genai's first token after a prefill
    comes from the prefill's logits)."""
    runs = by_run(events)
    if len(runs) < steps + 1:
        raise MirrorError(f"the profile holds {len(runs)} runs, expected at least {steps + 1}: profile again")
    return {"prefill": summarize(runs[0], node_layers, 1),
            "decode": summarize([e for run in runs[-steps:] for e in run], node_layers, steps)}


def profile_mirror_ort(bundle_path, prompt: list[int], steps: int, threads: int) -> dict:
    """Prefill and decode of mirror-ort's target-only path (``ar``), profiled: the fused target
    where the bundle's halves fuse (``runtime/fused.py``), else prefix and suffix."""
    import onnxruntime as ort

    from ..bundle import Bundle
    from ..providers import ProviderChoice, build_session_options
    from ..runtime.fused import fuse, halves_of
    from ..runtime.session import GraphSession
    from ..runtime.stats import Stats
    from ..runtime.target import FILLER_ROWS, Target

    bundle = Bundle.load(bundle_path)
    out = tempfile.mkdtemp(prefix="mirror-ort-profile-")
    halves = bundle.graph("prefix"), bundle.graph("suffix")
    fused = fuse(*halves)
    models = {"target": fused} if fused else {spec.role: (str(spec.path), spec) for spec in halves}
    capacity = len(prompt) + steps + 2 + FILLER_ROWS
    sessions = {}
    for role, (model, spec) in models.items():
        plan = build_session_options(ProviderChoice(), threads)
        plan.options.enable_profiling = True
        plan.options.profile_file_prefix = f"{out}/{role}"
        session = ort.InferenceSession(model, sess_options=plan.options, providers=plan.providers)
        sessions[role] = GraphSession(spec, session, capacity)
    if fused:  # the halves are never run by target-only steps: unprofiled sessions to build the Target with
        plan = build_session_options(ProviderChoice(), threads)
        halves = [GraphSession(spec, ort.InferenceSession(str(spec.path), sess_options=plan.options,
                                                          providers=plan.providers), capacity, cache)
                  for spec, cache in zip(halves, halves_of(sessions["target"].cache, halves[0]))]
        target = Target(*halves, Stats(), sessions["target"])
    else:
        target = Target(sessions["prefix"], sessions["suffix"], Stats())
    t0 = time.perf_counter()
    target.score(prompt, greedy=True, prefill=True)
    prefill_ms = (time.perf_counter() - t0) * 1000
    token = int(target.score([prompt[-1]], greedy=True)[-1])  # warms the one-token shapes
    target.truncate(len(prompt))
    t0 = time.perf_counter()
    for _ in range(steps):
        token = int(target.score([token], greedy=True)[-1])
        target.truncate(len(prompt))
    decode_ms = (time.perf_counter() - t0) * 1000 / steps
    graphs = {role: phases(_profile_events(Path(sessions[role].session.end_profiling())),
                           _layer_of_nodes(model), steps) for role, (model, _) in models.items()}
    return {"prefill_wall_ms": prefill_ms, "decode_wall_ms": decode_ms, "graphs": graphs}


def profile_genai(model_dir: Path, prompt: list[int], steps: int, threads: int) -> dict:
    """The same prefill and decode through onnxruntime-genai, with its session profiler on."""
    import onnxruntime_genai as og

    out = tempfile.mkdtemp(prefix="mirror-ort-profile-genai-")
    config = og.Config(str(model_dir))
    session = {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "enable_profiling": f"{out}/genai"}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": session}}}))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + steps + 2, do_sample=False, top_k=1)
    generator = og.Generator(model, params)
    t0 = time.perf_counter()
    generator.append_tokens(np.asarray(prompt, dtype=np.int32))
    prefill_ms = (time.perf_counter() - t0) * 1000
    generator.generate_next_token()  # the first one-token step, a warm-up like mirror-ort's
    t0 = time.perf_counter()
    for _ in range(steps):
        generator.generate_next_token()
    decode_ms = (time.perf_counter() - t0) * 1000 / steps
    del generator, params, model, config  # the profile is written when the last reference to the session goes
    gc.collect()
    traces = [t for t in sorted(Path(out).glob("genai*.json")) if t.stat().st_size]
    if not traces:
        raise MirrorError(f"onnxruntime-genai wrote no profile in {out}: profile with --no-genai")
    layers = _layer_of_nodes(next(Path(model_dir).glob("*.onnx")))
    return {"prefill_wall_ms": prefill_ms, "decode_wall_ms": decode_ms,
            "graphs": {"model": phases(_profile_events(traces[-1]), layers, steps)}}


def table(ours: dict, genai: dict | None, phase: str, top: int = 14) -> str:
    """Markdown: ms per step by op type (mirror-ort's graphs summed), then the time split."""
    def merged(result):
        ops, kernels, run = defaultdict(float), 0.0, 0.0
        for g in result["graphs"].values():
            for op, ms in g[phase]["ops"].items():
                ops[op] += ms
            kernels += g[phase]["kernels_ms"]
            run += g[phase]["run_ms"]
        return ops, kernels, run
    ours_ops, ours_k, ours_run = merged(ours)
    theirs = merged(genai) if genai else ({}, 0.0, 0.0)
    names = sorted(set(ours_ops) | set(theirs[0]), key=lambda n: -(ours_ops.get(n, 0) + theirs[0].get(n, 0)))[:top]
    wall = f"{phase}_wall_ms"
    lines = [f"| {phase}: op type | mirror-ort ms | onnxruntime-genai ms |", "|---|---|---|"]
    lines += [f"| {n} | {ours_ops.get(n, 0):.3f} | {theirs[0].get(n, 0):.3f} |" for n in names]
    lines.append(f"| **kernels** | {ours_k:.3f} | {theirs[1]:.3f} |")
    lines.append(f"| session overhead (in Run, outside kernels) | {ours_run - ours_k:.3f} | {theirs[2] - theirs[1]:.3f} |")
    lines.append(f"| between runs (Python, binding, sampling) | {ours[wall] - ours_run:.3f} | "
                 f"{(genai[wall] - theirs[2]) if genai else 0:.3f} |")
    lines.append(f"| **wall time per {'prompt' if phase == 'prefill' else 'token'}** | {ours[wall]:.3f} | "
                 f"{genai[wall] if genai else 0:.3f} |")
    return "\n".join(lines)


def layer_table(ours: dict, genai: dict | None) -> str:
    """Markdown: decode ms per layer, mirror-ort's graphs (the fused target, or prefix layers then suffix
    layers) beside genai's."""
    mine = {}
    offset = 0
    for role in ours["graphs"]:
        layers = ours["graphs"][role]["decode"]["layers"]
        numbered = sorted((int(k.split()[1]), v) for k, v in layers.items() if k.startswith("layer"))
        for k, v in numbered:
            mine[offset + k] = v
        offset += len(numbered)
        for part in ("embed", "head"):
            if part in layers:
                mine[f"{role} {part}"] = layers[part]
    theirs = genai["graphs"]["model"]["decode"]["layers"] if genai else {}
    lines = ["| decode: layer | mirror-ort ms | onnxruntime-genai ms |", "|---|---|---|"]
    for key in sorted(k for k in mine if isinstance(k, int)):
        lines.append(f"| {key} | {mine[key]:.3f} | {theirs.get(f'layer {key}', 0):.3f} |")
    for key in [k for k in mine if not isinstance(k, int)]:
        lines.append(f"| {key} | {mine[key]:.3f} | |")
    for part in ("embed", "head"):
        if part in theirs:
            lines.append(f"| genai {part} | | {theirs[part]:.3f} |")
    return "\n".join(lines)


def profile_ops(bundle_path, prompt_tokens: int = 128, steps: int = 32, threads: int = 2, genai: bool = True,
                cache_dir=None, log=print) -> tuple[dict, dict | None, str]:
    """Both profiles on one prompt (a built-in reading prompt, chat template, cut to ``prompt_tokens``)
    and their Markdown tables."""
    from ..bundle import Bundle
    from ..prompts import built_in_prompts
    from ..runtime.tokenizer import Tokenizer

    bundle = Bundle.load(bundle_path)
    tokenizer = Tokenizer(bundle)
    text = next(p.text for p in built_in_prompts() if p.category == "summarization")
    ids = (tokenizer.chat([{"role": "user", "content": text}]) if bundle.manifest.tokenizer.chat_template
           else tokenizer.encode(text))
    prompt = (ids * (prompt_tokens // len(ids) + 1))[:prompt_tokens]
    log(f"profiling mirror-ort's target ({bundle.precision}): prefill of {len(prompt)} tokens, {steps} decode steps")
    ours = profile_mirror_ort(bundle_path, prompt, steps, threads)
    theirs = None
    if genai:
        from ..providers import ProviderChoice
        from .context import Context, default_cache_dir
        from .genai_build import build_target

        ctx = Context(bundle, ProviderChoice(), ProviderChoice(), cache_dir=cache_dir or default_cache_dir(), log=log,
                      genai_precision=bundle.precision)
        model_dir = build_target(ctx)
        log(f"profiling onnxruntime-genai ({bundle.precision}) from {model_dir}")
        theirs = profile_genai(model_dir, prompt, steps, threads)
    markdown = "\n\n".join([table(ours, theirs, "decode"), table(ours, theirs, "prefill"), layer_table(ours, theirs)])
    return ours, theirs, markdown
