"""Typed doors into the few special functions of scipy that the statistics use.

scipy ships no type information, so every call into it goes through here and comes
back as a plain ``float`` or a float64 array; the rest of the package stays checked by
``mypy --strict``. The ``scipy.special`` ufuncs are used rather than
``scipy.stats`` distributions because they are two orders of magnitude faster, and
the decision rule runs after every report.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy import optimize as _optimize  # type: ignore[import-untyped]
from scipy import special as _special

FloatArray = npt.NDArray[np.float64]
ArrayLike = FloatArray | float

_SQRT2 = math.sqrt(2.0)


def norm_ppf(p: float) -> float:
    """The standard normal quantile, Φ⁻¹(p)."""
    return float(_special.ndtri(p))


def norm_sf(z: float) -> float:
    """The standard normal upper tail, 1 - Φ(z), accurate far into the tail."""
    return 0.5 * math.erfc(z / _SQRT2)


def chi2_sf(statistic: float, dof: int) -> float:
    """The chi-square upper tail P(χ²_dof ≥ statistic)."""
    return float(_special.chdtrc(dof, statistic))


def betainc(a: ArrayLike, b: ArrayLike, x: ArrayLike) -> FloatArray:
    """The regularised incomplete beta function I_x(a, b), elementwise."""
    return np.asarray(_special.betainc(a, b, x), dtype=np.float64)


def gauss_legendre(points: int) -> tuple[FloatArray, FloatArray]:
    """Nodes and weights of the ``points``-point Gauss-Legendre rule on [-1, 1]
    (G. H. Golub and J. H. Welsch (1969), "Calculation of Gauss quadrature rules",
    Mathematics of Computation 23:221-230, as numpy computes them)."""
    nodes, weights = np.polynomial.legendre.leggauss(points)
    return np.asarray(nodes, dtype=np.float64), np.asarray(weights, dtype=np.float64)


def beta_ppf(q: float, a: float, b: float) -> float:
    """The q-quantile of Beta(a, b)."""
    return float(_special.betaincinv(a, b, q))


def logsumexp(values: FloatArray) -> float:
    """log Σ exp(values), without overflow (plain numpy: scipy's version carries
    array-API overhead that dominates for the short sums used here)."""
    top = float(np.max(values))
    return top + math.log(float(np.sum(np.exp(values - top))))


def find_root(f: Callable[[float], float], low: float, high: float) -> float:
    """The root of ``f`` between ``low`` and ``high`` (Brent's method); the signs of
    ``f(low)`` and ``f(high)`` must differ."""
    return float(_optimize.brentq(f, low, high, xtol=1e-12, rtol=1e-12, maxiter=200))
