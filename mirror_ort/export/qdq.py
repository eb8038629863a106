"""Static QDQ drafts for NPUs (``--static --draft-precision qdq``).

QNN's HTP and Intel's NPU run integer graphs fastest, so the static draft's weights become
uint8 and its activations uint16 (A16W8, the scheme QNN recommends for language models),
with QuantizeLinear/DequantizeLinear pairs that the provider folds into integer kernels.
Activation ranges are calibrated on what the draft sees in use: the target's own greedy
continuations of the distillation prompts (never SpecBench), fed through the fp32 static
draft exactly as the runtime feeds it (padded windows over the whole K/V capacity).

The attention mask's Add and the softmax after it stay float (the provider runs them in
fp16): an additive mask of -1e9 would stretch the Add's calibrated range to 1e9, and its
uint16 step (15,000) would erase every attention score.

The draft only proposes; the target verifies every token, so the draft's precision changes
speed and acceptance, never the output.
"""

from pathlib import Path

import numpy as np
import onnx

from ..bundle import GraphSpec
from ..errors import MirrorError
from ..runtime.masks import causal_mask, positions
from .quantize import quiet_quantizer

CALIBRATION_NEW_TOKENS = 48
CALIBRATION_PROMPTS = 12  # one per prompt category of the distillation set
SHAPE_OPS = {"Unsqueeze", "Reshape", "Expand", "Slice", "Cast", "Squeeze", "Identity"}


def quantize_draft_qdq(path: Path, entry: dict, source, log=print) -> dict:
    """Rewrite the static draft at ``path`` (manifest ``entry``) as an A16W8 QDQ graph in place;
    returns the manifest's record of how it was calibrated."""
    with quiet_quantizer():
        from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
        from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    spec = GraphSpec.from_entry("draft", entry, path.parent)
    sequences = calibration_sequences(source, spec.static["capacity"])
    feeds = draft_feeds(spec, sequences)
    log(f"calibrating the QDQ draft on {len(feeds)} windows of {sum(map(len, sequences))} target tokens")

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.rest = iter(feeds)

        def get_next(self):
            return next(self.rest, None)

    float_nodes = mask_softmax_nodes(onnx.load(str(path), load_external_data=False))
    quantized = path.with_name(path.stem + ".qdq.onnx")
    try:
        with quiet_quantizer():  # it warns about pre-processing and the move to opset 21
            config = get_qnn_qdq_config(str(path), Feeds(), activation_type=QuantType.QUInt16,
                                        weight_type=QuantType.QUInt8, nodes_to_exclude=float_nodes)
            quantize(str(path), str(quantized), config)
        quantized.replace(path)
    finally:
        quantized.unlink(missing_ok=True)
    return {"activations": "uint16", "weights": "uint8", "float_nodes": float_nodes,
            "calibration": {"sequences": len(sequences), "tokens": sum(map(len, sequences)), "windows": len(feeds),
                            "text": "the target's greedy continuations of distillation prompts"}}


def calibration_sequences(source, capacity: int) -> list[list[int]]:
    """One prompt per category of the distillation set plus the target's greedy continuation,
    each cut to fit the static draft's capacity."""
    import torch

    from ..chat import chat_encoder
    from ..prompts import built_in_prompts

    prompts, seen = [], set()
    for prompt in built_in_prompts():
        if prompt.category not in seen and len(prompts) < CALIBRATION_PROMPTS:
            seen.add(prompt.category)
            prompts.append(prompt)
    vocab = source.model.config.vocab_size
    encode = chat_encoder(source.tokenizer)
    sequences = []
    for prompt in prompts:
        ids = [i for i in encode(prompt.text) if i < vocab][: capacity // 2]
        if not ids:
            continue
        with torch.no_grad():
            out = source.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                        max_new_tokens=CALIBRATION_NEW_TOKENS, do_sample=False,
                                        pad_token_id=source.tokenizer.eos_token_id)
        sequences.append(out[0].tolist()[:capacity])
    if not sequences:
        raise MirrorError("no calibration text for the QDQ draft: the tokenizer encodes no prompt of the "
                          "distillation set within the model's vocabulary")
    return sequences


def draft_feeds(spec: GraphSpec, sequences: list[list[int]]) -> list[dict[str, np.ndarray]]:
    """Every input the fp32 static draft reads, call by call, as the runtime decodes each sequence:
    the prompt in windows of W, then the continuation in windows of 1, W/2 and W tokens."""
    from ..providers import ProviderChoice, create_session
    from ..runtime.session import GraphSession

    feeds = []

    class Recording:
        """The session, but each run first copies what the graph is about to read."""

        def __init__(self, session):
            self.session = session

        def __getattr__(self, name):
            return getattr(self.session, name)

        def run_with_iobinding(self, binding):
            feeds.append(graph.static_feeds())
            return self.session.run_with_iobinding(binding)

    graph = GraphSession(spec, Recording(create_session(spec.path, ProviderChoice(), role="draft")), 0)
    w = spec.static["seq"]
    for ids in sequences:
        graph.cache.length = 0
        prompt = max(1, len(ids) - CALIBRATION_NEW_TOKENS)
        cuts = [0, prompt]
        sizes = [1, max(1, w // 2), w]
        while cuts[-1] < len(ids):
            cuts.append(min(len(ids), cuts[-1] + sizes[len(cuts) % 3]))
        for start, end in zip(cuts, cuts[1:]):
            graph.run(np.array([ids[start:end]], dtype=np.int64), positions(start, end - start),
                      causal_mask(start, end - start), outputs=("logits",))
    return feeds


def mask_softmax_nodes(model) -> list[str]:
    """The Adds that apply the attention mask (reached from the input through shape-only ops)
    and the Softmax nodes that read them."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    adds, frontier = [], ["attention_mask"]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.op_type in SHAPE_OPS:
                frontier.extend(node.output)
            elif node.op_type == "Add":
                adds.append(node)
    softmaxes = [n for add in adds for n in consumers.get(add.output[0], []) if n.op_type == "Softmax"]
    if not adds or len(softmaxes) != len(adds):
        raise MirrorError("the static draft graph does not add its attention mask before a softmax as this "
                          "quantizer expects: export the draft with --draft-precision fp32")
    return [n.name for n in adds + softmaxes]
