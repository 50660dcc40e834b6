"""The pipeline's cores run in order on one table (ingest -> train -> evaluate -> export -> predict), no KFP.

Shared by the column-type tests and the property-based test: each step reads what the one before wrote, as the
pipeline passes artifacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp_tabular.components.ingest_data.core import IngestConfig, IngestResult, ingest

# Small, fast families that still cover a tree booster and the linear model.
TINY_MODELS = {"GBM": {"num_boost_round": 30, "min_data_in_leaf": 3}, "LR": {}}


@dataclass
class Chain:
    """Paths written by the steps that ran."""

    folder: Path
    ingest: IngestResult | None = None
    train: Any = None
    evaluation: Any = None
    export: Any = None

    def split(self, name: str) -> Path:
        return self.folder / "splits" / f"{name}.parquet"

    @property
    def model(self) -> Path:
        return self.folder / "model"

    @property
    def savedmodel(self) -> Path:
        return self.folder / "savedmodel"


def ingest_table(source: Path, folder: Path, **config: Any) -> Chain:
    chain = Chain(folder)
    chain.ingest = ingest(str(source), IngestConfig(**config), chain.split("train"), chain.split("validation"),
                          chain.split("test"), folder / "profile.md")
    return chain


def train_model(chain: Chain, label: str, models: dict | None = None, **config: Any) -> Chain:
    from kfp_tabular.components.train_autogluon.core import TrainConfig, train

    settings = {"time_limit_s": 60, "hyperparameters": json.dumps(models or TINY_MODELS), **config}
    chain.train = train(chain.split("train"), chain.split("validation"), chain.model,
                        TrainConfig(label=label, **settings), chain.folder / "leaderboard.md",
                        verbosity=0, num_cpus=1)
    return chain


def evaluate_model(chain: Chain) -> Chain:
    from kfp_tabular.components.evaluate_model.core import EvaluateConfig, evaluate

    chain.evaluation = evaluate(chain.model, chain.split("test"), EvaluateConfig(), chain.folder / "report.html")
    return chain


def export_model(chain: Chain) -> Chain:
    from kfp_tabular.components.export_savedmodel.core import ExportConfig, export

    chain.export = export(chain.model, chain.split("test"), chain.savedmodel, ExportConfig(),
                          chain.folder / "parity.md")
    return chain
