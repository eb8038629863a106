"""Request bodies of ``/v1/chat/completions`` and ``/v1/completions``: types, ranges, the prompt's tokens.

Every check raises an ApiError (400) naming the field, so a bad request never reaches the pipeline
as a Python exception. Decoding values are held to ``GenerationConfig``'s own types and rules,
under the request's names (``max_tokens`` for ``max_new_tokens``); what depends on the bundle
(``gamma`` with ``max_branches``, ``kappa``, a draft) is checked by ``Pipeline.settings``, whose
MirrorError becomes a 400 with its message. All of it happens before the request is queued.
"""

import json
from dataclasses import dataclass, field

from ..errors import MirrorError
from ..generation import GenerationConfig
from .errors import ApiError, invalid

MAX_STOP_SEQUENCES = 4
# Decoding settings a request may set, by their name in the request (OpenAI's, then mirror-ort's own).
SETTINGS = {"max_tokens": "max_new_tokens", "temperature": "temperature", "top_p": "top_p", "seed": "seed",
            "method": "method", "gamma": "gamma", "kappa": "kappa", "max_branches": "max_branches", "top_k": "top_k",
            "draft": "draft"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# OpenAI fields that would change what is generated and that this server does not implement: a
# request that sets one gets a 400 rather than an answer that silently ignores it.
UNSUPPORTED = {
    "tools": None, "functions": None, "logit_bias": None, "logprobs": (False,), "top_logprobs": (0,),
    "presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "echo": (False,), "best_of": (1,),
    "suffix": ("",), "audio": None, "prediction": None,
}


@dataclass
class GenerationRequest:
    """A validated request: the prompt's token ids and the keyword arguments of ``Pipeline.steps``."""

    kind: str                   # "chat" or "completion"
    tokens: list[int]
    decoding: dict
    stream: bool = False
    include_usage: bool = False
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServedModel:
    """What validation needs to know of the loaded bundle. ``defaults``: the server's decoding options
    (None: the bundle's); ``settings``: ``Pipeline.settings``, which checks them against the bundle."""

    name: str
    tokenizer: object  # mirror_ort.runtime.tokenizer.Tokenizer
    capacity: int
    vocab_size: int
    has_chat_template: bool
    defaults: dict
    settings: object


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON ({e}): send one JSON object",
                       code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body is {_kind(body)}, not an object: send one JSON object",
                       code="invalid_json")
    return body


def parse_chat(body: dict, model: ServedModel) -> GenerationRequest:
    _check_common(body, model.name)
    messages = _messages(body.get("messages"))
    if not model.has_chat_template:
        raise invalid("messages", "this bundle has no chat template: send a plain prompt to /v1/completions",
                      code="no_chat_template")
    try:
        tokens = model.tokenizer.chat(messages)
    except MirrorError as e:  # the template refused this conversation
        raise invalid("messages", " ".join(str(e).split())) from None
    return _request("chat", body, tokens, model, "messages")


def parse_completion(body: dict, model: ServedModel) -> GenerationRequest:
    _check_common(body, model.name)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        tokens = model.tokenizer.encode(prompt) if prompt else []
    elif isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        vocab = model.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise invalid("prompt", f"'prompt' has token ids outside 0..{vocab - 1}: send ids of this model's tokenizer")
        tokens = list(prompt)
    elif isinstance(prompt, list) and len(prompt) > 1:
        raise invalid("prompt", f"'prompt' holds {len(prompt)} prompts: send one prompt per request")
    else:
        raise invalid("prompt", f"'prompt' must be a string or an array of token ids, got {_kind(prompt)}",
                      code="invalid_type")
    return _request("completion", body, tokens, model, "prompt")


def _check_common(body: dict, model: str) -> None:
    name = body.get("model")
    if name is not None and not isinstance(name, str):
        raise invalid("model", f"'model' must be a string, got {_kind(name)}", code="invalid_type")
    if name is not None and name != model:
        raise ApiError(404, f"the model {name!r} does not exist here: this server serves {model!r}",
                       param="model", code="model_not_found")
    n = _integer(body, "n", 1, minimum=1)
    if n != 1:
        raise invalid("n", f"'n' is {n} but this server returns one choice per request: send n=1 (or leave it out)")
    for name, allowed in UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and (allowed is None or value not in allowed):
            raise invalid(name, f"'{name}' is not supported by this server: leave it out", code="unsupported_parameter")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise invalid("response_format", "only response_format {\"type\": \"text\"} is supported: leave it out",
                      code="unsupported_parameter")


def _request(kind: str, body: dict, tokens: list[int], model: ServedModel, prompt_param: str):
    capacity = model.capacity
    if not tokens:
        raise invalid(prompt_param, "the prompt is empty: send some text")
    if len(tokens) >= capacity:
        raise invalid(prompt_param, f"the prompt has {len(tokens)} tokens but the capacity is {capacity}: shorten "
                      "it or start the server with a larger --max-length", code="context_length_exceeded")
    decoding = {}
    for name, setting in SETTINGS.items():
        if name == "max_tokens" and kind == "chat" and body.get("max_completion_tokens") is not None:
            name = "max_completion_tokens"  # the newer name of max_tokens wins
        value = _setting(body.get(name), name, setting)
        decoding[setting] = value if value is not None else model.defaults.get(setting)
    try:
        model.settings(**decoding)
    except MirrorError as e:
        raise ApiError(400, str(e)) from None
    stream = _boolean(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("stream_options", f"'stream_options' must be an object, got {_kind(options)}",
                      code="invalid_type")
    include_usage = bool(options) and _boolean(options, "include_usage", False, name="stream_options.include_usage")
    return GenerationRequest(kind, tokens, decoding, stream, include_usage, _stop(body.get("stop")))


def _messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", f"'messages' must be a non-empty array of messages, got {_kind(messages)}",
                      code="invalid_type" if not isinstance(messages, list) else "invalid_value")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise invalid(where, f"'{where}' must be an object with role and content, got {_kind(m)}",
                          code="invalid_type")
        role = m.get("role")
        if role not in ROLES:
            raise invalid(f"{where}.role", f"'{where}.role' is {json.dumps(role)}: use system, developer, user or "
                          "assistant")
        out.append({"role": ROLES[role], "content": _content(m.get("content"), f"{where}.content")})
    return out


def _content(content, where: str) -> str:
    """Message text: a string, or an array of text parts (joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid(where, f"'{where}' may hold only text parts ({{\"type\": \"text\", \"text\": ...}}): "
                              "this model reads text only")
            parts.append(part["text"])
        return "".join(parts)
    raise invalid(where, f"'{where}' must be a string or an array of text parts, got {_kind(content)}",
                  code="invalid_type")


def _stop(stop) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise invalid("stop", f"'stop' must be a non-empty string or an array of them, got {_kind(stop)}",
                      code="invalid_type")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise invalid("stop", f"'stop' holds {len(stops)} sequences: send at most {MAX_STOP_SEQUENCES}")
    return stops


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(body: dict, name: str, default, minimum: int):
    value = body.get(name)
    if value is None:
        return default
    if not _is_int(value):
        raise invalid(name, f"'{name}' must be an integer, got {_kind(value)}", code="invalid_type")
    if value < minimum:
        raise invalid(name, f"'{name}' must be >= {minimum}, got {value}")
    return value


def _setting(value, name: str, setting: str):
    """A decoding value held to GenerationConfig's type and rule for ``setting``; None if not given."""
    if value is None:
        return None
    kind = GenerationConfig.TYPES.get(setting, int)
    numeric = kind is float and isinstance(value, (int, float))
    if isinstance(value, bool) or not (numeric or isinstance(value, kind)):
        raise invalid(name, f"'{name}' must be {KINDS.get(kind, 'an integer')}, got {_kind(value)}",
                      code="invalid_type")
    ok, rule = GenerationConfig.RULES[setting]
    if not ok(value):
        raise invalid(name, f"'{name}' is {json.dumps(value)}: it {rule}" if rule.startswith("must") else
                      f"'{name}' is {json.dumps(value)}: {rule}")
    return float(value) if kind is float else value


KINDS = {float: "a number", str: "a string", (int, str): "an integer or \"auto\"", (int, type(None)): "an integer"}


def _boolean(body: dict, key: str, default: bool, name: str | None = None) -> bool:
    name = name or key
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(name, f"'{name}' must be true or false, got {_kind(value)}", code="invalid_type")
    return value


def _kind(value) -> str:
    """The JSON type of a value, as error messages name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {json.dumps(value)}"
    if isinstance(value, str):
        return f"the string {json.dumps(value[:40])}"
    return "an array" if isinstance(value, list) else "an object"
