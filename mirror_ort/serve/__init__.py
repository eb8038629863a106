"""``mirror-ort serve``: an OpenAI-compatible HTTP server over one bundle's pipeline.

``app`` builds the ASGI app, ``server`` runs it with uvicorn; ``schema`` checks requests,
``scheduler`` runs one generation at a time behind a bounded queue, ``text`` turns token ids into
stream pieces, ``responses`` writes OpenAI's bodies, ``metrics`` the Prometheus text.
"""
