"""AutoGluon's global feature preprocessing, read from the fitted pipeline and rebuilt with TensorFlow ops.

``TabularPredictor`` runs every row through one fitted ``AutoMLPipelineFeatureGenerator`` before any model sees
it. For numeric, categorical and boolean columns the pipeline is, stage by stage:

1. ``AsTypeFeatureGenerator``: cast to the dtypes seen at fit; an integer column holding NaN at inference gets
   0 and is cast (truncated) to the integer dtype; a column with exactly two distinct values at fit becomes
   ``int8(value == true_value)``, so anything else, NaN included, is 0.
2. ``FillNaFeatureGenerator``: missing text (``object`` columns) becomes ``""``.
3. ``IdentityFeatureGenerator`` for numbers; ``CategoryFeatureGenerator`` for text / categories: a value
   outside the fitted ``category_map`` (unseen, or seen fewer than twice at fit) becomes NaN, then categories are
   renamed to their codes ``0..K-1``.
4. ``DropUniqueFeatureGenerator`` / ``DropDuplicatesFeatureGenerator`` only remove columns.

Every output column keeps its input column's name. The result here is one float64 tensor per AutoGluon
feature: the number itself, 0/1 for booleans, the category code (NaN when missing) for categories. Datetime and
text (n-gram, special) features cannot be rebuilt exactly and are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kfp_tabular.components.export_savedmodel.numerics import round_to_float32
from kfp_tabular.components.export_savedmodel.signature import (
    FALSE_STRINGS,
    FLOAT,
    STRING,
    TRUE_STRINGS,
    InputColumn,
    sanitize_names,
)
from kfp_tabular.errors import UnsupportedModelError

NUMERIC = "numeric"
BOOLEAN = "boolean"
CATEGORY = "category"

# Generators whose behaviour is rebuilt below; any other generator with input features blocks the export.
_SUPPORTED_GENERATORS = {
    "AsTypeFeatureGenerator",
    "FillNaFeatureGenerator",
    "IdentityFeatureGenerator",
    "CategoryFeatureGenerator",
    "DropUniqueFeatureGenerator",
    "DropDuplicatesFeatureGenerator",
}
_DESCRIPTIONS = {
    "DatetimeFeatureGenerator": "datetime",
    "TextSpecialFeatureGenerator": "text (special features)",
    "TextNgramFeatureGenerator": "text (n-grams)",
    "IsNanFeatureGenerator": "image path",
}


@dataclass(frozen=True)
class FeatureSpec:
    """How one AutoGluon feature is computed from one input column.

    Attributes:
        name: AutoGluon feature name (equal to the input column name).
        kind: ``numeric``, ``boolean`` or ``category``.
        input_dtype: Signature dtype of the source column (``float64`` or ``string``).
        cast: For numeric features, the numpy dtype AutoGluon casts to (``float64``, ``float32``, ``int64``...).
        true_values: For boolean features, the input values that map to 1 (strings or floats).
        categories: For category features, the fitted categories in code order, as strings.
        category_values: The same categories as AutoGluon holds them (``True``, ``3``, ``"red"``): what a
            client's value must equal in AutoGluon, e.g. for the parity gate's rows.
        missing_is_category: For category features of ``object`` columns: missing text is looked up as ``""``.
        fill_code: Code that replaces a missing category (``CategoryFeatureGenerator(fillna="mode")``), else None.
    """

    name: str
    kind: str
    input_dtype: str
    cast: str = "float64"
    true_values: tuple[Any, ...] = ()
    categories: tuple[str, ...] = ()
    category_values: tuple[Any, ...] = ()
    missing_is_category: bool = True
    fill_code: int | None = None


@dataclass(frozen=True)
class FeaturePlan:
    """The signature inputs and the AutoGluon features computed from them."""

    inputs: tuple[InputColumn, ...]
    features: dict[str, FeatureSpec]

    def input_for(self, column: str) -> InputColumn:
        """The signature input of an original column."""
        return next(item for item in self.inputs if item.column == column)


def _class_name(obj: Any) -> str:
    return type(obj).__name__


def _tf_dtype_for(raw_type: str) -> str:
    return FLOAT if raw_type in ("int", "float") else STRING


def _frame_raw_type(series: Any) -> str:
    kind = series.dtype.kind
    return {"f": "float", "i": "int", "u": "int", "b": "bool"}.get(kind, "object")


def _check_generators(generator: Any) -> list[list[Any]]:
    """Return the pipeline stages after checking every generator is one this module reproduces."""
    if _class_name(generator) not in ("AutoMLPipelineFeatureGenerator", "PipelineFeatureGenerator"):
        raise UnsupportedModelError(
            f"Feature generator {_class_name(generator)} is not AutoGluon's default pipeline; only "
            "AutoMLPipelineFeatureGenerator can be exported exactly. Train without a custom feature_generator."
        )
    if getattr(generator, "_is_dummy", False):
        raise UnsupportedModelError(
            "AutoGluon found no useful feature and predicts a constant; there is nothing to export. "
            "Check the training data."
        )
    blocking: dict[str, list[str]] = {}
    for stage in generator.generators:
        for gen in stage:
            name = _class_name(gen)
            if name not in _SUPPORTED_GENERATORS and gen.features_in:
                blocking.setdefault(_DESCRIPTIONS.get(name, name), []).extend(gen.features_in)
            for post in getattr(gen, "_post_generators", []):
                if _class_name(post) != "CategoryMemoryMinimizeFeatureGenerator":
                    blocking.setdefault(_class_name(post), []).extend(post.features_in)
    if blocking:
        detail = "; ".join(f"{kind}: {sorted(set(columns))}" for kind, columns in blocking.items())
        raise UnsupportedModelError(
            f"The predictor uses features that cannot be rebuilt exactly in TensorFlow ({detail}). Drop these "
            "columns (or convert them to numbers / categories) before training, then export again."
        )
    return generator.generators


def build_feature_plan(predictor: Any, frame: Any | None = None,
                       logical_types: dict[str, str] | None = None) -> FeaturePlan:
    """Read the fitted feature pipeline of a predictor into a :class:`FeaturePlan`.

    Args:
        predictor: A loaded ``TabularPredictor``.
        frame: Optional table with the original columns (e.g. the test split); gives the dtype of columns that
            AutoGluon dropped at fit, which the pipeline no longer records.
        logical_types: The column types ingest_data decided (``TableSchema.as_metadata()``), recorded in the
            signature so that clients can send, e.g., a datetime as text.

    Raises:
        UnsupportedModelError: datetime / text features, or a custom feature pipeline.
    """
    generators = predictor._learner.feature_generators
    if len(generators) != 1:
        raise UnsupportedModelError(
            f"Expected one feature generator, found {len(generators)}; train with AutoGluon's default pipeline."
        )
    pipeline = generators[0]
    stages = _check_generators(pipeline)
    flat = [gen for stage in stages for gen in stage]
    astype = next((gen for gen in flat if _class_name(gen) == "AsTypeFeatureGenerator"), None)
    fillna = next((gen for gen in flat if _class_name(gen) == "FillNaFeatureGenerator"), None)
    identity = {f for gen in flat if _class_name(gen) == "IdentityFeatureGenerator" for f in gen.features_in}
    category_gens = [gen for gen in flat if _class_name(gen) == "CategoryFeatureGenerator"]

    raw_types = dict(pipeline.feature_metadata_in.type_map_raw)
    original = list(predictor.original_features)
    for column in original:
        if column not in raw_types:
            raw_types[column] = _frame_raw_type(frame[column]) if frame is not None and column in frame else "object"
    names = sanitize_names(original)
    used = set(pipeline.features_in)
    logical_types = logical_types or {}
    inputs = tuple(
        InputColumn(name=names[c], column=c, dtype=_tf_dtype_for(raw_types[c]), raw_type=raw_types[c], used=c in used,
                    logical_type=logical_types.get(c, ""))
        for c in original
    )
    dtype_of = {item.column: item.dtype for item in inputs}

    bool_features = dict(astype._bool_features) if astype is not None else {}
    real_types = dict(astype._type_map_real_opt) if astype is not None else {}
    fill_map = dict(fillna._fillna_feature_map) if fillna is not None else {}

    features: dict[str, FeatureSpec] = {}
    for name in pipeline.features_out:
        input_dtype = dtype_of[name]
        if name in bool_features:
            features[name] = FeatureSpec(
                name, BOOLEAN, input_dtype, true_values=_true_values(bool_features[name], raw_types[name], input_dtype)
            )
        elif name in identity:
            cast = np.dtype(real_types.get(name, np.float64)).name
            if input_dtype != FLOAT:
                raise UnsupportedModelError(f"Column {name!r} is numeric for AutoGluon but not in the input data.")
            features[name] = FeatureSpec(name, NUMERIC, input_dtype, cast=cast)
        else:
            gen = next((g for g in category_gens if name in (g.category_map or {})), None)
            if gen is None:
                raise UnsupportedModelError(f"Cannot trace how AutoGluon computes feature {name!r}.")
            features[name] = _category_spec(name, gen, input_dtype, missing_to_empty=fill_map.get(name) == "")
    return FeaturePlan(inputs=inputs, features=features)


def _true_values(true_value: Any, raw_type: str, input_dtype: str) -> tuple[Any, ...]:
    """Input values that AutoGluon's ``value == true_value`` comparison maps to 1."""
    if input_dtype == FLOAT:
        return (float(true_value),)
    if raw_type == "bool" or isinstance(true_value, (bool, np.bool_)):
        return TRUE_STRINGS if bool(true_value) else FALSE_STRINGS
    return (str(true_value),)


def _category_spec(name: str, gen: Any, input_dtype: str, missing_to_empty: bool) -> FeatureSpec:
    categories = list(gen.category_map[name])
    for post in gen._post_generators:
        renamed = list(post._category_maps.get(name, range(len(categories))))
        if renamed != list(range(len(categories))):
            raise UnsupportedModelError(f"Unexpected category renaming for feature {name!r}: {renamed[:5]}...")
    fill_code = None
    if gen._fillna_map and name in gen._fillna_map:
        fill_code = categories.index(gen._fillna_map[name])
    if input_dtype != STRING:
        raise UnsupportedModelError(f"Column {name!r} is categorical for AutoGluon but numeric in the input data.")
    return FeatureSpec(
        name,
        CATEGORY,
        input_dtype,
        categories=tuple(str(c) for c in categories),
        category_values=tuple(categories),
        missing_is_category=missing_to_empty,
        fill_code=fill_code,
    )


def make_lookup_tables(plan: FeaturePlan) -> dict[str, Any]:
    """String -> code tables of the text features: category -> code, boolean text -> 1 (created eagerly).

    ``StaticHashTable`` rather than string comparisons: tf2onnx turns it into ONNX-ML ``CategoryMapper``, while
    it cannot convert ``Equal`` on strings. The tables must be created outside the traced function and kept on
    the ``tf.Module`` so that the SavedModel initializes them at load.
    """
    import tensorflow as tf

    tables = {}
    for name, spec in plan.features.items():
        if spec.input_dtype != STRING:
            continue
        if spec.kind == CATEGORY:
            keys = list(spec.categories)
            values = list(range(len(keys)))
        elif spec.kind == BOOLEAN:
            keys = [str(v) for v in spec.true_values]
            values = [1] * len(keys)
        else:
            continue
        first: dict[str, int] = {}
        for key, value in zip(keys, values, strict=True):
            if spec.kind == CATEGORY and key == "" and not spec.missing_is_category:
                continue  # "" is the missing value of category-dtype columns, never looked up
            first.setdefault(key, value)  # duplicates (e.g. 1 and "1"): the first category wins, like pandas
        if not first:
            first = {"\x00kfp-tabular-no-category": -1}
        initializer = tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(first), tf.string), tf.constant(list(first.values()), tf.int64)
        )
        tables[name] = tf.lookup.StaticHashTable(initializer, default_value=-1, name=f"lookup_{len(tables)}")
    return tables


def _is_one_of(values: Any, candidates: tuple[Any, ...]) -> Any:
    """Numeric ``value == true_value`` (NaN and anything else: False)."""
    import tensorflow as tf

    table = tf.constant(list(candidates), dtype=values.dtype)
    return tf.reduce_any(tf.equal(tf.expand_dims(values, 1), tf.expand_dims(table, 0)), axis=1)


def _numeric(values: Any, cast: str) -> Any:
    import tensorflow as tf

    if cast == "float64":
        return values
    if cast == "float32":
        # pandas .astype(float32) rounds to nearest and keeps float32 subnormals; a Cast pair would flush them to
        # 0 in TensorFlow (1e-40: present for XGBoost, missing once 0) and be folded away by tf2onnx.
        return round_to_float32(values)
    if np.dtype(cast).kind in "iu":
        # AsType fills NaN with 0 for integer columns, then astype truncates toward zero.
        filled = tf.where(tf.math.is_nan(values), tf.zeros_like(values), values)
        integers = tf.cast(tf.cast(filled, tf.int64), tf.as_dtype(np.dtype(cast)))
        return tf.cast(integers, tf.float64)
    raise UnsupportedModelError(f"Numeric dtype {cast} is not supported by the export.")


def transform_features(plan: FeaturePlan, inputs: dict[str, Any], tables: dict[str, Any],
                       names: set[str] | None = None) -> dict[str, Any]:
    """Compute AutoGluon's features from signature inputs (TensorFlow ops, float64 [N] each).

    Args:
        plan: The plan from :func:`build_feature_plan`.
        inputs: Signature tensors keyed by sanitized input name.
        tables: Lookup tables from :func:`make_lookup_tables`.
        names: Features to compute (default: all).
    """
    import tensorflow as tf

    by_column = {item.column: item for item in plan.inputs}
    out = {}
    for name, spec in plan.features.items():
        if names is not None and name not in names:
            continue
        values = inputs[by_column[name].name]
        if spec.kind == NUMERIC:
            out[name] = _numeric(values, spec.cast)
        elif spec.kind == BOOLEAN and spec.input_dtype != STRING:
            out[name] = tf.cast(_is_one_of(values, spec.true_values), tf.float64)
        elif spec.kind == BOOLEAN:
            out[name] = tf.cast(tf.equal(tables[name].lookup(values), 1), tf.float64)
        else:
            found = tables[name].lookup(values)
            codes = tf.where(found >= 0, tf.cast(found, tf.float64), tf.constant(np.nan, tf.float64))
            if spec.fill_code is not None:
                codes = tf.where(tf.math.is_nan(codes), tf.cast(spec.fill_code, tf.float64), codes)
            out[name] = codes
    return out

