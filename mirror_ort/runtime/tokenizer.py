"""The bundle's tokenizer and chat template, without transformers at run time."""

import jinja2
from tokenizers import Tokenizer as _Fast

from ..bundle import Bundle
from ..errors import MirrorError


class Tokenizer:
    def __init__(self, bundle: Bundle):
        self._fast = _Fast.from_file(str(bundle.path / "tokenizer.json"))
        facts = bundle.manifest["tokenizer"]
        self.eos_token_ids = facts["eos_token_ids"]
        self.bos_token_id = facts.get("bos_token_id")
        template = facts.get("chat_template")
        self._template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template) if template else None

    def encode(self, text: str) -> list[int]:
        ids = self._fast.encode(text, add_special_tokens=False).ids
        return [self.bos_token_id, *ids] if self.bos_token_id is not None else ids

    def decode(self, ids) -> str:
        return self._fast.decode(list(ids), skip_special_tokens=True)

    def chat(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation rendered with the bundle's chat template."""
        if self._template is None:
            raise MirrorError("this bundle has no chat template: drop --chat and pass plain text")
        text = self._template.render(messages=messages, add_generation_prompt=True, bos_token="", eos_token="")
        ids = self._fast.encode(text, add_special_tokens=False).ids
        return [self.bos_token_id, *ids] if self.bos_token_id is not None else ids  # as encode: the template's {{ bos_token }}
