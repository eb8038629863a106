"""Speculative-streaming heads (the "multi-token prediction head per stream" variant).

Stream j maps the draft's last hidden state at position t to a hidden state that,
through the draft's shared final norm and LM head, predicts token t+2+j; the main
head predicts t+1. One draft call therefore proposes 1 + num_streams tokens.
A draft directory carries them beside its HF checkpoint as ``streams.safetensors``
and ``streams.json``.
"""

import json
from pathlib import Path

import torch
from torch import nn

STREAMS_CONFIG = "streams.json"
STREAMS_WEIGHTS = "streams.safetensors"


class ResidualMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.up = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=False)
        nn.init.zeros_(self.down.weight)  # a fresh stream starts as a copy of the main head

    def forward(self, h):
        return h + self.down(nn.functional.silu(self.up(h)))


class StreamHeads(nn.Module):
    def __init__(self, hidden_size: int, num_streams: int, intermediate_size: int):
        super().__init__()
        self.config = {"num_streams": num_streams, "hidden_size": hidden_size, "intermediate_size": intermediate_size}
        self.blocks = nn.ModuleList(ResidualMLP(hidden_size, intermediate_size) for _ in range(num_streams))

    def forward(self, hidden):
        """[B, S, H] -> [B, S, num_streams, H]."""
        return torch.stack([block(hidden) for block in self.blocks], dim=2)

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        (directory / STREAMS_CONFIG).write_text(json.dumps(self.config, indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / STREAMS_WEIGHTS))

    @classmethod
    def load(cls, directory: Path) -> "StreamHeads | None":
        """The heads saved in a draft directory, or None if it has none."""
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / STREAMS_CONFIG).exists():
            return None
        heads = cls(**json.loads((directory / STREAMS_CONFIG).read_text()))
        heads.load_state_dict(load_file(str(directory / STREAMS_WEIGHTS)))
        return heads.eval()
