"""Run onnxruntime-genai's model builder (``python -m onnxruntime_genai.models.builder``)
in this environment: ``python -m mirror_ort.bench.genai_builder_launch ARGS...``.

onnxruntime-genai 0.18's builder imports model classes that transformers 4.57 (the
version mirror-ort pins) does not have yet (``Qwen3_5ForConditionalGeneration``, ...),
at module level, even for a Llama. The classes it cannot import are replaced by empty
placeholders before the builder runs; the builder never touches them for the model
families mirror-ort exports. Nothing else is changed.
"""

import importlib
import runpy
import sys

NEEDED = ("AutoModelForCausalLM", "AutoModelForSpeechSeq2Seq", "AutoTokenizer", "Gemma3ForConditionalGeneration",
          "GenerationConfig", "Lfm2VlForConditionalGeneration", "Mistral3ForConditionalGeneration",
          "Qwen2_5_VLForConditionalGeneration", "Qwen3_5ForConditionalGeneration",
          "Qwen3_5MoeForConditionalGeneration", "Qwen3VLForConditionalGeneration", "Qwen2ForCausalLM")


def main(argv: list[str]) -> None:
    missing = []
    for name in NEEDED:
        try:
            getattr(importlib.import_module("transformers"), name)
        except (AttributeError, ImportError, RuntimeError):
            missing.append(name)
    # transformers swaps its lazy module in sys.modules while resolving names: patch the current one
    module = sys.modules["transformers"]
    for name in missing:
        setattr(module, name, type(name, (), {"__doc__": "placeholder: not in this transformers"}))
    if missing:
        print(f"mirror-ort: placeholders for transformers classes this version lacks: {', '.join(missing)}",
              file=sys.stderr)
    sys.argv = ["onnxruntime_genai.models.builder", *argv]
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
