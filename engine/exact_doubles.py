"""The largest integer magnitude an IEEE double holds exactly.

Event times (engine/io/timestamps.py), packed positions (engine/positions.py) and int
fields that an aggregation reads as a double (docs/semantics.md section 5) all stay
within it, so every value the float64 partials hold is the value that was sent.
"""

MAX_EXACT_INTEGER = 2**53

#: Two correct evaluations of one float value (merged tile by tile online, event by event
#: offline) may differ in the last bits: they count as equal within this relative
#: tolerance, and this absolute one for values that should be zero (docs/semantics.md
#: section 3, "Numbers"). consistency-check and shadow runs compare with it.
FLOAT_TOLERANCE = 1e-9
