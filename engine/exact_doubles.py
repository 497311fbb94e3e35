"""The largest integer magnitude an IEEE double holds exactly.

Event times (engine/io/timestamps.py), packed positions (engine/positions.py) and int
fields that an aggregation reads as a double (docs/semantics.md section 5) all stay
within it, so every value the float64 partials hold is the value that was sent.
"""

MAX_EXACT_INTEGER = 2**53
