"""Arithmetic that keeps its exact IEEE meaning inside TensorFlow: after grappler, and under flush-to-zero.

A SavedModel is optimized by grappler when TF Serving (or ``tf.saved_model.load``) runs it, and some rewrites
change results in the last bit, which the libraries being reproduced do not do:

* ``x / constant`` becomes ``x * (1 / constant)`` and float32 ``1 / x`` becomes an approximate ``Reciprocal``:
  ``exact_divide`` uses ``DivNoNan``, which grappler leaves alone (its divisors here are never 0);
* chains of ``+`` become ``AddN`` and ``reduce_sum`` adds pairwise: ``sequential_sum`` uses a cumulative sum,
  which adds strictly in index order like the C loops of LightGBM, XGBoost, scikit-learn and NumPy.

TensorFlow also runs every CPU kernel with the flush-to-zero and denormals-are-zero modes on: any float op reads
a subnormal number (0 < |x| < 2**-1022 in float64) as 0, so ``tf.equal(5e-324, 0.0)`` is True, and writes
subnormal results as 0. NumPy, LightGBM, XGBoost and scikit-learn keep them. ``canonicalize_subnormals`` reads
the bit pattern instead (integer ops are not affected) and puts the smallest normal number in their place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The smallest positive normal double, 2**-1022; it stands in for the subnormal numbers of its sign.
SMALLEST_NORMAL = 2.0**-1022
_MAGNITUDE_BITS = 0x7FFF_FFFF_FFFF_FFFF
_SMALLEST_NORMAL_BITS = 1 << 52


def canonicalize_subnormals(values: Any) -> Any:
    """float64 values with every subnormal replaced by +-2**-1022 (same sign), decided on the bit pattern.

    The stand-in is read by every exported family as AutoGluon's models read the subnormal itself: LightGBM sees
    0 (both are below its 1e-35 zero threshold); XGBoost sees a present value (not an absent CSR zero) stored as
    0.0f; scikit-learn forests see float32 0; the linear model keeps its sign and that it is not zero (which
    sides of duplicated zero quantiles it falls on), and its arithmetic moves by less than 1e-307. Unlike the
    subnormal, the stand-in survives TensorFlow's flush-to-zero. NaN, zeros and normal numbers pass unchanged.
    """
    import tensorflow as tf

    bits = tf.bitcast(values, tf.int64)
    magnitude = tf.bitwise.bitwise_and(bits, tf.constant(_MAGNITUDE_BITS, tf.int64))
    subnormal = tf.logical_and(magnitude > 0, magnitude < _SMALLEST_NORMAL_BITS)
    stand_in = tf.where(bits < 0, tf.constant(-SMALLEST_NORMAL, tf.float64), tf.constant(SMALLEST_NORMAL, tf.float64))
    return tf.where(subnormal, stand_in, values)


def round_to_float32(values: Any) -> Any:
    """float64 values rounded to float32 (nearest, ties to even) and kept as float64, as ``astype(float32)`` gives.

    ``tf.cast`` to float32 and back would be wrong twice: TensorFlow flushes float32 subnormal results
    (|x| < 2**-126) to zero, and tf2onnx folds a Cast pair into nothing. Here the value is scaled by a power of
    two so that float32's last bit becomes the units digit, rounded with ``Round`` (ties to even in TensorFlow and
    ONNX) and scaled back: exact arithmetic on normal float64 numbers only. Values beyond the float32 range
    become +-inf; NaN and +-inf pass through; zeros lose their sign (no exported family reads it).
    """
    import tensorflow as tf

    magnitude = tf.abs(values)
    # Selects keyed on IsNan / IsInf stay real Wheres in ONNX; after them every operand is finite, so the
    # multiply-add form tf2onnx gives other selects is exact.
    magnitude = tf.where(tf.math.is_nan(magnitude), tf.ones_like(magnitude), magnitude)
    magnitude = tf.where(tf.math.is_inf(magnitude), tf.ones_like(magnitude), magnitude)
    positive = magnitude > 0.0
    magnitude = tf.where(positive, magnitude, tf.ones_like(magnitude))
    # Exponent e with 2**e <= |x| < 2**(e+1) where it matters (the float32 range): the logarithm may be one off
    # next to a power of two (tf2onnx even computes it in float32), the exact comparisons with powers of two
    # correct it. Outside the range one step is enough: subnormals share one unit, overflow stays overflow.
    two = tf.constant(2.0, tf.float64)
    in_range = tf.clip_by_value(magnitude, 2.0**-126, float(np.finfo(np.float32).max))
    exponent = tf.floor(exact_divide(tf.math.log(in_range), np.log(2.0)))
    exponent -= tf.cast(magnitude < tf.pow(two, exponent), tf.float64)
    exponent += tf.cast(magnitude >= tf.pow(two, exponent + 1.0), tf.float64)
    # float32 keeps 24 significant bits, and none below 2**-149 (subnormals).
    unit = tf.pow(two, tf.maximum(exponent, -126.0) - 23.0)
    rounded = tf.where(positive, tf.round(exact_divide(magnitude, unit)) * unit, tf.zeros_like(magnitude))
    negative = values < 0.0
    out = tf.where(negative, -rounded, rounded)
    # Infinities only now, each a constant operand: tf2onnx keeps such selects real Wheres.
    overflow = rounded >= 2.0**128
    out = tf.where(tf.logical_and(overflow, negative), tf.constant(-np.inf, tf.float64), out)
    out = tf.where(tf.logical_and(overflow, tf.logical_not(negative)), tf.constant(np.inf, tf.float64), out)
    out = tf.where(tf.math.is_inf(values), values, out)
    return tf.where(tf.math.is_nan(values), values, out)


def exact_divide(numerator: Any, denominator: Any) -> Any:
    """IEEE division ``numerator / denominator`` (both may be Python numbers or tensors; denominator != 0)."""
    import tensorflow as tf

    if not isinstance(numerator, tf.Tensor) and isinstance(denominator, tf.Tensor):
        numerator = tf.constant(numerator, denominator.dtype)
    if not isinstance(denominator, tf.Tensor):
        denominator = tf.constant(denominator, numerator.dtype)
    return tf.math.divide_no_nan(numerator, denominator)


def sequential_sum(values: Any, axis: int) -> Any:
    """Sum along ``axis`` strictly in index order, as a C loop ``total += x[i]`` does."""
    import tensorflow as tf

    return tf.gather(tf.cumsum(values, axis=axis), tf.shape(values)[axis] - 1, axis=axis)


# Cephes ``ndtri`` (Stephen L. Moshier, Cephes Math Library 2.8), the algorithm behind scipy.special.ndtri and
# therefore scipy.stats.norm.ppf. Rebuilt from standard ops because TensorFlow's own ``Ndtri`` op has no
# ONNX conversion. Rational approximations, highest power first: central |p - 0.5| <= 0.5 - exp(-2), then
# tails in z = sqrt(-2 log p) below 8 and from 8.
_EXP_MINUS_2 = 0.13533528323661269189
_SQRT_2PI = 2.50662827463100050242
_P0 = (-5.99633501014107895267e1, 9.80010754185999661536e1, -5.66762857469070293439e1,
       1.39312609387279679503e1, -1.23916583867381258016e0)
_Q0 = (1.95448858338141759834e0, 4.67627912898881538453e0, 8.63602421390890590575e1,
       -2.25462687854119370527e2, 2.00260212380060660359e2, -8.20372256168333339912e1,
       1.59056225126211695515e1, -1.18331621121330003142e0)
_P1 = (4.05544892305962419923e0, 3.15251094599893866154e1, 5.71628192246421288162e1,
       4.40805073893200834700e1, 1.46849561928858024014e1, 2.18663306850790267539e0,
       -1.40256079171354495875e-1, -3.50424626827848203418e-2, -8.57456785154685413611e-4)
_Q1 = (1.57799883256466749731e1, 4.53907635128879210584e1, 4.13172038254672030440e1,
       1.50425385692907503408e1, 2.50464946208309415979e0, -1.42182922854787788574e-1,
       -3.80806407691578277194e-2, -9.33259480895457427372e-4)
_P2 = (3.23774891776946035970e0, 6.91522889068984211695e0, 3.93881025292474443415e0,
       1.33303460815807542389e0, 2.01485389549179081538e-1, 1.23716634817820021358e-2,
       3.01581553508235416007e-4, 2.65806974686737550832e-6, 6.23974539184983293730e-9)
_Q2 = (6.02427039364742014255e0, 3.67983563856160859403e0, 1.37702099489081330271e0,
       2.16236993594496635890e-1, 1.34204006088543189037e-2, 3.28014464682127739104e-4,
       2.89247864745380683936e-6, 6.79019408009981274425e-9)


def _horner(x: Any, coefficients: tuple[float, ...], leading_one: bool = False) -> Any:
    """Cephes ``polevl`` (or ``p1evl`` with an implicit leading 1): Horner's rule, highest power first."""
    value = x + coefficients[0] if leading_one else x * 0.0 + coefficients[0]
    for coefficient in coefficients[1:]:
        value = value * x + coefficient
    return value


def normal_quantile(p: Any) -> Any:
    """Inverse standard normal CDF of a float64 (or float32) tensor (Cephes ``ndtri``): -inf at 0, +inf at 1."""
    import tensorflow as tf

    flipped = p > 1.0 - _EXP_MINUS_2
    y = tf.where(flipped, 1.0 - p, p)
    central = y > _EXP_MINUS_2
    w = y - 0.5
    w2 = w * w
    x_central = (w + w * exact_divide(w2 * _horner(w2, _P0), _horner(w2, _Q0, leading_one=True))) * _SQRT_2PI
    safe = tf.where(tf.logical_or(central, tf.logical_not(y > 0.0)), tf.constant(0.5, p.dtype), y)
    x = tf.sqrt(-2.0 * tf.math.log(safe))
    x0 = x - exact_divide(tf.math.log(x), x)
    z = exact_divide(1.0, x)
    near = exact_divide(z * _horner(z, _P1), _horner(z, _Q1, leading_one=True))
    far = exact_divide(z * _horner(z, _P2), _horner(z, _Q2, leading_one=True))
    tail = x0 - tf.where(x < 8.0, near, far)
    tail = tf.where(flipped, tail, -tail)
    value = tf.where(central, x_central, tail)
    inf = tf.constant(np.inf, p.dtype)
    value = tf.where(p <= 0.0, -inf, tf.where(p >= 1.0, inf, value))
    return tf.where(tf.math.is_nan(p), p, value)
