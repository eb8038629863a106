"""Committed token ids in, text pieces out: whole characters only, cut before the first stop string.

Text that could still become a stop string is held back until the next step decides; the
finished text is exactly ``tokenizer.decode(ids)`` cut at the stop, as ``Pipeline.generate`` returns.
"""


class TextStream:
    def __init__(self, tokenizer, eos_token_ids, stop: list[str]):
        self.tokenizer, self.eos, self.stop = tokenizer, set(eos_token_ids), stop
        self.ids: list[int] = []
        self.text = ""            # decoded so far (cut at the stop once one is found)
        self.sent = 0             # characters handed out as pieces
        self.stopped = False      # a stop string was found
        self.completion_tokens = 0

    def feed(self, new: list[int]) -> str:
        """The piece of text that ``new`` ids make safe to send (maybe empty)."""
        before = len(self.ids)
        self.ids += new
        self.completion_tokens = len(self.ids)
        self.text = self.tokenizer.decode(self.ids)
        cut = self._stop_at(self.text)
        if cut is not None:
            self.stopped, self.text = True, self.text[:cut]
            self.completion_tokens = self._tokens_to_stop(before)
            return self._take(cut)
        if self.text.endswith("\ufffd"):  # wait for the rest of the character
            return ""
        return self._take(len(self.text) - self._held_back(self.text))

    def finish(self) -> str:
        """The rest of the text once generation has ended."""
        return self._take(len(self.text))

    @property
    def finish_reason(self) -> str:
        if self.stopped or (self.ids and self.ids[-1] in self.eos):
            return "stop"
        return "length"

    def _take(self, end: int) -> str:
        piece = self.text[self.sent:end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return piece

    def _stop_at(self, text: str) -> int | None:
        """Where the earliest stop string begins, if any."""
        found = [i for i in (text.find(s, max(0, self.sent - len(s))) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _tokens_to_stop(self, before: int) -> int:
        """How many tokens it took to complete the stop string: the same for every method."""
        for n in range(before + 1, len(self.ids) + 1):
            if self._stop_at(self.tokenizer.decode(self.ids[:n])) is not None:
                return n
        return len(self.ids)

    def _held_back(self, text: str) -> int:
        """Characters at the end that begin some stop string."""
        return max((k for s in self.stop for k in range(min(len(s) - 1, len(text)), 0, -1)
                    if text.endswith(s[:k])), default=0)
