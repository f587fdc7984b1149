"""One network at finite width: the fully trained prediction (∞.141) from the network's own z, Ĥ,
dĤ, ddIĤ and ddIIĤ at initialisation (spec ``learning.md`` §0 "Differentials", §4.4).

The differentials come from JAX autodiff (float64): with v_c = λ ∇_θ z_c for a composite index
c = (i, δ) ↦ i·N + δ (output neuron i, input δ), Ĥ_{c1c2} = v_{c1}·∇z_{c2},
dĤ_{c0c1c2} = ∂²z_{c0}[v_{c1}, v_{c2}] (11.8), ddIĤ_{c0c1c2c3} = ∂³z_{c0}[v_{c1}, v_{c2}, v_{c3}] (∞.5),
ddIIĤ_{c1c2c3c4} = (∇²z_{c1} v_{c3})ᵀ λ (∇²z_{c2} v_{c4}) (∞.7).

(∞.141) is evaluated over composite (j, α̃) indices with the network's own Ĥ in place of the mean H
(in the free solution's full inverse (∞.72), the projection [·]^⊥ and the projectors Z of
:func:`rgflow.learning.projectors`), the ΔĤ lines thereby exact.  The prediction is exact at linear
order in the differentials; its residual against the trained network is second order in them
(spec §4.4: O(1/n^{1.2}) measured, against O(1/n^{0.7}) for the free solution alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._util.validation import check_inputs, check_int
from ..models import MLP
from ._checks import check_indices, check_targets
from ._finite_gd import Projectors, projectors
from ._train import jax_activation, x64


@dataclass
class NetworkTensors:
    """One network's outputs and NTK differentials at initialisation on all N inputs (composite index
    c = i·N + δ): ``z`` (n_L, N), ``H`` (M, M), ``dH`` (M, M, M), ``ddIH``, ``ddIIH`` (M, M, M, M), M = n_L N;
    ``params`` the flat parameter vector (JAX), ``lam`` the learning-rate metric per parameter."""

    z: np.ndarray
    H: np.ndarray
    dH: np.ndarray
    ddIH: np.ndarray
    ddIIH: np.ndarray
    params: Any = None
    lam: Any = None

    @property
    def n_out(self) -> int:
        return int(self.z.shape[0])

    @property
    def n_inputs(self) -> int:
        return int(self.z.shape[1])


@dataclass
class NetworkPrediction:
    """Result of :func:`predict_network` / :func:`network_prediction` (test outputs (N_B, n_L)).

    ``initial`` z_B at initialisation; ``free`` the first line of (∞.141) (the network's own NTK,
    frozen); ``mean`` the full O(1/n) prediction; ``pieces``: the dNTK and ddNTK lines (``Z_A``,
    ``Z_B``, ``Z_IA``, ``Z_IB``, ``Z_IIA``, ``Z_IIB``), each projected; ``trained`` the network after
    gradient descent (``network_prediction`` only), ``loss`` its final training loss, ``steps``.
    """

    initial: np.ndarray
    free: np.ndarray
    mean: np.ndarray
    pieces: dict[str, np.ndarray]
    algorithm: str
    lr: float | None
    trained: np.ndarray | None = None
    loss: float | None = None
    steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def composite(n_out: int, N: int, idx: np.ndarray) -> np.ndarray:
    """Composite indices i·N + δ for i = 0..n_L−1 (outer) and δ in ``idx`` (inner)."""
    return (np.arange(n_out)[:, None] * N + idx[None, :]).ravel()


def _contract(Z: Projectors, name: str, eps_hat: np.ndarray) -> np.ndarray:
    """Σ Z^{1…k k+1…2k} ε_{k+1}…ε_{2k} as a k-index array in the training basis (eigenbasis sum)."""
    U, g = Z.vecs, Z.f[name]
    if g.ndim == 2:
        return np.einsum("ia,jb,ab,a,b->ij", U, U, g, eps_hat, eps_hat, optimize=True)
    return np.einsum("pa,qb,rc,abc,a,b,c->pqr", U, U, U, g, eps_hat, eps_hat, eps_hat, optimize=True)


def predict_network(
    t: NetworkTensors, y: Any, train: Any, test: Any, *, lr: float | None = None, algorithm: str = "gd"
) -> NetworkPrediction:
    """(∞.141) for one network with tensors ``t`` (:func:`network_tensors`): the test outputs after full
    training on (x[train], y) by ``algorithm`` (``"gd"`` at global rate ``lr``, ``"flow"``, ``"newton"``)."""
    if not isinstance(t, NetworkTensors):
        raise TypeError(f"t must be rgflow.learning.NetworkTensors (from network_tensors), got {type(t).__name__}")
    N, n_out = t.n_inputs, t.n_out
    tr = check_indices("train", train, N)
    te = check_indices("test", test, N)
    yy = check_targets(y, len(tr))
    if yy.shape[1] != n_out:
        raise ValueError(f"y has {yy.shape[1]} output columns but the network has n_L = {n_out}")
    cA, cB = composite(n_out, N, tr), composite(n_out, N, te)
    HA = t.H[np.ix_(cA, cA)]
    if algorithm == "gd" and lr is None:
        raise ValueError("algorithm='gd' needs the global learning rate lr (η)")
    Z = projectors(HA, 0.0 if lr is None else float(lr), algorithm)
    Hinv = (Z.vecs / Z.lam[None, :]) @ Z.vecs.T
    W = t.H[np.ix_(cB, cA)] @ Hinv  # Ĥ_BA Ĥ_AA⁻¹ over composite indices
    eps = t.z[:, tr].ravel() - yy.T.ravel()
    zB = t.z[:, te].ravel()
    free = zB - W @ eps
    eh = Z.vecs.T @ eps
    rows = np.concatenate([cB, cA])
    nB = len(cB)

    def perp(v: np.ndarray) -> np.ndarray:
        return v[:nB] - W @ v[nB:]

    dH, d1, d2 = t.dH, t.ddIH, t.ddIIH
    ix = np.ix_
    pieces = {
        "Z_A": perp(np.einsum("adb,ab->d", dH[ix(cA, rows, cA)], _contract(Z, "Z_A", eh))),
        "Z_B": perp(np.einsum("dab,ab->d", dH[ix(rows, cA, cA)], _contract(Z, "Z_B", eh))),
        "Z_IA": perp(np.einsum("adbc,abc->d", d1[ix(cA, rows, cA, cA)], _contract(Z, "Z_IA", eh))),
        "Z_IB": perp(np.einsum("dabc,abc->d", d1[ix(rows, cA, cA, cA)], _contract(Z, "Z_IB", eh))),
        "Z_IIA": perp(np.einsum("abdc,abc->d", d2[ix(cA, cA, rows, cA)], _contract(Z, "Z_IIA", eh))),
        "Z_IIB": perp(np.einsum("dabc,abc->d", d2[ix(rows, cA, cA, cA)], _contract(Z, "Z_IIB", eh))),
    }
    mean = free + sum(pieces.values())

    def shape(v: np.ndarray) -> np.ndarray:
        return v.reshape(n_out, len(te)).T

    return NetworkPrediction(
        shape(zB), shape(free), shape(mean), {k: shape(v) for k, v in pieces.items()}, algorithm,
        None if algorithm != "gd" else float(lr),  # type: ignore[arg-type]
    )  # fmt: skip


# ----------------------------------------------------------------------------- JAX
def _model(net: MLP, widths: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """init(key) → parameter list, forward(params, x), and the learning-rate metric per parameter."""
    import jax
    import jax.numpy as jnp

    sig = jax_activation(net.activation)
    L = net.depth

    def init(key: Any) -> list[tuple[Any, Any]]:
        ks = jax.random.split(key, 2 * L)
        return [
            (
                jax.random.normal(ks[2 * l], (widths[l + 1], widths[l])) * math.sqrt(net.C_W[l] / widths[l]),
                jax.random.normal(ks[2 * l + 1], (widths[l + 1],)) * math.sqrt(net.C_b[l]),
            )
            for l in range(L)
        ]

    def fwd(params: list[tuple[Any, Any]], xx: Any) -> Any:
        h = xx
        for l, (Wl, bl) in enumerate(params):
            z = h @ Wl.T + bl
            h = sig(z) if l < L - 1 else z
        return h

    lam = [
        (jnp.full((widths[l + 1], widths[l]), net.lambda_W[l] / widths[l]), jnp.full((widths[l + 1],), net.lambda_b[l]))
        for l in range(L)
    ]
    return init, fwd, lam


def network_prediction(
    net: MLP,
    x: Any,
    y: Any,
    train: Any,
    test: Any,
    *,
    seed: int = 0,
    lr: float | None = None,
    algorithm: str = "gd",
    fit: bool = True,
    tol: float = 1e-24,
    max_steps: int = 200_000,
) -> NetworkPrediction:
    """Initialise one network (JAX, ``seed``), compute its NTK differentials on x, evaluate (∞.141)
    for training on (x[train], y), and (``fit=True``, GD only) train it by full-batch GD at ``lr`` to
    compare: ``result.trained`` vs ``result.mean`` (and ``result.free``).  ``lr`` defaults to
    1/λ_max of the network's own training NTK Ĥ_AA.  Needs ``jax``."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    if not isinstance(net, MLP):
        raise TypeError(f"net must be an rgflow.MLP, got {type(net).__name__}")
    if net.depth < 2:
        raise ValueError("the network needs a hidden layer (depth >= 2)")
    xx = check_inputs(x)
    N = len(xx)
    tr = check_indices("train", train, N)
    te = check_indices("test", test, N)
    yy = check_targets(y, len(tr))
    seed = check_int("seed", seed, minimum=0)
    n_out = yy.shape[1]
    widths = (xx.shape[1], *net.widths, n_out)
    init, fwd, lam_tree = _model(net, widths)
    with x64(jax):
        p0 = init(jax.random.key(seed))
        theta0, unravel = ravel_pytree(p0)
        lam, _ = ravel_pytree(lam_tree)
        X = jnp.asarray(xx, dtype=jnp.float64)

        def zf(th: Any) -> Any:
            return fwd(unravel(th), X).T.ravel()  # composite i·N + δ

        jac = jax.jacrev(zf)
        J = jac(theta0)  # (M, P)
        V = J * lam[None, :]
        H = J @ V.T

        def hess_v(th: Any, v: Any) -> Any:  # ∇²z_c v for every c: (M, P)
            return jax.jvp(jac, (th,), (v,))[1]

        h = jax.vmap(lambda v: hess_v(theta0, v))(V)  # [c3, c1, p]
        h = jnp.transpose(h, (1, 0, 2))  # h[c1, c3] = ∇²z_{c1} v_{c3}
        dH = jnp.einsum("bp,acp->abc", V, h)
        ddII = jnp.einsum("acp,p,bdp->abcd", h, lam, h)

        def third(v2: Any) -> Any:  # [c0, c1, c3] = ∂³z_{c0}[v_{c1}, v2, v_{c3}]
            T3 = jax.vmap(lambda w: jax.jvp(lambda th: hess_v(th, v2), (theta0,), (w,))[1])(V)  # [c3, c0, p]
            return jnp.einsum("bp,dap->abd", V, T3)

        ddI = jnp.transpose(jax.lax.map(third, V), (1, 2, 0, 3))  # [c0, c1, c2, c3]
        z0 = np.asarray(zf(theta0)).reshape(n_out, N)
        t = NetworkTensors(
            z0, np.asarray(H), np.asarray(dH), np.asarray(ddI), np.asarray(ddII), np.asarray(theta0), np.asarray(lam)
        )
        cA = composite(n_out, N, tr)
        if lr is None and algorithm == "gd":
            lr = 1.0 / float(np.linalg.eigvalsh(t.H[np.ix_(cA, cA)]).max())
        pred = predict_network(t, yy, tr, te, lr=lr, algorithm=algorithm)
        pred.extra["tensors"] = t
        if fit and algorithm == "gd":
            Xtr, Xte, Y = X[tr], X[te], jnp.asarray(yy)
            eta = float(lr)  # type: ignore[arg-type]

            def loss(th: Any) -> Any:
                e = fwd(unravel(th), Xtr) - Y
                return 0.5 * jnp.sum(e * e)

            def cond(c: Any) -> Any:
                _, k, ls = c
                return (ls >= tol) & (k < max_steps) & jnp.isfinite(ls)

            def body(c: Any) -> Any:
                th, k, _ = c
                th = th - eta * lam * jax.grad(loss)(th)
                return th, k + 1, loss(th)

            thT, k, ls = jax.jit(lambda th: jax.lax.while_loop(cond, body, (th, 0, loss(th))))(theta0)
            pred.trained = np.asarray(fwd(unravel(thT), Xte))
            pred.loss, pred.steps = float(ls), int(k)
    return pred
