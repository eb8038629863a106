"""The committed token sequence and the rules that end a generation."""


class Sequence:
    def __init__(self, prompt: list[int], max_new_tokens: int, eos_token_ids: list[int], max_length: int):
        self.tokens = list(prompt)
        self.prompt_length = len(prompt)
        self.max_new_tokens = max_new_tokens
        self.eos = set(eos_token_ids)
        self.max_length = max_length
        self.done = max_new_tokens <= 0

    @property
    def room(self) -> int:
        """How many more tokens may be committed."""
        generated = len(self.tokens) - self.prompt_length
        return max(0, min(self.max_new_tokens - generated, self.max_length - len(self.tokens)))

    def window_size(self, gamma: int) -> int:
        """Draft tokens worth verifying now: a step commits at most window + 1 tokens."""
        return max(0, min(gamma, self.room - 1))

    def commit(self, new: list[int]) -> list[int]:
        """Append what the target verified, cut at eos or the limits; return what was kept."""
        kept = new[: self.room]
        for i, token in enumerate(kept):
            if token in self.eos:
                kept = kept[: i + 1]
                self.done = True
                break
        self.tokens += kept
        if self.room == 0:
            self.done = True
        return kept
