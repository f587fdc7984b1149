"""Activation functions: names, parameters and numpy evaluation.

An activation is named by a string (``"relu"``, ``"gelu"``, ...), by an
:class:`Activation` object (for parameters, e.g. ``Activation("leaky_relu", slope=0.1)``),
or by a user callable (``Activation.from_callable(f, derivatives=[f1, f2, ...])``).

The Rust core evaluates built-ins natively, with exact derivatives up to 6th order and the
distributional (delta-function) derivatives of kinked activations.  On the Python side every
built-in is defined once, against an array namespace (:mod:`rgflow.activations._array`):
:meth:`Activation.numpy` evaluates that definition with numpy (the numpy samplers and the
independent numpy reference :mod:`rgflow.testing.reference` use it), and the JAX samplers
trace the same definition with ``jax.numpy``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._util.validation import real, real_array
from ._array import array_function

#: Built-in activation names and their parameters (with defaults).
BUILTIN_PARAMS: dict[str, dict[str, float]] = {
    "linear": {},
    "relu": {},
    "leaky_relu": {"slope": 0.01},
    "tanh": {},
    "erf": {},
    "sin": {},
    "gelu": {},
    "swish": {},
    "softplus": {},
    "sigmoid": {},
    "elu": {"alpha": 1.0},
    "monomial": {"p": 2.0},
}

_ALIASES = {"silu": "swish", "identity": "linear", "leakyrelu": "leaky_relu", "leaky-relu": "leaky_relu"}

#: Activations whose derivatives jump at z = 0 (the kink); their higher derivatives carry
#: delta functions, which the core integrates exactly.
KINKED = {"relu", "leaky_relu", "elu"}


class Activation:
    """An activation function sigma.

    Parameters
    ----------
    name:
        One of :data:`BUILTIN_PARAMS` (``"silu"`` is an alias of ``"swish"``).
    **params:
        Parameters of the built-in: ``slope`` for ``leaky_relu`` (negative-side slope),
        ``alpha`` for ``elu``, ``p`` (a non-negative integer) for ``monomial``.
    """

    def __init__(self, name: str, **params: float) -> None:
        if not isinstance(name, str):
            raise TypeError(f"activation name must be a str, got {type(name).__name__}")
        key = _ALIASES.get(name.lower(), name.lower())
        if key not in BUILTIN_PARAMS:
            raise ValueError(
                f"unknown activation {name!r}; choose one of {sorted(BUILTIN_PARAMS)} "
                "or pass Activation.from_callable(f, derivatives=[...])"
            )
        allowed = BUILTIN_PARAMS[key]
        unknown = set(params) - set(allowed)
        if unknown:
            raise ValueError(f"activation {key!r} takes parameters {sorted(allowed) or 'none'}, got {sorted(unknown)}")
        full = dict(allowed)
        for k, v in params.items():
            full[k] = real(f"activation parameter {k}", v, finite=True)
        if key == "monomial" and (full["p"] < 0 or full["p"] != int(full["p"])):
            raise ValueError(f"monomial power p must be a non-negative integer, got {full['p']}")
        if key == "elu" and full["alpha"] <= 0:
            raise ValueError(f"elu alpha must be positive, got {full['alpha']}")
        self.name: str = key
        self.params: dict[str, float] = full
        self.function: Callable[[np.ndarray], np.ndarray] | None = None
        self.derivatives: tuple[Callable[[np.ndarray], np.ndarray], ...] = ()
        self.label: str = key

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_callable(
        cls,
        function: Callable[[np.ndarray], np.ndarray],
        derivatives: Sequence[Callable[[np.ndarray], np.ndarray]] = (),
        name: str = "custom",
    ) -> Activation:
        """A user-defined activation.

        ``function`` and each of ``derivatives`` (sigma', sigma'', ... in order) must be
        vectorised: they take a float64 numpy array and return an array of the same shape.
        The core evaluates them in batches on quadrature nodes.  A computation that needs a
        derivative order you did not supply raises ``ValueError`` (finite differences are
        refused: they cannot reach the accuracy the recursions need).
        """
        if not callable(function):
            raise TypeError("function must be callable (a vectorised numpy function)")
        for i, d in enumerate(derivatives):
            if not callable(d):
                raise TypeError(f"derivatives[{i}] must be callable")
        self = cls.__new__(cls)
        self.name = "custom"
        self.params = {}
        self.function = function
        self.derivatives = tuple(derivatives)
        self.label = name
        probe = np.linspace(-2.0, 2.0, 5)
        for order, f in enumerate((function, *self.derivatives)):
            out = _custom_output(name, order, f(probe))
            if out.shape != probe.shape:
                raise ValueError(
                    f"custom activation derivative {order} is not vectorised: "
                    f"input shape {probe.shape} gave output shape {out.shape}"
                )
        self._warn_non_finite()
        return self

    #: Points (both signs) where a custom activation is probed for non-finite values.
    _FAR_PROBE = (5.0, 10.0, 20.0, 50.0, 100.0, 1e3, 1e4, 1e6)

    def _warn_non_finite(self) -> None:
        """Warn when the custom activation (or a derivative) is NaN/inf at a probe point away from
        the origin: quadrature at variances large enough to reach it raises there (naming the
        point), and samplers would propagate it."""
        z = np.array([s * p for p in self._FAR_PROBE for s in (1.0, -1.0)])
        for order, f in enumerate((self.function, *self.derivatives)):
            assert f is not None
            with np.errstate(all="ignore"):
                try:
                    out = np.asarray(f(z), dtype=float)
                except Exception:  # noqa: BLE001 - a probe: report, never fail the construction
                    continue
            bad = z[~np.isfinite(out)] if out.shape == z.shape else z[:0]
            if bad.size:
                zb = bad[np.argmin(np.abs(bad))]
                warnings.warn(
                    f"custom activation {self.label!r}: derivative {order} is not finite at z = {zb:g}; "
                    "expectations (theory, expect) at variances large enough to reach such points raise "
                    "there: make it finite on the whole real line (e.g. np.logaddexp instead of log(1 + exp))",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return

    # ------------------------------------------------------------------ properties
    @property
    def is_custom(self) -> bool:
        return self.name == "custom"

    @property
    def kinked(self) -> bool:
        """True for activations whose derivatives jump at z = 0 (relu, leaky_relu, elu)."""
        return self.name in KINKED

    @property
    def max_derivative(self) -> int:
        """Highest derivative order available (6 for built-ins)."""
        return len(self.derivatives) if self.is_custom else 6

    def spec(self) -> tuple[str, list[float]]:
        """(name, parameter list) as passed to the Rust core."""
        order = {"leaky_relu": ["slope"], "elu": ["alpha"], "monomial": ["p"]}.get(self.name, [])
        return self.name, [self.params[k] for k in order]

    def __repr__(self) -> str:
        if self.is_custom:
            return f"Activation.from_callable(<{self.label}>, {len(self.derivatives)} derivatives)"
        if self.params:
            ps = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
            return f"Activation({self.name!r}, {ps})"
        return f"Activation({self.name!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Activation):
            return NotImplemented
        if self.is_custom or other.is_custom:
            return self is other
        return self.name == other.name and self.params == other.params

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params.items())))) if not self.is_custom else id(self)

    def to_dict(self) -> dict[str, Any]:
        if self.is_custom:
            raise ValueError("a custom (callable) activation cannot be serialised; use a built-in")
        return {"name": self.name, **self.params}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Activation:
        d = dict(d)
        return cls(d.pop("name"), **d)

    # ------------------------------------------------------------------ numpy evaluation
    def numpy(self, z: np.ndarray, deriv: int = 0) -> np.ndarray:
        """sigma^(deriv)(z) for deriv in {0, 1, 2, 3} (regular part; at a kink the right value)."""
        z = np.asarray(z, dtype=float)
        if self.is_custom:
            assert self.function is not None
            fs = (self.function, *self.derivatives)
            if deriv >= len(fs):
                raise ValueError(
                    f"derivative {deriv} of the custom activation was not supplied; "
                    f"pass derivatives=[...] with at least {deriv} entries"
                )
            return _custom_output(self.label, deriv, fs[deriv](z))
        if deriv not in (0, 1, 2, 3):
            raise ValueError("numpy evaluation provides derivatives 0, 1, 2, 3 only")
        out = array_function(np, self.name, self.params, deriv)(z)
        return out.copy() if out is z else out

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.numpy(z, 0)


def _custom_output(label: str, order: int, value: Any) -> np.ndarray:
    """A custom activation's output as float64: complex or non-numeric output is a TypeError
    (casting would silently drop the imaginary part)."""
    what = "the function" if order == 0 else f"derivative {order}"
    return real_array(
        f"the output of the custom activation {label!r} ({what})",
        value,
        "the activation and its derivatives must return real float arrays (np.real(...) if intended)",
    )


def as_activation(a: str | Activation) -> Activation:
    """Coerce a name or an :class:`Activation` to an :class:`Activation` (TypeError otherwise)."""
    if isinstance(a, Activation):
        return a
    if isinstance(a, str):
        return Activation(a)
    raise TypeError(
        f"activation must be a name (str) or rgflow.Activation, got {type(a).__name__}; "
        "wrap a callable with rgflow.Activation.from_callable(f, derivatives=[...])"
    )
