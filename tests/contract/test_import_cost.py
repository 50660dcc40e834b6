"""Importing the pipelines and compiling must stay cheap: no TensorFlow, AutoGluon, SHAP or TensorRT."""

import subprocess
import sys

HEAVY = ("tensorflow", "autogluon", "shap", "tensorrt", "lightgbm", "xgboost", "catboost", "sklearn")

SCRIPT = """
import sys, tempfile, pathlib
import kfp_tabular.pipelines
from kfp_tabular.pipelines.compile import compile_pipeline
compile_pipeline(pathlib.Path(tempfile.mkdtemp()) / "p.yaml")
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[1:]))
print(",".join(heavy))
"""


def test_import_and_compile_leave_heavy_libraries_unimported():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *HEAVY], check=True, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "", f"imported at compile time: {result.stdout.strip()}"


def test_cli_help_is_cheap():
    result = subprocess.run(
        [sys.executable, "-c", "import sys; import kfp_tabular.cli; print(','.join(sorted(set(sys.modules) & {'kfp', 'tensorflow', 'autogluon'})))"],
        check=True, capture_output=True, text=True, timeout=60,
    )
    assert result.stdout.strip() == ""
