"""Finite-width gradient descent at O(1/n): the algorithm projectors and the ensemble mean
(PDLT §∞.2–∞.3; spec ``learning.md`` §4.3–4.5, with the spec's fixes).

* **Projectors** (∞.107)–(∞.153), spec §4.3.  Every helper tensor built from the training-set NTK
  mean H̃ = Σ_a λ_a u_a u_aᵀ is diagonal in its eigenbasis, with the index pairs (1,3) → a,
  (2,4) → b of the 4-index tensors and (1,4) → a, (2,5) → b, (3,6) → c of the 6-index ones:
  X_II(a,b) = 1/(λ_a + λ_b − η λ_a λ_b), X_III(a,b,c) = 1/(Σλ − η Σλλ + η² Πλ) (the definitions
  (∞.107), (∞.110) in the eigenbasis) and Y_1…Y_4 (∞.135)–(∞.140).  Algorithms: ``"gd"`` many-step
  full-batch GD at global rate η (∞.142)–(∞.147), ``"flow"`` gradient flow η → 0 (∞.149)–(∞.153),
  ``"newton"`` the two-step Newton-like scheme (∞.79), (∞.148).  :class:`Projectors` keeps the
  eigen-functions and builds the dense tensors on request.
* **Ensemble mean** (∞.160)–(∞.165) with the spec's fixes: the NTK-variance term enters with
  σ_Δ = −1 (the book prints +1; spec §4.4–4.5, from the corrected signs of the ΔH lines of
  (∞.154)); the dNTK term (∞.163) in the general form with Z_B^{1234} and Z_B^{1243} (the printed
  form holds only for a symmetrised Z_B); in (∞.165) T pairs with Z_IIB^{312645} and U with
  Z_IIB^{231564} (swapped in the book).

The NTK mean H: the book sets H ≈ Θ (its H^{1} is never computed).  rgflow has the 1/n part Θ1
of the NTK mean (``ntk.md``), so by default H = Θ + Θ1/n — beyond the book; the difference it
makes is ``pieces["ntk_mean"]`` of the prediction (see the tests for whether it helps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: The training algorithms whose projectors the spec gives (§4.3).
ALGORITHMS = ("gd", "flow", "newton")

FOUR = ("Z_A", "Z_B")
SIX = ("Z_IA", "Z_IB", "Z_IIA", "Z_IIB")


def eigen_functions(lam: np.ndarray, eta: float) -> dict[str, np.ndarray]:
    """X_II (M, M), X_III, Y_1, Y_3, Y_4 (M, M, M) and Y_2 (M, M) as functions of the eigenvalues
    (spec §4.3, "Eigenbasis closed forms")."""
    a, b = lam[:, None], lam[None, :]
    la, lb, lc = lam[:, None, None], lam[None, :, None], lam[None, None, :]
    X2 = 1.0 / (a + b - eta * a * b)
    X3 = 1.0 / (la + lb + lc - eta * (la * lb + la * lc + lb * lc) + eta**2 * la * lb * lc)
    X2ab, X2bc = X2[:, :, None], X2[None, :, :]
    return {
        "X_II": X2,
        "X_III": X3,
        "Y_1": (X2ab - X3) / lc,
        "Y_2": 1.0 / (a * b) - X2 / b,
        "Y_3": 1.0 / (la * lb * lc) - X2ab / (lb * lc) - X2bc / (la * lc) + X2bc * X3 / lc,
        "Y_4": X2bc * (1.0 / la - X3),
    }


@dataclass
class Projectors:
    """The six projectors Z_A, Z_B (4-index) and Z_IA, Z_IB, Z_IIA, Z_IIB (6-index) of one algorithm,
    as eigen-functions ``f[name]`` over the eigenvalues ``lam`` of H̃ with eigenvectors ``vecs``
    (columns); :meth:`dense` gives Z^{α1…α4} / Z^{α1…α6} in the training-set basis."""

    algorithm: str
    lr: float
    lam: np.ndarray
    vecs: np.ndarray
    f: dict[str, np.ndarray]

    def dense(self, name: str) -> np.ndarray:
        U, g = self.vecs, self.f[name]
        if g.ndim == 2:
            return np.einsum("ia,jb,ka,lb,ab->ijkl", U, U, U, U, g, optimize=True)
        return np.einsum("pa,qb,rc,sa,tb,uc,abc->pqrstu", U, U, U, U, U, U, g, optimize=True)


def projectors(Ht: np.ndarray, lr: float, algorithm: str = "gd") -> Projectors:
    """Projectors of ``algorithm`` for the training-set NTK mean ``Ht`` and global rate ``lr`` (η;
    ignored by ``"flow"``, where η = 0, and ``"newton"``): spec §4.3, (∞.142)–(∞.153)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    lam, vecs = np.linalg.eigh(0.5 * (Ht + Ht.T))
    if lam.min() <= 0:
        raise ValueError("the training-set NTK mean H̃ is not positive definite; the projectors need H̃⁻¹")
    eta = float(lr) if algorithm == "gd" else 0.0
    if algorithm == "gd" and not 0 < eta * lam.max() < 2:
        raise ValueError(
            f"gradient descent at lr = {eta:.4g} does not converge: η λ_max(H̃) = {eta * lam.max():.4g} must be "
            "in (0, 2) (PDLT footnote 16 of ch. ∞); pass a smaller lr"
        )
    M = len(lam)
    if algorithm == "newton":
        a, b = lam[:, None], lam[None, :]
        la, lb, lc = lam[:, None, None], lam[None, :, None], lam[None, None, :]
        z4, z6 = np.zeros((M, M)), np.zeros((M, M, M))
        f = {"Z_A": z4, "Z_B": 0.5 / (a * b), "Z_IA": z6, "Z_IB": -1.0 / (6 * la * lb * lc), "Z_IIA": z6, "Z_IIB": z6}
        return Projectors(algorithm, eta, lam, vecs, f)
    e = eigen_functions(lam, eta)
    Y1, Y2, Y3, Y4, X2, X3 = e["Y_1"], e["Y_2"], e["Y_3"], e["Y_4"], e["X_II"], e["X_III"]
    f = {
        "Z_A": Y2,
        "Z_B": Y2 + 0.5 * eta * X2,
        "Z_IA": -Y3 - 0.5 * eta * Y4,
        "Z_IB": -Y3 - 0.5 * eta * Y4 - 0.5 * eta * Y1 - eta**2 / 6 * X3,
        "Z_IIA": -Y3,
        # Z_IIB^{123456} = −Y3^{123456} − Y3^{213546} − Y3^{132465} − η Y4 − η Y1
        "Z_IIB": -Y3 - Y3.transpose(1, 0, 2) - Y3.transpose(0, 2, 1) - eta * Y4 - eta * Y1,
    }
    return Projectors(algorithm, eta, lam, vecs, f)


#: ``get(name, slots)``: the output-layer tensor ``name`` as a dense block, slot i over the rows
#: (test then training inputs) where ``slots[i] == "d"``, over the test inputs where it is ``"t"`` and
#: over the training inputs elsewhere (:class:`rgflow.learning.OutputTensors`).  The term functions
#: below return their value on the rows of the ``"d"`` slot.
Getter = Callable[[str, str], np.ndarray]


def _perm(Z: np.ndarray, spec: str) -> np.ndarray:
    """Z with its slots relabelled, e.g. ``_perm(Z, "231564")`` is the array W[1..6] = Z^{231564}."""
    letters = "pqrstu"[: Z.ndim]
    src = "".join(letters[int(c) - 1] for c in spec)
    return np.einsum(f"{src}->{letters}", Z)


def rotate(X: np.ndarray, U: np.ndarray) -> np.ndarray:
    """X[i, a, b, c] with its last three slots rotated by U: Σ X_{iabc} U_aα U_bβ U_cγ (U = the
    eigenvectors of H̃ into the eigenbasis; U.T back)."""
    for _ in range(3):  # contract the first of the three slots; its new index reappears last
        X = np.tensordot(X, U, axes=([1], [0]))
    return X


def six_weight(g: np.ndarray, Yr: np.ndarray, U: np.ndarray, spec: str = "123456") -> np.ndarray:
    """W_{i,123} = Σ_{456} Z^{σ(123456)} Y_{i,456} (n_L, N_A, N_A, N_A) for the six-index projector Z
    with eigen-function ``g`` (slots (1,4), (2,5), (3,6) paired) relabelled by ``spec`` as in
    :func:`_perm`, from Y already in the eigenbasis (``Yr = rotate(Y, U)``): Z is diagonal there, so
    no N_A⁶ tensor is formed (O(n_L N_A⁴) time)."""
    lab = [""] * 6
    for k, c in enumerate(spec):
        lab[int(c) - 1] = "abc"[k % 3]
    Wr = np.einsum(f"abc,i{''.join(lab[3:])}->i{''.join(lab[:3])}", g, Yr)
    return rotate(Wr, U.T)


def contract6(X: np.ndarray, g: np.ndarray, Yr: np.ndarray, U: np.ndarray, spec: str = "123456") -> np.ndarray:
    """Σ X_{d,123} Z^{σ(123456)} Y_{i,456} (rows, n_L) through :func:`six_weight`."""
    return np.einsum("dabc,iabc->di", X, six_weight(g, Yr, U, spec), optimize=True)


def _dot(get: Getter, name: str, labels: str, W: np.ndarray) -> np.ndarray:
    """Σ_abc X_{δabc} W_{i,abc} for X = ``get(name, labels)`` read with the einsum ``labels`` (no
    transposed copy of the block is summed elementwise)."""
    return np.einsum(f"{labels},iabc->di", get(name, labels), W, optimize=True)


def ntk_variance_term(get: Getter, Hinv: np.ndarray, n_out: int, y: np.ndarray) -> np.ndarray:
    """m^{ΔNTK}_{i;δ} (∞.162) on the rows (before σ_Δ, the projection and 1/n):
    Σ [A_(δα1)(α2α3) + B_δα2α1α3 + n_L B_δα3α1α2] H̃^{α1α2} H̃^{α3α4} y_{i;α4}."""
    W = np.einsum("ab,ci->iabc", Hinv, Hinv @ y)
    return _dot(get, "A", "dabc", W) + _dot(get, "B", "dbac", W) + n_out * _dot(get, "B", "dcab", W)


def dntk_term(get: Getter, Z: Projectors, n_out: int, y: np.ndarray) -> np.ndarray:
    """m^{dNTK}_{i;δ} (∞.163) in the general form of spec §4.5 (valid for any projector):
    −Σ {[P_δ123 + Q_δ123 + n_L Q_δ213] Z_B^{1234} + [P_δ123 + n_L Q_δ123 + Q_δ213] Z_B^{1243}
       + [n_L P_1δ23 + Q_1δ23 + Q_12δ3] Z_A^{1234} + [P_1δ23 + n_L Q_1δ23 + Q_12δ3] Z_A^{1243}} y_{i;4}."""
    U, yr = Z.vecs, Z.vecs.T @ y

    def weight(name: str, swap: bool) -> np.ndarray:
        """W_{i,abc} = Σ_e Z^{abce} y_{e;i} (``swap``: Z^{abec}), Z diagonal in the eigenbasis (no N_A⁴ Z)."""
        e = "aA,bB,cB,AB,Ai->iabc" if swap else "aA,bB,cA,AB,Bi->iabc"
        return np.einsum(e, U, U, U, Z.f[name], yr, optimize=True)

    B1, B2, A1, A2 = weight("Z_B", False), weight("Z_B", True), weight("Z_A", False), weight("Z_A", True)
    n = n_out
    out = _dot(get, "P", "dabc", B1 + B2) + _dot(get, "Q", "dabc", B1 + n * B2)
    out += _dot(get, "Q", "dbac", n * B1 + B2)  # Q_δ213
    out += _dot(get, "P", "adbc", n * A1 + A2)  # P_1δ23
    out += _dot(get, "Q", "adbc", A1 + n * A2)  # Q_1δ23
    out += _dot(get, "Q", "abdc", A1 + A2)  # Q_12δ3
    return -out


def cubic_targets(y: np.ndarray, K: np.ndarray, n_out: int) -> np.ndarray:
    """The bracket 𝒴^{456}_i = y_{i;4}(Σ_j y_{j;5} y_{j;6} + n_L K_56) + y_{i;5} K_64 + y_{i;6} K_45 of
    (∞.164)–(∞.165) (= −E[ε_{i;4} Σ_j ε_{j;5} ε_{j;6}]-type Wick sums), as an array [i, 4, 5, 6]."""
    yy = y @ y.T
    Y = np.einsum("ei,fg->iefg", y, yy + n_out * K)
    Y += np.einsum("fi,ge->iefg", y, K)
    Y += np.einsum("gi,ef->iefg", y, K)
    return Y


def ddntk_terms(get: Getter, Z: Projectors, Y6: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """m^{ddNTK-I} (∞.164) and m^{ddNTK-II} (∞.165, T ↔ U fixed as in spec §4.5) on the rows.

    Each term Σ X_{δ,123} Z^{σ(123456)} 𝒴_{i,456} first contracts Z with 𝒴 in the eigenbasis of H̃, where
    every six-index projector is diagonal (:func:`six_weight`), then with X: O(N_rows N_A³ n_L) time."""
    U = Z.vecs
    Yr = rotate(Y6, U)
    ZIA, ZIB, ZIIA, ZIIB = (Z.f[k] for k in SIX)

    def term(name: str, slots: str, g: np.ndarray, specs: tuple[str, ...]) -> np.ndarray:
        W = six_weight(g, Yr, U, specs[0])  # [i, a, b, c]
        for sp in specs[1:]:
            W = W + six_weight(g, Yr, U, sp)
        # X = get(name, "acdb")[a, c, d, b]: the labels name the slots
        return np.einsum(f"{slots},iabc->di", get(name, slots), W, optimize=True)

    m1 = term("R", "dabc", ZIB, ("123456", "231564", "312645"))
    m1 += term("R", "adbc", ZIA, ("123456",))
    m1 += term("R", "abcd", ZIA, ("123564",))
    m1 += term("R", "acdb", ZIA, ("123645",))
    m2 = term("S", "dabc", ZIIB, ("123456",))
    m2 += term("T", "dabc", ZIIB, ("312645",))
    m2 += term("U", "dabc", ZIIB, ("231564",))
    m2 += term("S", "abdc", ZIIA, ("123564",))
    m2 += term("T", "adcb", ZIIA, ("123456",))
    m2 += term("U", "acbd", ZIIA, ("123645",))
    return -m1, -m2


def gd_mean_first_order(
    H: np.ndarray,
    K: np.ndarray,
    get: Getter,
    dntk: bool,
    n: int,
    y: np.ndarray,
    tr: np.ndarray,
    te: np.ndarray,
    Z: Projectors,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fully trained ensemble mean (∞.160)–(∞.165) with the spec's fixes, and its pieces.

    ``H`` (N, N) is the NTK mean used throughout (Θ or Θ + Θ1/n), ``K`` the output kernel, ``get``
    the output-layer A, B and (with ``dntk``) P, Q, R, S, T, U as blocks over the rows ``te`` ∪ ``tr``
    and the training set (:data:`Getter`; without ``dntk`` P…U vanish, as for last-layer training
    (∞.173)); ``Z`` the projectors of H̃.  Returns the mean m^NTK + [𝓜]^⊥/n on ``te`` and the pieces
    (each projected and divided by n): ``ntk_variance`` (σ_Δ = −1), ``dntk``, ``ddntk_1``, ``ddntk_2``.
    """
    n_out = y.shape[1]
    Hinv = (Z.vecs / Z.lam[None, :]) @ Z.vecs.T
    W = H[np.ix_(te, tr)] @ Hinv  # H_δα H̃⁻¹
    mean_ntk = W @ y  # (∞.161)

    # every term is linear in the blocks with a row slot "d": evaluate it on the test rows and on the
    # training rows separately (no (N_B + N_A) × N_A³ concatenation), then project [·]^⊥ = te − W·tr
    def get_te(name: str, slots: str) -> np.ndarray:
        return get(name, slots.replace("d", "t"))

    def get_tr(name: str, slots: str) -> np.ndarray:
        return get(name, slots.replace("d", "x"))

    def project(term: Callable[[Getter], np.ndarray]) -> np.ndarray:
        return (term(get_te) - W @ term(get_tr)) / n

    pieces = {"ntk_variance": -project(lambda g: ntk_variance_term(g, Hinv, n_out, y))}
    if dntk:
        pieces["dntk"] = project(lambda g: dntk_term(g, Z, n_out, y))
        Y6 = cubic_targets(y, K[np.ix_(tr, tr)], n_out)
        (m1_te, m2_te), (m1_tr, m2_tr) = ddntk_terms(get_te, Z, Y6), ddntk_terms(get_tr, Z, Y6)
        pieces["ddntk_1"], pieces["ddntk_2"] = (m1_te - W @ m1_tr) / n, (m2_te - W @ m2_tr) / n
    mean = mean_ntk + sum(pieces.values())
    return mean, {"mean_ntk": mean_ntk, **pieces}
