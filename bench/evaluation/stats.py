"""Small-sample statistics the benchmarks share."""


def quartiles(xs):
    """(median, q1, q3) of a small sample (linear interpolation)."""
    v = sorted(xs)

    def q(p):
        k = (len(v) - 1) * p
        lo = int(k)
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (k - lo)
    return q(0.5), q(0.25), q(0.75)


def median(xs):
    return quartiles(xs)[0]
