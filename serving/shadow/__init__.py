"""Shadow runs: ask a baseline feature server (Feast's HTTP shape) and streamfeat the same
questions, compare every value, and explain each divergence by its likely cause.

- ``feast_http``: one question to a server speaking ``POST /get-online-features``, its
  answer parsed into rows, or the reason it failed (down, timeout, HTTP error, garbage).
- ``mapping``: streamfeat ``view:feature`` references <-> the baseline's names.
- ``classify``: the likely cause of one mismatch.
- ``runner``: a whole run (the ``streamfeat shadow`` command and the client's live sampler).
- ``outcome``: the JSON-lines record of one compared request (the one owner of that format).
- ``report``: outcomes -> Markdown, JSON and an SVG plot (docs/shadow.md).
"""
