"""The doctor's catalogue of known causes of NaN, Inf and dead gradients, and the fix of each (:data:`HINTS`).

Example:
    >>> HINTS["acos"].fix.split("(")[0]
    'shapegrad.safe.safe_acos'
    >>> hazard_of("AcosGrad"), hazard_of("aten::sqrt")
    ('acos', None)
"""

import dataclasses
import re

__all__ = ["HINTS", "Hint"]



@dataclasses.dataclass(frozen=True)
class Hint:
    """A known cause of bad gradients and its cure.

    Attributes:
        key: short name (``"acos"``).
        title: one line naming the hazard.
        cause: why the backend produces NaN, Inf or zero there.
        fix: the :mod:`shapegrad.safe` function(s) that avoid it, and how.
    """

    key: str
    title: str
    cause: str
    fix: str


HINTS = {
    h.key: h
    for h in [
        Hint(
            "acos",
            "acos/asin at ±1 (typically after a clip)",
            "d acos(x)/dx = -1/sqrt(1 - x^2) is infinite at ±1; a clip in front multiplies "
            "it by its zero gradient: 0 * inf = NaN.",
            "shapegrad.safe.safe_acos(x) (finite gradient, 0 beyond ±1); for the angle "
            "between two vectors use shapegrad.safe.angle_between(u, v), accurate near 0 and pi.",
        ),
        Hint(
            "sqrt",
            "sqrt or a norm at 0",
            "d sqrt(x)/dx = 1/(2 sqrt(x)) is infinite at 0, so sqrt(sum(x^2)) at the zero "
            "vector gives inf * 0 = NaN (and sqrt is NaN below 0).",
            "shapegrad.safe.safe_norm(x) for norms, shapegrad.safe.safe_sqrt(x) otherwise "
            "(gradient 0 at x <= 0).",
        ),
        Hint(
            "normalize",
            "normalising a zero vector",
            "x / |x| is 0/0 at the zero vector, and its gradient divides by |x|.",
            "shapegrad.safe.safe_normalize(x, fallback=...) (the zero vector maps to fallback, "
            "gradient 0).",
        ),
        Hint(
            "log",
            "log of 0 (or of a negative number)",
            "log(0) = -inf and d log(x)/dx = 1/x is infinite at 0; log is NaN below 0. "
            "A ReLU or a probability that underflows feeds it exact zeros.",
            "shapegrad.safe.safe_log(x) (floored at log(tiny), gradient 0 below the floor); "
            "for log-probabilities work with logits (log_softmax, from_logits=True).",
        ),
        Hint(
            "div",
            "division by 0",
            "x / 0 is ±inf or NaN (0/0), and the gradient -x/y^2 is too.",
            "shapegrad.safe.safe_div(x, y, default=...) (gradient 0 where y == 0); if the "
            "denominator is a norm, shapegrad.safe.safe_normalize.",
        ),
        Hint(
            "pow",
            "pow with a fractional exponent at 0",
            "d x^p/dx = p x^(p-1) is infinite at 0 for p < 1, and x^p is NaN below 0.",
            "shapegrad.safe.safe_sqrt for p = 1/2; otherwise the double where: "
            "where(x > 0, where(x > 0, x, 1) ** p, 0).",
        ),
        Hint(
            "atan2",
            "atan2(0, 0)",
            "the gradient of atan2(y, x) is (x, -y) / (x^2 + y^2): 0/0 at the origin, and "
            "x^2 + y^2 underflows for |x|, |y| ~ 1e-23 in float32.",
            "shapegrad.safe.safe_atan2(y, x) (value and gradient 0 at the origin); "
            "shapegrad.safe.angle_between(u, v) for angles between vectors.",
        ),
        Hint(
            "where",
            "gradient leaking through the unselected branch of a where",
            "reverse mode differentiates both branches of where(c, a, b); where the unselected "
            "branch is NaN or has an infinite derivative, 0 * inf = NaN leaks through.",
            "the double where: make the input harmless first, then select "
            "(where(c, f(where(c, x, safe_value)), other)); every shapegrad.safe function does "
            "this, e.g. shapegrad.safe.safe_sqrt / safe_log / safe_div.",
        ),
        Hint(
            "float16",
            "float16 overflow",
            "float16 overflows to inf above 65504 (squares above 256, exp above 11).",
            "compute the op in float32 (cast before it, or the mixed_float16 policy, which "
            "keeps variables in float32) and use keras.optimizers.LossScaleOptimizer; "
            "shapegrad.safe.safe_norm rescales so squares cannot overflow.",
        ),
        Hint(
            "dead",
            "exactly zero gradient",
            "a clip, minimum/maximum, ReLU or a saturated sigmoid/tanh passes exactly 0 back "
            "over the whole batch, so these parameters cannot learn from it (acos(clip(x)) "
            "is flat where it clips).",
            "keep the path differentiable: shapegrad.safe.angle_between instead of "
            "acos(clip(dot)), losses from logits instead of saturated sigmoids, or inputs that "
            "stay inside the unclipped range.",
        ),
        Hint(
            "mismatch",
            "autodiff disagrees with finite differences",
            "a custom gradient, a stop_gradient or an op whose registered gradient is not its "
            "derivative at this point (or a kink exactly at this input).",
            "check custom gradients and stop_gradient uses in this layer; shapegrad.safe "
            "functions have exact gradients away from their documented hazard points.",
        ),
        Hint(
            "input",
            "the input batch itself is not finite",
            "NaN or Inf came in with the data, not from the model.",
            "clean the data (numpy.isfinite) before it reaches the model.",
        ),
        Hint(
            "unknown",
            "an operation outside the catalogue",
            "the operation named above produced the first non-finite value.",
            "guard its dangerous inputs with the double where (see shapegrad.safe).",
        ),
    ]
}

# Operation names (Keras ops, TensorFlow op types, JAX primitives, PyTorch
# autograd nodes), lower-cased with "backward<N>", "grad" and "_" removed.
_OP_HAZARD = {
    "arccos": "acos", "acos": "acos", "arcsin": "acos", "asin": "acos",
    "sqrt": "sqrt", "rsqrt": "sqrt", "sqrtgrad": "sqrt", "rsqrtgrad": "sqrt",
    "norm": "sqrt", "linalgvectornorm": "sqrt", "euclideannorm": "sqrt",
    "normalize": "normalize", "l2normalize": "normalize",
    "log": "log", "log1p": "log", "log2": "log", "log10": "log", "xlogy": "log",
    "divide": "div", "truedivide": "div", "realdiv": "div", "div": "div", "truediv": "div",
    "reciprocal": "div", "inv": "div", "divnonan": "div",
    "power": "pow", "pow": "pow",
    "arctan2": "atan2", "atan2": "atan2",
    "where": "where", "select": "where", "selectv2": "where", "selectn": "where",
}


# The Keras name of each hazard's operation, for ops the layer ran without keras.ops (``x / y``).
CANONICAL_OP = {
    "acos": "arccos", "sqrt": "sqrt", "normalize": "normalize", "log": "log", "div": "divide",
    "pow": "power", "atan2": "arctan2", "where": "where",
}


def hazard_of(name):
    """Catalogue key for an operation name from any backend, or ``None``."""
    if not name:
        return None
    key = re.sub(r"backward\d*$|grad$", "", name.lower().split(" ")[0].replace("_", ""))
    return _OP_HAZARD.get(key)

