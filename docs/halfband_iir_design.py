#!/usr/bin/env python3
"""Design of the two-path allpass (polyphase IIR) elliptic halfband of docs/dsp.md §5.5.

Pure Python (no numpy), so it runs anywhere: `python3 docs/halfband_iir_design.py`.

H(z) = 1/2 [A0(z^2) + z^-1 A1(z^2)], each Ai a cascade of first-order sections in z^2,
(a + z^-2) / (1 + a z^-2). The coefficients of an elliptic (Cauer) halfband follow in closed
form from the transition width and the order: R. A. Valenzuela and A. G. Constantinides,
"Digital signal processing schemes for efficient interpolation and decimation", IEE Proc. G 130
(1983); M. Renfors and T. Saramaki, "Recursive Nth-band digital filters", IEEE Trans. CAS 34
(1987); f. harris, *Multirate Signal Processing for Communication Systems* (2004), ch. 10
(recursive polyphase filters). The series below (Jacobi theta functions for the elliptic
functions) is the one used by Laurent de Soras' HIIR library (PolyphaseIir2Designer).

Prints the coefficients (path 0 first), then the figures checked against docs/dsp.md §5.4:
passband ripple to 3.4 kHz, rejection from 4.6 kHz, group delay at 300 Hz / 1 kHz / 3 kHz /
3.4 kHz (at 16 kHz).
"""

import cmath
import math

FS = 16000.0
F_PASS = 3400.0
F_STOP = 4600.0
ATTENUATION_DB = 80.0


def transition_param(tbw):
    k = math.tan((1.0 - 2.0 * tbw) * math.pi / 4.0) ** 2
    kksqrt = (1.0 - k * k) ** 0.25
    e = 0.5 * (1.0 - kksqrt) / (1.0 + kksqrt)
    e4 = e**4
    q = e * (1.0 + e4 * (2.0 + e4 * (15.0 + 150.0 * e4)))
    return k, q


def order_for(attenuation_db, q):
    attn_p2 = 10.0 ** (-attenuation_db / 10.0)
    a = attn_p2 / (1.0 - attn_p2)
    order = math.ceil(math.log(a * a / 16.0) / math.log(q))
    if order % 2 == 0:
        order += 1
    return max(order, 3)


def coef(index, k, q, order):
    c = index + 1
    num, i, sign = 0.0, 0, 1.0
    while True:
        term = q ** (i * (i + 1)) * math.sin((2 * i + 1) * c * math.pi / order) * sign
        num += term
        sign, i = -sign, i + 1
        if abs(term) < 1e-100:
            break
    num *= q**0.25
    den, i, sign = 0.0, 1, -1.0
    while True:
        term = q ** (i * i) * math.cos(2 * i * c * math.pi / order) * sign
        den += term
        sign, i = -sign, i + 1
        if abs(term) < 1e-100:
            break
    den += 0.5
    ww = num / den
    wwsq = ww * ww
    x = math.sqrt((1.0 - wwsq * k) * (1.0 - wwsq / k)) / (1.0 + wwsq)
    return (1.0 - x) / (1.0 + x)


def response(coefs, f):
    """Complex response of 1/2 [A0(z^2) + z^-1 A1(z^2)] at f Hz (fs = FS)."""
    z1 = cmath.exp(-2j * math.pi * f / FS)
    z2 = z1 * z1
    a0 = a1 = 1.0
    for n, a in enumerate(coefs):
        s = (a + z2) / (1.0 + a * z2)
        if n % 2 == 0:
            a0 *= s
        else:
            a1 *= s
    return 0.5 * (a0 + z1 * a1)


def group_delay(coefs, f, df=0.01):
    p1 = cmath.phase(response(coefs, f - df))
    p2 = cmath.phase(response(coefs, f + df))
    d = p2 - p1
    d = (d + math.pi) % (2 * math.pi) - math.pi
    return -d / (2 * math.pi * 2 * df) * FS  # samples at FS


def main():
    tbw = (F_STOP - F_PASS) / FS
    k, q = transition_param(tbw)
    order = order_for(ATTENUATION_DB, q)
    n = (order - 1) // 2
    coefs = [coef(i, k, q, order) for i in range(n)]
    print(f"transition {tbw} of fs, order {order}, {n} allpass coefficients")
    for i, a in enumerate(coefs):
        print(f"  path {i % 2}: {a!r}")
    db = lambda f: 20 * math.log10(abs(response(coefs, f)))
    ripple = max(abs(db(f)) for f in [x * 10.0 for x in range(0, 341)])
    stop = max(db(f) for f in [4600.0 + x * 10.0 for x in range(0, 341)])
    print(f"passband 0-3.4 kHz: max |gain| deviation {ripple:.3e} dB")
    print(f"stopband 4.6-8 kHz: worst {stop:.2f} dB")
    for f in [300.0, 1000.0, 2000.0, 3000.0, 3400.0]:
        gd = group_delay(coefs, f)
        print(f"  group delay at {f:6.0f} Hz: {gd:.3f} samples = {gd / FS * 1000:.3f} ms")


if __name__ == "__main__":
    main()
