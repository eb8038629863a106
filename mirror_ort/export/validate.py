"""``mirror-ort validate``: is this bundle safe to ship?

Structural checks need only ONNX and ONNX Runtime: the checker passes on each
graph (external data included), each graph loads, the manifest matches each
graph's I/O and hash, and the target scores a token alone bit for bit as it scores
it inside a window (what makes sd and mirror exactly ar). Numerical parity needs the PyTorch source model: the
prefix + suffix run through the runtime's own sessions and caches, in windows of
one and several tokens on caches of several lengths, against the HF model's
full-sequence forward (final logits, final argmax, and the early-exit Top-kappa
sets computed from the hidden state after layer l_e).
"""

import time
from pathlib import Path

import numpy as np
import onnx

from ..bundle import Bundle, sha256
from ..errors import MirrorError
from ..providers import ProviderChoice, create_session
from ..runtime.masks import causal_mask, positions
from ..runtime.session import GraphSession
from ..runtime.target import FILLER_ROWS

DEFAULT_THRESHOLDS = {
    "max_logit_diff": 1e-2,      # max |logit_onnx - logit_torch| over all checked positions
    "argmax_agreement": 0.98,    # share of positions whose final argmax agrees
    "topk_agreement": 0.95,      # mean overlap of the early-exit Top-kappa sets
    "perplexity_ratio": 1.01,    # perplexity of the bundle / of the fp32 PyTorch model, on text
}
# Quantized graphs are measured against the fp32 PyTorch model: the report says what the
# precision cost; the defaults only catch a broken export (None: reported, not enforced).
THRESHOLDS_BY_PRECISION = {
    "fp32": DEFAULT_THRESHOLDS,
    "fp16": {"max_logit_diff": 1.0, "argmax_agreement": 0.9, "topk_agreement": 0.8, "perplexity_ratio": 1.05},
    "int8": {"max_logit_diff": None, "argmax_agreement": 0.8, "topk_agreement": 0.7, "perplexity_ratio": 1.15},
    "int4": {"max_logit_diff": None, "argmax_agreement": 0.3, "topk_agreement": 0.6, "perplexity_ratio": 1.5},
    "qdq": {"max_logit_diff": None, "argmax_agreement": 0.5},  # a static NPU draft (export/qdq.py)
}
PROMPTS = [
    "The capital of France is Paris, and the capital of Italy is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Translate to German: The weather is nice today, so we will go for a walk in the park.",
]
PREFILL = 8
WINDOWS = [1, 4, 1, 7, 2, 3]  # new tokens per call after the prefill: S=1 and S>1 on growing caches


def validate_bundle(bundle: Bundle, source=None, thresholds: dict | None = None, log=print) -> dict:
    """Run every check, write the report beside the manifest (``validation.json``), and return it."""
    thresholds_given = thresholds
    thresholds = {**THRESHOLDS_BY_PRECISION.get(bundle.precision, DEFAULT_THRESHOLDS), **(thresholds or {})}
    checks = [{**_check("sha256", _owner(bundle, name), lambda name=name: _same_hash(bundle, name)), "file": name}
              for name in bundle.manifest.files]
    checks.append(_check("chat_template", "bundle", lambda: _renders(bundle)))
    for role, spec in bundle.manifest.graphs.items():
        checks.append(_check("onnx_checker", role, lambda: onnx.checker.check_model(str(spec.path), full_check=False)))
        checks.append(_check("loads_in_ort", role, lambda: GraphSession(spec, create_session(spec.path, ProviderChoice()), 8)))
    broken = sorted({c["graph"] for c in checks if not c["passed"]})
    if not {"prefix", "suffix"} & set(broken):
        checks.append(_exact_windows(bundle))
    if broken:
        checks.append({"name": "parity", "passed": False, "error": f"not run: {', '.join(broken)} failed the checks above"})
    elif source is not None:
        checks += _parity(bundle, source, thresholds, thresholds_given or {})
    else:
        checks.append({"name": "parity", "passed": True, "skipped": "no PyTorch source model given"})
    report = {"passed": all(c["passed"] for c in checks), "thresholds": thresholds, "checks": checks,
              "validated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for c in checks:
        status = "skip" if c.get("skipped") else ("ok  " if c["passed"] else "FAIL")
        detail = c.get("skipped") or c.get("error") or {k: v for k, v in c.items() if k not in ("name", "passed", "graph")}
        log(f"  [{status}] {c['name']}{'/' + c['graph'] if 'graph' in c else ''}: {detail}")
    bundle.write_validation(report)
    return report


EXACT_WINDOWS = (7, 1, 5, 3, 2, 6)  # window sizes of the exact_windows check: 24 positions


def scored_alone_and_in_windows(target, ids: list[int], prompt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The target's logits for ``ids[prompt:]`` (24 tokens) after ``ids[:prompt]``: one token per
    call, then, rolled back, in windows of ``EXACT_WINDOWS`` tokens; each way through ``score``
    (the fused target where the pipeline has one), the windows once more through prefix and
    suffix (Mirror-SD's steps that send the early-exit message)."""
    target.reset()
    target.score(ids[:prompt], greedy=False)
    alone = np.stack([target.score([i], greedy=False)[-1].copy() for i in ids[prompt:]])
    cuts = np.cumsum((prompt,) + EXACT_WINDOWS)

    def windows(score):
        target.truncate(prompt)
        return np.concatenate([score(ids[a:b]).copy() for a, b in zip(cuts, cuts[1:])])
    whole = windows(lambda w: target.score(w, greedy=False, last_only=False))
    split = windows(lambda w: target.suffix(target.prefix(w)[0], greedy=False))
    return alone, whole, split


def _exact_windows(bundle: Bundle) -> dict:
    """Does the target give a token scored alone the very logits it gives it inside a window, and
    the fused target the logits of prefix + suffix? sd and mirror equal ar token for token because
    it does (runtime/target.py, runtime/fused.py). Random ids, the CPU EP."""
    from ..runtime.pipeline import Pipeline
    from ..runtime.stats import Stats

    pipe = Pipeline.from_bundle(bundle, load_draft=False, max_length=min(64, bundle.max_length - FILLER_ROWS))
    ids = [int(i) for i in np.random.default_rng(0).integers(0, bundle.vocab_size, 8 + sum(EXACT_WINDOWS))]
    alone, whole, split = scored_alone_and_in_windows(pipe.target(Stats()), ids, prompt=8)
    diff = float(max(np.abs(alone - whole).max(), np.abs(alone - split).max()))
    return {"name": "exact_windows", "graph": "prefix+suffix", "fused": pipe.fused is not None, "value": diff,
            "positions": len(alone), "passed": diff == 0.0}


def _check(name: str, role: str, fn) -> dict:
    try:
        fn()
        return {"name": name, "graph": role, "passed": True}
    except Exception as e:  # the report names every failure instead of stopping at the first
        return {"name": name, "graph": role, "passed": False, "error": str(e).strip().splitlines()[0][:300]}


def _same_hash(bundle: Bundle, name: str) -> None:
    if sha256(bundle.file(name)) != bundle.manifest.files[name]:
        raise MirrorError(f"{name} does not match its sha256 in the manifest")


def _renders(bundle: Bundle) -> None:
    """The chat template (if any) renders a conversation in the sandbox: it is safe and well formed."""
    from ..chat import ChatTemplate

    facts = bundle.manifest.tokenizer
    if facts.chat_template:
        ChatTemplate(facts.chat_template, facts.bos_token, facts.eos_token).render(
            [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."},
             {"role": "user", "content": "How are you?"}])


def _owner(bundle: Bundle, name: str) -> str:
    """The graph role a file belongs to (its graph or external data), else "bundle"."""
    return next((role for role, g in bundle.manifest.graphs.items() if name in (g.file, g.file + ".data")), "bundle")


def _parity(bundle: Bundle, source, thresholds: dict, user_thresholds: dict) -> list[dict]:
    import torch

    model, tokenizer = source.model, source.tokenizer
    exit_layer, kappa, vocab = bundle.exit_layer, bundle.kappa, bundle.vocab_size
    length = PREFILL + sum(WINDOWS)
    prompts = []
    for text in PROMPTS:
        ids = [i for i in tokenizer(text, add_special_tokens=False)["input_ids"] if i < vocab]
        ids = (ids * (length // max(len(ids), 1) + 1))[:length]
        prompts.append(ids)
    prompts.append(list(np.random.default_rng(0).integers(0, vocab, length)))  # off-distribution ids
    capacity = length + FILLER_ROWS  # the target's attention writes one row past each window
    prefix = GraphSession(bundle.graph("prefix"), create_session(bundle.graph("prefix").path, ProviderChoice()), capacity)
    suffix = GraphSession(bundle.graph("suffix"), create_session(bundle.graph("suffix").path, ProviderChoice()), capacity)
    draft = draft_module = None
    # A static draft (--static) runs through the runtime's padding path, like any run; it is
    # skipped only when its fixed K/V capacity cannot hold the check's sequence.
    static = bundle.graph("draft").static if bundle.has_draft else None
    skipped_draft = static is not None and static["capacity"] < length
    if bundle.has_draft and not skipped_draft:
        draft = GraphSession(bundle.graph("draft"), create_session(bundle.graph("draft").path, ProviderChoice()), length)
        draft_module = _draft_module(bundle, source)

    diffs, argmax_hits, topk_overlap, draft_diffs, draft_hits, n = [], 0, [], [], 0, 0
    exit_covers = []  # per text position: is the final next token among the early-exit Top-kappa?
    plain_covers = []  # ... among the Top-kappa of the plain logit lens (no exit adapter)
    adapter = _exit_adapter(bundle, model)
    exit_vocab = bundle.manifest.early_exit.vocab_map  # the early exit scores only these ids (export/split.py)
    exit_ids = torch.tensor(bundle.token_ids(exit_vocab)) if exit_vocab else None

    def top_exit(logits):
        if exit_ids is None:
            return torch.topk(logits, kappa, dim=-1).indices.numpy()
        return exit_ids[torch.topk(logits[:, exit_ids], kappa, dim=-1).indices].numpy()
    nll_torch, nll_bundle = [], []  # next-token negative log-likelihood on the text prompts
    from tqdm import tqdm

    # a bar on a terminal (a large vocabulary makes each sequence take a while), nothing in a log file
    for index, ids in enumerate(tqdm(prompts, desc="parity with PyTorch", unit="sequence", leave=False, disable=None)):
        bundle_logits = []
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True)
            ref_logits = out.logits[0].numpy()
            exit_hidden = out.hidden_states[exit_layer]
            plain_exit = top_exit(model.lm_head(model.model.norm(exit_hidden))[0])
            ref_exit = top_exit(model.lm_head(model.model.norm(adapter(exit_hidden) if adapter else exit_hidden))[0])
            ref_draft = draft_module and _draft_logits(draft_module, ids)
        for session in (prefix, suffix, draft):
            if session is not None:
                session.cache.length = 0
        start = 0
        for seq in [PREFILL, *WINDOWS]:
            tokens = np.array([ids[start:start + seq]], dtype=np.int64)
            pos, mask = positions(start, seq), causal_mask(start, seq)
            p = prefix.run(tokens, pos, mask, outputs=("hidden", "exit_ids"))
            s = suffix.run(p["hidden"], pos, mask, outputs=("logits",))
            logits = s["logits"][0]
            bundle_logits.append(logits.copy())
            want = ref_logits[start:start + seq]
            diffs.append(float(np.abs(logits - want).max()))
            argmax_hits += int((logits.argmax(-1) == want.argmax(-1)).sum())
            for got, ref in zip(p["exit_ids"][0], ref_exit[start:start + seq]):
                topk_overlap.append(len(set(got.tolist()) & set(ref.tolist())) / kappa)
            if index < len(PROMPTS):
                exit_covers += (p["exit_ids"][0] == logits.argmax(-1)[:, None]).any(-1).tolist()
                plain_covers += (plain_exit[start:start + seq] == logits.argmax(-1)[:, None]).any(-1).tolist()
            if draft is not None:
                d = draft.run(tokens, pos, mask, outputs=("logits",))["logits"][0]
                draft_diffs.append(float(np.abs(d - ref_draft[start:start + seq]).max()))
                draft_hits += int((d.argmax(-1) == ref_draft[start:start + seq].argmax(-1)).sum())
            n += seq
            start += seq
        if index < len(PROMPTS):
            nll_torch.append(_nll(ref_logits, ids))
            nll_bundle.append(_nll(np.concatenate(bundle_logits), ids))

    max_diff, agreement, overlap = max(diffs), argmax_hits / n, float(np.mean(topk_overlap))
    checks = [
        {"name": "max_logit_diff", "graph": "prefix+suffix", "value": max_diff,
         "passed": _within(max_diff, thresholds["max_logit_diff"])},
        {"name": "argmax_agreement", "graph": "prefix+suffix", "value": agreement,
         "passed": agreement >= thresholds["argmax_agreement"]},
        {"name": "topk_agreement", "graph": "prefix", "value": overlap, "kappa": kappa,
         "passed": overlap >= thresholds["topk_agreement"]},
    ]
    # Not a pass/fail check: Mirror-SD's overlap mass, which bounds the draft tree's reuse
    # (fallback >= 1 - overlap); a deeper --exit-layer or a larger --kappa raises it.
    checks.append({"name": "exit_overlap", "graph": "prefix+suffix", "value": float(np.mean(exit_covers)),
                   "without_adapter": float(np.mean(plain_covers)), "adapter": adapter is not None,
                   "kappa": kappa, "positions": len(exit_covers), "passed": True})
    ppl_torch, ppl_bundle = float(np.exp(np.mean(nll_torch))), float(np.exp(np.mean(nll_bundle)))
    checks.append({"name": "perplexity", "graph": "prefix+suffix", "value": ppl_bundle, "torch_fp32": ppl_torch,
                   "ratio": ppl_bundle / ppl_torch, "passed": ppl_bundle / ppl_torch <= thresholds["perplexity_ratio"]})
    if draft is not None:
        d_max, d_agree = max(draft_diffs), draft_hits / n
        draft_precision = bundle.graph("draft").precision
        limits = {**THRESHOLDS_BY_PRECISION[draft_precision], **user_thresholds}
        checks += [
            {"name": "max_logit_diff", "graph": "draft", "value": d_max, "passed": _within(d_max, limits["max_logit_diff"])},
            {"name": "argmax_agreement", "graph": "draft", "value": d_agree,
             "passed": d_agree >= limits["argmax_agreement"]},
        ]
    for c in checks:
        c.setdefault("positions", n)
    if skipped_draft:
        checks.append({"name": "parity", "graph": "draft", "passed": True,
                       "skipped": f"the static draft's capacity {static['capacity']} is below the check's "
                                  f"{length} positions"})
    return checks


def _within(value: float, limit: float | None) -> bool:
    return limit is None or value <= limit


def _nll(logits: np.ndarray, ids) -> float:
    """Mean negative log-likelihood of each next token under float64 log-softmax."""
    z = logits[:-1].astype(np.float64)
    z -= z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(ids) - 1), ids[1:]].mean())


def _exit_adapter(bundle: Bundle, model):
    """The bundle's exit adapter as a PyTorch module (from the draft directory it was exported from)."""
    described = bundle.manifest.early_exit.adapter
    if not described:
        return None
    from .exit_adapter import load_exit_adapter

    return load_exit_adapter(Path(described["source"]), model)


def _draft_module(bundle: Bundle, source):
    """The PyTorch draft, rebuilt from the manifest's draft source."""
    from .draft_source import draft_module, resolve_draft

    choice = resolve_draft(bundle.graph("draft").source, source.description, source.model.config.num_hidden_layers)
    return draft_module(choice, source)[0]


def _draft_logits(module, ids):
    import torch

    n = len(ids)
    past = [torch.zeros(1, 0, module.span.num_kv_heads, module.span.head_dim) for _ in range(2 * len(module.span.layers))]
    out = module(torch.tensor([ids]), torch.arange(n)[None], torch.from_numpy(causal_mask(0, n)), torch.arange(n), *past)
    return out[0][0].numpy()
