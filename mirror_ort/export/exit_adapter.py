"""A trained early-exit head: a small adapter between layer l_e's hidden state and the shared head.

The plain early exit applies the final norm and LM head to the hidden state after l_e
layers (the logit lens): halfway up a 30-layer model that puts the final token among the
Top-8 about a third of the time, and Mirror-SD's draft tree can only be reused that often.
The adapter (LayerSkip and Kangaroo train one for the same reason) is a residual low-rank MLP,
    h + up(silu(down(rmsnorm(h))))
trained on the target's own hidden states and distributions to rank the final token high.
``up`` starts at zero, so an untrained adapter is the logit lens. It sits inside ``prefix.onnx``
before the head; it changes only the early-exit message, never a committed token.

On disk, beside a distilled draft: ``exit_adapter.json`` (layer, rank, the target's embedding
hash, how it was trained) and ``exit_adapter.safetensors``.
"""

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import MirrorError

CONFIG = "exit_adapter.json"
WEIGHTS = "exit_adapter.safetensors"
FORMAT = "mirror-ort-exit-adapter/1"


class ExitAdapter(nn.Module):
    def __init__(self, hidden_size: int, rank: int, exit_layer: int, eps: float = 1e-5):
        super().__init__()
        self.config = {"hidden_size": hidden_size, "rank": rank, "exit_layer": exit_layer, "eps": eps}
        self.norm_weight = nn.Parameter(torch.ones(hidden_size))
        self.down = nn.Linear(hidden_size, rank, bias=False)
        self.up = nn.Linear(rank, hidden_size, bias=False)
        nn.init.zeros_(self.up.weight)
        self.eps = eps

    def forward(self, hidden):
        x = nn.functional.rms_norm(hidden, (hidden.shape[-1],), self.norm_weight, self.eps)
        return hidden + self.up(nn.functional.silu(self.down(x)))

    @property
    def exit_layer(self) -> int:
        return self.config["exit_layer"]

    def save(self, directory: Path, embedding_sha256: str, training: dict | None = None) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        facts = {"format": FORMAT, **self.config, "target_embedding_sha256": embedding_sha256,
                 "training": training or {}}
        (directory / CONFIG).write_text(json.dumps(facts, indent=2) + "\n")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS))

    def describe(self, source: str) -> dict:
        """What the manifest records of the adapter (``early_exit.adapter``)."""
        return {"kind": "residual low-rank MLP", "rank": self.config["rank"], "source": source}


def has_exit_adapter(directory) -> bool:
    return (Path(directory) / CONFIG).is_file()


def load_exit_adapter(directory: Path, target) -> ExitAdapter:
    """The adapter saved in ``directory``, checked against the target it was trained on."""
    from safetensors.torch import load_file

    from .draft_dir import embedding_sha256

    directory = Path(directory)
    try:
        facts = json.loads((directory / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MirrorError(f"{directory / CONFIG} is unreadable ({e}): distil the adapter again") from None
    if facts.get("format") != FORMAT:
        raise MirrorError(f"{directory / CONFIG} holds format {facts.get('format')!r}; this mirror-ort reads {FORMAT!r}")
    if facts["target_embedding_sha256"] != embedding_sha256(target):
        raise MirrorError(f"the exit adapter in {directory} was trained on another target: export it with that "
                          "target, or export with --no-exit-adapter")
    adapter = ExitAdapter(facts["hidden_size"], facts["rank"], facts["exit_layer"], facts["eps"])
    adapter.load_state_dict(load_file(str(directory / WEIGHTS)))
    return adapter.eval()
