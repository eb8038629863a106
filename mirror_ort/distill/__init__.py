"""``mirror-ort distill``: a fast draft with speculative-streaming heads, self-distilled from a target.

prompts (built-in prompt set) -> data (the target's continuations and Top-k
distributions) -> vocab (reduced draft vocabulary) -> draft_dir (initialise,
save, load) -> train (time-boxed, resumable) -> evaluate (agreement, replayed
acceptance) ; cli ties them together.
"""
