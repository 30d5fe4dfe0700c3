"""Fused EM kernels compiled with Numba: one pass over a block of rows does it all.

The NumPy kernels in `_em` make about twenty passes over each chunk (whiten,
square, sum, max, subtract, clamp, exp, sum, divide, weight, multiply,
moments), each through memory, and NumPy's inner loops over short axes are
slow.  Here every row block of ``_BLOCK`` rows is transposed into a small
feature-major buffer and stays in L1 cache while it is whitened, scored,
normalised and folded into the sufficient statistics: the inner loops run
over the block's rows, which the compiler vectorises.  ``exp`` and ``log``
are short polynomials after an exact range reduction (``2^n`` built from its
exponent bits), because Numba's own ``exp`` and ``log`` are scalar calls
without Intel's SVML (the PyPI wheels have none).

Optional: Numba comes with the ``fast`` extra.  `_em` imports this module on
first use (Numba's import alone takes a quarter of a second) and runs its own
NumPy kernels without Numba or with ``GMMSEG_KERNELS=numpy``.  Both give the
same statistics (float32 to its rounding, float64 to about 1e-14;
``tests/test_kernels.py``).  The kernels release the GIL; `_em`'s runner
calls one per thread block.  Compiled code is cached on disk by Numba (in
``__pycache__`` beside this file, or the user's cache directory).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

# Rows per block: the block's whitened coordinates (K * D * _BLOCK floats)
# and log densities stay in L1/L2 cache for K * D up to about 100.
_BLOCK = 256
# The same clamp as `_em._LOG_RESP_FLOOR` (see there): no subnormal
# responsibilities, no ``2^n`` below the smallest normal float.
_LOG_RESP_FLOOR = -60.0
_LOG2E = 1.0 / math.log(2.0)
# ln 2 split so that n * _LN2_HI is exact for |n| < 2^11 (Cody & Waite).
_LN2_HI = 0.693145751953125
_LN2_LO = 1.42860682030941723212e-6
_SQRT2 = math.sqrt(2.0)
# Taylor coefficients of e^r for |r| <= ln(2) / 2: degree 7 leaves 4e-9
# relative error (float32 needs 6e-8); degree 12, 2e-16 (float64, 1.1e-16).
_EXP_COEF32 = tuple(1.0 / math.factorial(i) for i in range(8))
_EXP_COEF64 = tuple(1.0 / math.factorial(i) for i in range(13))
# log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172 for m in
# [sqrt(1/2), sqrt(2)): terms 2 s^(2i+1) / (2i+1) up to s^9 (float32, 6e-9)
# or s^21 (float64, 4e-18).
_LOG_COEF32 = tuple(2.0 / (2 * i + 1) for i in range(5))
_LOG_COEF64 = tuple(2.0 / (2 * i + 1) for i in range(11))


_JIT_OPTIONS = {"fastmath": {"reassoc", "contract", "arcp", "nsz"}, "error_model": "numpy"}


@intrinsic
def _bits_to_float(typingctx, bits):
    """Reinterpret int32 / int64 bits as float32 / float64 (no conversion)."""
    if bits == types.int32:
        sig, target = types.float32(types.int32), ir.FloatType()
    elif bits == types.int64:
        sig, target = types.float64(types.int64), ir.DoubleType()
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], target)
    return sig, codegen


@intrinsic
def _float_to_bits(typingctx, value):
    """Reinterpret float32 / float64 as int32 / int64 bits."""
    if value == types.float32:
        sig, target = types.int32(types.float32), ir.IntType(32)
    elif value == types.float64:
        sig, target = types.int64(types.float64), ir.IntType(64)
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], target)
    return sig, codegen


def _horner(coefs):
    """A compiled ``p(r) = sum coefs[i] r^i`` with the coefficients unrolled."""
    def make(dtype):
        c = tuple(dtype(v) for v in coefs)
        src = "def p(r):\n    return " + "".join(
            f"c[{i}] + r * (" for i in range(len(c) - 1)) + f"c[{len(c) - 1}]" + ")" * (len(c) - 1)
        scope = {"c": c}
        exec(src, scope)  # noqa: S102 - fixed source, unrolled for the compiler
        return numba.njit(**_JIT_OPTIONS)(scope["p"])
    return make


def _exp_clamped(v):
    """``exp(v)`` for ``-60 <= v <= 0``."""


@overload(_exp_clamped, jit_options=_JIT_OPTIONS)
def _exp_clamped_impl(v):
    if v == types.float32:
        dt, poly, int_t, bias, shift = np.float32, _horner(_EXP_COEF32)(np.float32), np.int32, 127, 23
    elif v == types.float64:
        dt, poly, int_t, bias, shift = np.float64, _horner(_EXP_COEF64)(np.float64), np.int64, 1023, 52
    else:
        return None
    log2e, hi, lo, half = dt(_LOG2E), dt(_LN2_HI), dt(_LN2_LO), dt(0.5)
    i_bias, i_shift = int_t(bias), int_t(shift)

    def impl(v):
        n = np.floor(v * log2e + half)
        r = (v - n * hi) - n * lo
        # int_t() again: Numba widens int32 arithmetic to int64
        scale = _bits_to_float(int_t((int_t(n) + i_bias) << i_shift))
        return poly(r) * scale
    return impl


def _log_ge1(t):
    """``log(t)`` for normal, positive ``t`` (here ``1 <= t <= K``)."""


@overload(_log_ge1, jit_options=_JIT_OPTIONS)
def _log_ge1_impl(t):
    if t == types.float32:
        dt, coefs, int_t, bias, shift, mant = np.float32, _LOG_COEF32, np.int32, 127, 23, (1 << 23) - 1
    elif t == types.float64:
        dt, coefs, int_t, bias, shift, mant = np.float64, _LOG_COEF64, np.int64, 1023, 52, (1 << 52) - 1
    else:
        return None
    poly = _horner(coefs)(dt)
    ln2, one, sqrt2, half = dt(math.log(2.0)), dt(1.0), dt(_SQRT2), dt(0.5)
    i_bias, i_shift, i_mant = int_t(bias), int_t(shift), int_t(mant)
    one_bits = int_t(bias) << int_t(shift)

    def impl(t):
        bits = _float_to_bits(t)
        e = dt((bits >> i_shift) - i_bias)
        m = _bits_to_float(int_t((bits & i_mant) | one_bits))  # in [1, 2)
        big = dt(m > sqrt2)  # 0 or 1, without a branch
        m = m * (one - half * big)
        e = e + big
        s = (m - one) / (m + one)
        return e * ln2 + s * poly(s * s)
    return impl


def _scalar_like(arr, value):
    """``value`` as a scalar of ``arr``'s dtype (Python floats are float64)."""


@overload(_scalar_like)
def _scalar_like_impl(arr, value):
    if arr.dtype == types.float32:
        return lambda arr, value: np.float32(value)
    if arr.dtype == types.float64:
        return lambda arr, value: np.float64(value)
    return None


_jit = numba.njit(nogil=True, cache=True, **_JIT_OPTIONS)


@_jit
def _block_buffers(X, n_comp):
    """A block's scratch arrays in ``X``'s dtype: rows feature-major ``(D, B)``,
    whitened coordinates ``(K, D, B)``, log densities ``(K, B)`` and two rows."""
    d_feat, dt = X.shape[1], X.dtype
    return (np.empty((d_feat, _BLOCK), dt), np.empty((n_comp, d_feat, _BLOCK), dt),
            np.empty((n_comp, _BLOCK), dt), np.empty(_BLOCK, dt), np.empty(_BLOCK, dt))


@_jit
def _transpose_block(X, s, nb, xb):
    """Rows s..s+nb of ``X`` into the feature-major block buffer ``xb`` (D, B)."""
    for b in range(nb):
        for j in range(X.shape[1]):
            xb[j, b] = X[s + b, j]


@_jit
def _score_block(xb, nb, first, A, bias, lconst, triangular, diagonal, y, lp):
    """Whitened coordinates ``y`` (G, D, B) and log densities ``lp[:G]`` of the
    block ``xb`` for the G = ``len(y)`` components from ``first`` on."""
    d_feat = A.shape[1]
    for i in range(y.shape[0]):
        k = first + i
        lk = lp[i]
        c0 = lconst[k]
        for b in range(nb):
            lk[b] = c0
        for d in range(d_feat):
            yk = y[i, d]
            c = bias[k, d]
            for b in range(nb):
                yk[b] = c
            j0 = d if diagonal else 0
            j1 = d + 1 if (diagonal or triangular) else d_feat
            for j in range(j0, j1):
                a = A[k, d, j]
                xj = xb[j]
                for b in range(nb):
                    yk[b] += a * xj[b]
            for b in range(nb):
                lk[b] -= yk[b] * yk[b]


@_jit
def _normalise_block(lp, first, stop, nb, floor, top, total):
    """Responsibilities in ``lp[first:stop]`` (one model's components): ``top``
    gets the row maxima, ``total`` the sums of the unnormalised ones."""
    l0 = lp[first]
    for b in range(nb):
        top[b] = l0[b]
    for k in range(first + 1, stop):
        lk = lp[k]
        for b in range(nb):
            top[b] = max(top[b], lk[b])
    for b in range(nb):
        total[b] = 0
    for k in range(first, stop):
        lk = lp[k]
        for b in range(nb):
            e = _exp_clamped(max(lk[b] - top[b], floor))
            lk[b] = e
            total[b] += e


@_jit
def stats(X, w, start, stop, A, bias, lconst, triangular, diagonal, full_stats, group,
          nk, sum_y, sum_yy, log_lik):
    """Add the rows start..stop's sufficient statistics to ``nk``, ``sum_y``, ``sum_yy``.

    ``X`` (N, D) rows; ``w`` (N,) weights or an empty array for none.
    ``A`` (K, D, D) and ``bias`` (K, D): ``y = A x + bias`` are the
    whitened coordinates over sqrt(2); ``lconst`` (K,) the log weights
    and normalisers.  The K components are ``K / group`` models of
    ``group`` components each (one model: ``group = K``; several: the
    start-up trials side by side), each normalised on its own.  Statistics
    are in the whitened coordinates (as `_em._chunk_stats`'s), each block of
    rows summed in the data's dtype and the blocks in float64; ``sum_yy``
    (K, D, D) gets every entry when ``full_stats`` (its upper triangle zero
    on entry), else its diagonal.  ``log_lik`` (models,) gets each model's
    (weighted) log-likelihood of the rows added.
    """
    n_comp, d_feat = A.shape[0], A.shape[1]
    # One model's components at a time: its block of y stays in the L1 cache.
    # ``inv``: the row totals, then their inverses (times the weights).
    xb, y, lp, top, inv = _block_buffers(X, group)
    ry = np.empty((d_feat, _BLOCK), X.dtype)
    floor = _scalar_like(X, _LOG_RESP_FLOOR)
    zero = _scalar_like(X, 0.0)
    one = _scalar_like(X, 1.0)
    weighted = w.shape[0] > 0
    for s in range(start, stop, _BLOCK):
        nb = min(_BLOCK, stop - s)
        _transpose_block(X, s, nb, xb)
        for g in range(n_comp // group):
            first = g * group
            _score_block(xb, nb, first, A, bias, lconst, triangular, diagonal, y, lp)
            _normalise_block(lp, 0, group, nb, floor, top, inv)
            block_ll = 0.0
            if weighted:
                for b in range(nb):
                    block_ll += w[s + b] * (_log_ge1(inv[b]) + top[b])
                    inv[b] = w[s + b] / inv[b]
            else:
                for b in range(nb):
                    block_ll += _log_ge1(inv[b]) + top[b]
                    inv[b] = one / inv[b]
            log_lik[g] += block_ll
            for i in range(group):
                k = first + i
                rk = lp[i]
                acc = zero
                for b in range(nb):
                    rk[b] *= inv[b]
                    acc += rk[b]
                nk[k] += acc
                for d in range(d_feat):
                    yk = y[i, d]
                    ryd = ry[d]
                    acc = zero
                    for b in range(nb):
                        ryd[b] = rk[b] * yk[b]
                        acc += ryd[b]
                    sum_y[k, d] += acc
                for d in range(d_feat):
                    ryd = ry[d]
                    if full_stats:
                        for d2 in range(d + 1):
                            y2 = y[i, d2]
                            acc = zero
                            for b in range(nb):
                                acc += ryd[b] * y2[b]
                            sum_yy[k, d, d2] += acc
                    else:
                        yk = y[i, d]
                        acc = zero
                        for b in range(nb):
                            acc += ryd[b] * yk[b]
                        sum_yy[k, d, d] += acc
    if full_stats:  # the upper triangles, from the lower ones
        for k in range(n_comp):
            for d in range(d_feat):
                for d2 in range(d):
                    sum_yy[k, d2, d] = sum_yy[k, d, d2]


@_jit
def e_step(X, start, stop, A, bias, lconst, triangular, diagonal,
           labels, proba, log_likelihood):
    """Labels, responsibilities and log densities of rows start..stop (one model).

    Each output is written when it is not empty (length 0 skips it):
    ``labels`` (N,) int32, ``proba`` (N, K), ``log_likelihood`` (N,).
    """
    n_comp = A.shape[0]
    xb, y, lp, top, total = _block_buffers(X, n_comp)
    floor = _scalar_like(X, _LOG_RESP_FLOOR)
    one = _scalar_like(X, 1.0)
    want_labels = labels.shape[0] > 0
    want_proba = proba.shape[0] > 0
    want_ll = log_likelihood.shape[0] > 0
    for s in range(start, stop, _BLOCK):
        nb = min(_BLOCK, stop - s)
        _transpose_block(X, s, nb, xb)
        _score_block(xb, nb, 0, A, bias, lconst, triangular, diagonal, y, lp)
        if want_labels:
            # The first of equal maxima, as NumPy's argmax.
            l0 = lp[0]
            for b in range(nb):
                top[b] = l0[b]
                labels[s + b] = 0
            for k in range(1, n_comp):
                lk = lp[k]
                for b in range(nb):
                    if lk[b] > top[b]:
                        top[b] = lk[b]
                        labels[s + b] = k
        if not (want_proba or want_ll):
            continue
        _normalise_block(lp, 0, n_comp, nb, floor, top, total)
        if want_ll:
            for b in range(nb):
                log_likelihood[s + b] = _log_ge1(total[b]) + top[b]
        if want_proba:
            for b in range(nb):
                total[b] = one / total[b]
            for b in range(nb):
                for k in range(n_comp):
                    proba[s + b, k] = lp[k, b] * total[b]
