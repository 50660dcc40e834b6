"""Re-resolve the pinned requirement files from pyproject.toml.

``requirements.lock`` holds what the component image installs (``.[runtime]``); ``requirements-dev.lock`` adds
the test tools (``.[runtime,dev]``). Both are exact ``name==version`` lists resolved by pip itself.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def resolve(extras: str) -> list[str]:
    """Exact pins pip would install for ``.[extras]`` on a clean machine."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             "--report", str(report), f"{ROOT}[{extras}]"],
            check=True,
        )
        installs = json.loads(report.read_text())["install"]
    return sorted(
        f"{item['metadata']['name']}=={item['metadata']['version']}"
        for item in installs
        if item["metadata"]["name"] != "kfp-tabular"
    )


def main() -> None:
    """Write both lock files."""
    for extras, name, what in (
        ("runtime", "requirements.lock", "runtime dependencies (what the component image installs)"),
        ("runtime,dev", "requirements-dev.lock", "runtime + test dependencies (what make test installs)"),
    ):
        pins = resolve(extras)
        header = f"# Exact {what} of kfp-tabular.\n# Regenerate with: make lock\n"
        (ROOT / name).write_text(header + "\n".join(pins) + "\n")
        print(f"{name}: {len(pins)} pins")


if __name__ == "__main__":
    main()
