"""``streamfeat import-feast``: a Feast repo's definitions as streamfeat definitions.

Imports no Feast (the repo's Python is read with :mod:`ast`, see ``reader``), Bytewax,
Kafka or RocksDB.
"""

from engine.feast_import.exceptions import FeastImportError
from engine.feast_import.reader import read_feast_repo
from engine.feast_import.translate import Translation, translate

__all__ = ["FeastImportError", "Translation", "read_feast_repo", "translate"]
