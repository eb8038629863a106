"""The bundle's tokenizer and chat template, without transformers at run time."""

from tokenizers import Tokenizer as _Fast

from ..bundle import Bundle
from ..chat import ChatTemplate
from ..errors import MirrorError


class Tokenizer:
    def __init__(self, bundle: Bundle):
        facts = bundle.manifest.tokenizer
        path = bundle.file(facts.file)
        try:
            self._fast = _Fast.from_file(str(path))
        except Exception as e:  # the tokenizers library raises its own exception types
            raise MirrorError(f"{path} is not a readable tokenizer ({str(e).strip()[:100]}): re-export the bundle") from None
        self.eos_token_ids = facts.eos_token_ids
        self.bos_token_id = facts.bos_token_id
        self._template = (ChatTemplate(facts.chat_template, facts.bos_token, facts.eos_token)
                          if facts.chat_template else None)

    def encode(self, text: str) -> list[int]:
        ids = self._fast.encode(text, add_special_tokens=False).ids
        return [self.bos_token_id, *ids] if self.bos_token_id is not None else ids

    def decode(self, ids) -> str:
        return self._fast.decode(list(ids), skip_special_tokens=True)

    def chat(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation rendered with the bundle's chat template (sandboxed)."""
        if self._template is None:
            raise MirrorError("this bundle has no chat template: drop --chat and pass plain text")
        return self._fast.encode(self._template.render(messages), add_special_tokens=False).ids
