"""Tiny random decoders built from configs, saved as HF directories (safetensors + tokenizer)."""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CORPUS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)",
    "Translate to German: The weather is nice today, so we will go for a walk in the park.",
    "Speculative decoding drafts tokens with a small model and verifies them with a large one.",
    "Once upon a time there was a little robot who loved to count numbers: one, two, three, four.",
] * 20

ARCH_CONFIGS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 4096}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}),
}


def tiny_tokenizer(vocab_size: int):
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token=None, unk_token=None)
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return fast


def build_tiny_model(directory: Path, arch: str = "llama", layers: int = 4, vocab_size: int = 384, seed: int = 0,
                     hidden: int = 64, heads: int = 4, kv_heads: int = 2, tokenizer=None, **overrides) -> Path:
    """Save a random ``arch`` model with a real BPE tokenizer; return its directory."""
    import torch
    import transformers

    config_cls, model_cls, extra = ARCH_CONFIGS[arch]
    config = getattr(transformers, config_cls)(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
        tie_word_embeddings=True, eos_token_id=2, bos_token_id=None,
        # A wide init gives varied text with clear margins between the top logits (the
        # default 0.02 makes a random model repeat its input token forever).
        initializer_range=0.4, **{**extra, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).eval()
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    (tokenizer or tiny_tokenizer(vocab_size)).save_pretrained(directory)
    return directory
