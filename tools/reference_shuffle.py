#!/usr/bin/env python3
"""Independent reference for the batcher's shuffle (engine/data/batcher.cpp).

MT19937-64 written out from its published definition, rejection sampling from the raw 64-bit
output, and Fisher-Yates from the back, exactly as batcher.h documents. Prints the standard's
check value (the 10000th output for the default seed 5489) and the permutation of 0..9 for seed 42,
which tests/test_data.cpp (Batcher.ShufflePinnedAcrossPlatforms) pins. Needs only Python 3.
"""
MASK = (1 << 64) - 1


class MT19937_64:
    def __init__(self, seed):
        self.mt = [0] * 312
        self.mt[0] = seed & MASK
        for i in range(1, 312):
            prev = self.mt[i - 1]
            self.mt[i] = (6364136223846793005 * (prev ^ (prev >> 62)) + i) & MASK
        self.index = 312

    def _twist(self):
        for k in range(312):
            x = (self.mt[k] & 0xFFFFFFFF80000000) | (self.mt[(k + 1) % 312] & 0x7FFFFFFF)
            xa = x >> 1
            if x & 1:
                xa ^= 0xB5026F5AA96619E9
            self.mt[k] = self.mt[(k + 156) % 312] ^ xa
        self.index = 0

    def __call__(self):
        if self.index >= 312:
            self._twist()
        y = self.mt[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & MASK


def uniform_below(rng, n):
    threshold = ((1 << 64) - n) % n  # 2^64 mod n: draws below it would favour small residues
    while True:
        x = rng()
        if x >= threshold:
            return x % n


def shuffle(values, rng):
    for i in range(len(values), 1, -1):
        j = uniform_below(rng, i)
        values[i - 1], values[j] = values[j], values[i - 1]


if __name__ == "__main__":
    rng = MT19937_64(5489)
    for _ in range(9999):
        rng()
    print("10000th output, seed 5489:", rng())  # the C++ standard says 9981545732273789042
    rng = MT19937_64(42)
    v = list(range(10))
    shuffle(v, rng)
    print("permutation of 0..9, seed 42:", v)
