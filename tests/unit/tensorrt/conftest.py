"""The export tests' tiny real AutoGluon predictors and exports, shared with the TensorRT tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("export_fixtures", Path(__file__).parents[1] / "export" / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

predictor_dir = _fixtures.predictor_dir
test_split = _fixtures.test_split
exported = _fixtures.exported
make_frame = _fixtures.make_frame
frame_factory = _fixtures.frame_factory
