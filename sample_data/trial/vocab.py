"""The project's vocabulary (``schemas/vocab.py``), loaded by path.

Importing ``schemas.vocab`` normally runs ``schemas/__init__.py``, which imports pandera and
polars; the generator stays stdlib + openpyxl, so it loads the one module file directly.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_VOCAB_PATH = Path(__file__).resolve().parents[2] / "schemas" / "vocab.py"


def _load() -> object:
    name = "_chimera_trial_vocab"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _VOCAB_PATH)
    if spec is None or spec.loader is None:
        msg = f"cannot load the vocabulary from {_VOCAB_PATH}"
        raise ImportError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_vocab = _load()
AlertRuleId = _vocab.AlertRuleId  # type: ignore[attr-defined]
GenomeModel = _vocab.GenomeModel  # type: ignore[attr-defined]
Method = _vocab.Method  # type: ignore[attr-defined]
Role = _vocab.Role  # type: ignore[attr-defined]
Specimen = _vocab.Specimen  # type: ignore[attr-defined]
