"""Shared set-up for the analysis tests: the synthetic run-dir helper, loaded by path.

tests/ folders are not packages, so ``synth`` is registered under a unique module name
(``analysis_synth``) that cannot collide with another folder's helper.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("analysis_synth",
                                               Path(__file__).with_name("synth.py"))
_mod = importlib.util.module_from_spec(_spec)
sys.modules["analysis_synth"] = _mod
_spec.loader.exec_module(_mod)
