"""``mirror-ort bench``: SpecBench prompts through ar, sd, mirror and the peers a user would
otherwise pick (onnxruntime-genai, transformers), timed fairly, compared token by token.

Modules, one concept each:

* ``dataset``: SpecBench JSONL -> prompts (category, turn, chat messages).
* ``alloc``: the ``shared`` / ``split`` thread allocations.
* ``methods``: the row abstraction and the registry of methods (``ar``, ``sd``, ``mirror``).
* ``peer_models``: the bundle's target and draft as PyTorch models (for the peers).
* ``hf_peer``: transformers ``generate`` and assisted generation.
* ``genai_build`` / ``genai_peer``: onnxruntime-genai models (built once, cached) and decoding.
* ``runner``: warm-up, then every row on every prompt, interleaved prompt by prompt.
* ``report``: aggregates, the text tables and the JSON; ``plot``: the speedup chart.
* ``cli``: the click command.
"""
