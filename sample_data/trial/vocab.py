"""The project's vocabulary (``schemas/vocab.py``), loaded by path.

Importing ``schemas.vocab`` normally runs ``schemas/__init__.py``, which imports pandera and
polars; the generator stays stdlib + openpyxl, so it loads the one module file directly.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_VOCAB_PATH = Path(__file__).resolve().parents[2] / "schemas" / "vocab.py"


def _load() -> ModuleType:
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
AlertRuleId = _vocab.AlertRuleId
GenomeModel = _vocab.GenomeModel
Method = _vocab.Method
Role = _vocab.Role
Specimen = _vocab.Specimen
