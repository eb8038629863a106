"""Tokenizers for GGUF files whose tokenizer transformers' GGUF conversion gets wrong.

Gemma 3: the GGUF holds a SentencePiece **BPE** vocabulary (each piece's score is its merge
priority), but transformers 4.57 rebuilds it as a Unigram model over those scores, which
segments common words into fragments ("world" -> "w", "or", "ld"): another token sequence
than the model was trained on. It also has no chat template (the GGUF carries none) and stops
only at ``<eos>``, while Gemma's turns end with ``<end_of_turn>``.

The fix rebuilds the SentencePiece model the GGUF was made from (pieces, scores and types
as stored; whitespace-only pieces back in SentencePiece's ``▁`` spelling, as transformers'
own GGUF converter writes them) and converts it with transformers' standard Gemma converter,
the one that made Gemma's published ``tokenizer.json``.
"""

import tempfile
from pathlib import Path

# Gemma 3's chat template (as published with the instruction-tuned models): a system message
# is folded into the first user turn, assistant turns are "model" turns.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
END_OF_TURN = "<end_of_turn>"


def sentencepiece_model(path: Path) -> bytes:
    """The serialized SentencePiece BPE model of a Gemma GGUF's tokenizer."""
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as pb

    fields = GGUFReader(str(path)).fields

    def strings(key):
        field = fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    def numbers(key):
        field = fields[key]
        return [field.parts[i][0].item() for i in field.data]

    def scalar(key):
        return fields[key].parts[-1][0].item()

    model = pb.ModelProto()
    trainer = model.trainer_spec
    trainer.model_type = pb.TrainerSpec.BPE
    trainer.byte_fallback = True
    trainer.allow_whitespace_only_pieces = True
    trainer.split_digits = True
    trainer.unk_id = scalar("tokenizer.ggml.unknown_token_id")
    trainer.bos_id = scalar("tokenizer.ggml.bos_token_id")
    trainer.eos_id = scalar("tokenizer.ggml.eos_token_id")
    trainer.pad_id = scalar("tokenizer.ggml.padding_token_id")
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = False
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    tokens = strings("tokenizer.ggml.tokens")
    trainer.vocab_size = len(tokens)
    for token, score, kind in zip(tokens, numbers("tokenizer.ggml.scores"), numbers("tokenizer.ggml.token_type")):
        piece = model.pieces.add()
        piece.piece = "▁" * len(token) if token and not token.strip(" ") else token
        piece.score, piece.type = score, kind
    return model.SerializeToString()


def gemma_tokenizer(path: Path):
    """Gemma 3's fast tokenizer rebuilt from its GGUF, with its chat template."""
    from transformers import GemmaTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "tokenizer.model"
        vocab_file.write_bytes(sentencepiece_model(path))
        tokenizer = GemmaTokenizerFast(vocab_file=str(vocab_file), from_slow=True, legacy=False)
    tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    return tokenizer


def end_of_turn_ids(tokenizer) -> list[int]:
    """Gemma's eos ids: ``<eos>`` and the end of a turn (its generation config's pair)."""
    ids = [tokenizer.eos_token_id]
    turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if turn is not None and turn != tokenizer.unk_token_id and turn not in ids:
        ids.append(turn)
    return ids
