"""Independent pure-numpy reference for the depth-μP ResNet kernels at initialisation (nfd.md §2.1).

Same recursions as :func:`rgflow.recursions.depthmup_theory`, on a different code path (no Rust):

* Pair expectations ``Φ = ⟨φφ⟩``, ``Ψ = ⟨φ'φ'⟩``: ReLU by the arc-cosine closed forms
  (``Φ = √(qq')(sin θ + (π − θ) cos θ)/2π``, ``Ψ = (π − θ)/2π``), linear exactly (``Φ = K``,
  ``Ψ = 1``), every other (smooth) activation by a 2-D trapezoid rule in whitened coordinates
  (exponentially convergent for integrands analytic in a strip; step ``h``, range ±``span``),
  vectorised over input pairs in chunks.
* The NTK sum is accumulated along the forward pass with G built by explicit backward products.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..models import DepthMuPResNet

#: Input pairs per vectorised chunk of the trapezoid rule.
CHUNK = 64


def pair_expectations(
    activation: Any, K: np.ndarray, *, h: float = 0.15, span: float = 8.5
) -> tuple[np.ndarray, np.ndarray]:
    """``(Φ(K), Ψ(K))`` (N, N) for an :class:`~rgflow.Activation` (relu/linear closed, else trapezoid)."""
    name = activation.name
    K = np.asarray(K, dtype=float)
    q = np.diag(K)
    if name == "linear":
        return K.copy(), np.ones_like(K)
    if name == "relu":
        s = np.sqrt(np.outer(q, q))
        c = np.clip(np.divide(K, s, out=np.zeros_like(K), where=s > 0), -1.0, 1.0)
        th = np.arccos(c)
        Phi = s / (2 * math.pi) * (np.sin(th) + (math.pi - th) * c)
        Psi = (math.pi - th) / (2 * math.pi)
        return Phi, Psi
    t = np.arange(-span, span + h / 2, h)
    w1 = h * np.exp(-(t**2) / 2) / math.sqrt(2 * math.pi)
    X = np.repeat(t, t.size)
    Y = np.tile(t, t.size)
    W = np.outer(w1, w1).ravel()
    N = K.shape[0]
    ia, ib = np.triu_indices(N)
    Phi, Psi = np.empty((N, N)), np.empty((N, N))
    for c0 in range(0, ia.size, CHUNK):
        a, b = ia[c0 : c0 + CHUNK], ib[c0 : c0 + CHUNK]
        m11 = np.sqrt(q[a])
        m21 = np.divide(K[a, b], m11, out=np.zeros_like(m11), where=m11 > 0)
        m22 = np.sqrt(np.maximum(q[b] - m21**2, 0.0))
        u = m11[:, None] * X[None]
        v = m21[:, None] * X[None] + m22[:, None] * Y[None]
        p = (activation.numpy(u) * activation.numpy(v)) @ W
        d = (activation.numpy(u, 1) * activation.numpy(v, 1)) @ W
        Phi[a, b] = Phi[b, a] = p
        Psi[a, b] = Psi[b, a] = d
    return Phi, Psi


def depthmup_theory(net: DepthMuPResNet, x: Any, *, h: float = 0.15) -> dict[str, np.ndarray]:
    """``K``, ``G`` (L+1, N, N), ``Theta``, ``Theta_decoupled`` (N, N) of nfd.md §2.1 in plain numpy."""
    x = np.asarray(x, dtype=float)
    L, a2 = net.depth, net.block_variance
    unit = net.gamma0**2 * net.width
    w_in, w_hid, w_out = (net.learning_rate(g, 1.0) / unit for g in ("input", "hidden", "readout"))
    K_in = x @ x.T / x.shape[1]
    Ks, Phis, Psis = [K_in], [], []
    for _ in range(L + 1):
        Phi, Psi = pair_expectations(net.activation, Ks[-1], h=h)
        Phis.append(Phi)
        Psis.append(Psi)
        if len(Ks) <= L:
            Ks.append(Ks[-1] + a2 * Phi)
    top = Psis[L] if net.readout == "phi" else np.ones_like(K_in)
    readout = Phis[L] if net.readout == "phi" else Ks[L]
    # G_ℓ = top ⊙ Π_{k=ℓ+1}^{L} (1 + a² Ψ(K_{k-1}))
    G = []
    for ell in range(L + 1):
        prod = top.copy()
        for k in range(ell + 1, L + 1):
            prod = prod * (1 + a2 * Psis[k - 1])
        G.append(prod)
    hidden = sum(G[ell] * Phis[ell - 1] for ell in range(1, L + 1))
    theta = w_out * readout + w_hid * a2 * hidden + w_in * G[0] * K_in
    theta_dec = w_out * readout + w_hid * a2 * top * sum(Phis[:L]) + w_in * top * K_in
    return {"K": np.array(Ks), "G": np.array(G), "Theta": theta, "Theta_decoupled": theta_dec}
