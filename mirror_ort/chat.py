"""Chat templates, rendered without running code: the one renderer of runtime, distillation and calibration.

A chat template is Jinja text that comes with a model or a bundle, so it is untrusted input.
A plain ``jinja2.Environment`` lets it reach Python internals (``cycler.__init__.__globals__``
reaches ``os``); the sandbox refuses every such attribute and leaves the template only its
data: the messages, the flags and the special tokens, as transformers renders it.
"""

import json

from jinja2 import TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import MirrorError


def _raise(message):
    raise TemplateError(message)


class ChatTemplate:
    def __init__(self, template: str, bos_token: str | None = None, eos_token: str | None = None):
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals["raise_exception"] = _raise
        environment.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
        try:
            self._template = environment.from_string(template)
        except TemplateError as e:
            raise MirrorError(f"the chat template does not parse ({e}): fix chat_template or drop --chat") from None
        self.bos_token, self.eos_token = bos_token or "", eos_token or ""

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The conversation as the model reads it (special tokens written as text, as the template puts them)."""
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token)
        except SecurityError as e:
            raise MirrorError(f"the chat template tried something a template may not do ({e}): "
                              "it was refused; use a bundle whose template only formats messages") from None
        except TemplateError as e:
            raise MirrorError(f"the chat template failed on this conversation ({e})") from None


def chat_encoder(tokenizer):
    """``text -> ids`` of one user turn, for an HF tokenizer, rendered as the runtime renders it
    (the template with the tokenizer's special tokens, then encoded without adding any)."""
    if not getattr(tokenizer, "chat_template", None):
        return lambda text: tokenizer(text, add_special_tokens=True)["input_ids"]
    template = ChatTemplate(tokenizer.chat_template, tokenizer.bos_token, tokenizer.eos_token)
    return lambda text: tokenizer(template.render([{"role": "user", "content": text}]),
                                  add_special_tokens=False)["input_ids"]
