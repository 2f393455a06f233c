#!/usr/bin/env python3
"""tools/expected_checksums.py — the expected outputs of the samples and workloads, computed without weft.

The CTest tests of samples/ and bench/ and the checksum table of bench/compare.sh compare weft's
output with numbers written into those files. Those numbers must not come from weft's own output (a
test that copies the program's answer cannot fail), so this script recomputes each one with a plain
re-implementation of the program's arithmetic (standard library only) and compares it with the value
the file cites:

  pingpong           main sends i = 0 .. N-1, the partner answers i + 1; checksum = sum of the answers.
  hackysack          K players, P passes; player 0 gets ball 0; the holder computes nb = ball + 1 and
                     stops at nb == P (the "last holder"), otherwise picks t = xorshift64() % K (itself
                     -> (t + 1) % K), adds t to the checksum and passes nb to t. xorshift64: x ^= x << 13;
                     x ^= x >> 7; x ^= x << 17 on 64 bits, seed 88172645463325252. In the sample the
                     last holder then sends exit to the others in index order and leaves last.
  sieve              the numbers 2, 3, ... that no earlier prime divides; the first N, their sum and the
                     Nth; the chain holds the generator and one filter per prime (N + 1 tasklets).
  producer_consumer  producer p sends p*ITEMS + 1 .. (p+1)*ITEMS; every item is consumed once.
  mandelbrot         escape counts (at most 255) of c = (-2 + px*(3/W), -1.5 + py*(3/H)) in plain
                     double arithmetic, the operations in the sample's order (Python floats are IEEE
                     doubles, and the sample is built with -ffp-contract=off); the sum of the counts and
                     the sum of count * (py*W + px + 1); the bands print in index order.
  bank               ACCOUNTS accounts of 1000; worker w's splitmix64 starts at SEED ^ ((w + 1) *
                     0xD1B54A32D192ED03); batches of 100 transfers run round-robin (batch 0 of every
                     worker in index order, then batch 1, ...); a transfer moves min(r3 % 100 + 1,
                     balance[r1 % A]) to r2 % A (+1 if equal); checksum = sum (i + 1) * balance[i] mod
                     2^61 - 1. Audits only read: there are AUDITORS * 4, each totals A * 1000.
  agents             game of life (B3/S23) on a W x H torus; generation 0 from splitmix64(SEED), cell
                     after cell in row-major order, alive iff draw % 100 < 30; the live counts at tick 0,
                     every 10th tick and the last; checksum = 64-bit FNV-1a of the final grid, one byte
                     (0/1) per cell in row-major order. Tiles change who computes a row, not the result.

Usage: tools/expected_checksums.py [--check]
  prints, for every cited value, the file citing it, the computed value and the cited one. With
  --check it exits with status 1 if any computed value differs from the cited one, or if the cited
  text is no longer in the file (the file changed and this table did not).
The two hackysack games of 1,000,000 passes take a few seconds.
"""
import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASK64 = (1 << 64) - 1
XORSHIFT_SEED = 88172645463325252


# ---- the arithmetic of each program ------------------------------------------------------------------

def pingpong(rounds):
    """Sum of the answers of `rounds` round trips (the partner answers i + 1 to i)."""
    total = 0
    for i in range(rounds):
        total += i + 1
    return total


@functools.lru_cache(maxsize=None)
def hackysack(players, passes):
    """Returns (last holder, checksum, exit order of the sample's --verbose output)."""
    x = XORSHIFT_SEED
    holder, ball, checksum = 0, 0, 0
    while True:
        nb = ball + 1
        if nb == passes:
            break
        x ^= (x << 13) & MASK64
        x ^= x >> 7
        x ^= (x << 17) & MASK64
        t = x % players
        if t == holder:
            t = (t + 1) % players
        checksum += t
        holder, ball = t, nb
    assert checksum <= MASK64, "the programs keep the checksum in 64 bits"
    # The sample: the last holder sends exit to every other player in index order (each leaves at
    # once), leaves itself, then main gets the signal.
    exits = [f"p{p}-exit" for p in range(players) if p != holder] + [f"p{holder}-exit", "main-got-signal"]
    return holder, checksum, "\\n".join(exits)


@functools.lru_cache(maxsize=None)
def sieve(count):
    """Returns (sum of the first `count` primes, the last of them, tasklets in the chain)."""
    primes = []
    candidate = 2
    while len(primes) < count:
        # The candidate passes the chain of filters if no prime found so far divides it.
        if all(candidate % p != 0 for p in primes if p * p <= candidate):
            primes.append(candidate)
        candidate += 1
    return sum(primes), primes[-1], 1 + len(primes)


def producer_consumer(producers, items):
    """Returns (items consumed, their sum): every item produced is consumed exactly once."""
    consumed = [v for p in range(producers) for v in range(p * items + 1, (p + 1) * items + 1)]
    return len(consumed), sum(consumed)


@functools.lru_cache(maxsize=None)
def mandelbrot(width, height, bands):
    """Returns (sum of the counts, checksum, the bands' "band <b> done" lines in order)."""
    dx, dy = 3.0 / width, 3.0 / height
    iterations = checksum = 0
    for py in range(height):
        ci = -1.5 + py * dy
        for px in range(width):
            cr = -2.0 + px * dx
            zr = zi = 0.0
            n = 0
            while n < 255:
                zr2 = zr * zr
                zi2 = zi * zi
                if zr2 + zi2 > 4.0:
                    break
                zi = 2.0 * zr * zi + ci
                zr = zr2 - zi2 + cr
                n += 1
            iterations += n
            checksum += n * (py * width + px + 1)
    assert checksum <= MASK64, "the sample keeps the checksum in 64 bits"
    return iterations, checksum, "\\n".join(f"band {b} done" for b in range(bands))


def splitmix64(state):
    """One step: returns (new state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


@functools.lru_cache(maxsize=None)
def bank(accounts, transfers, workers, auditors, seed):
    """Returns (the "audit <k>: total <n>" lines, audits, final total, checksum)."""
    balance = [1000] * accounts
    states = [(seed ^ ((w + 1) * 0xD1B54A32D192ED03)) & MASK64 for w in range(workers)]
    batches = (transfers + 99) // 100
    for batch in range(batches):
        for w in range(workers):
            for _ in range(batch * 100, min((batch + 1) * 100, transfers)):
                states[w], r1 = splitmix64(states[w])
                states[w], r2 = splitmix64(states[w])
                states[w], r3 = splitmix64(states[w])
                src, dst = r1 % accounts, r2 % accounts
                if dst == src:
                    dst = (dst + 1) % accounts
                moved = min(r3 % 100 + 1, balance[src])
                balance[src] -= moved
                balance[dst] += moved
    checksum = sum((i + 1) * v for i, v in enumerate(balance)) % ((1 << 61) - 1)
    audits = auditors * 4
    lines = "\\n".join(f"audit {k}: total {accounts * 1000}" for k in range(1, audits + 1))
    return lines, audits, sum(balance), checksum


@functools.lru_cache(maxsize=None)
def agents(width, height, ticks, seed):
    """Returns (the "tick <t>: alive <n>" lines, final live cells, checksum)."""
    state, grid = seed, []
    for _ in range(width * height):
        state, r = splitmix64(state)
        grid.append(1 if r % 100 < 30 else 0)
    lines = [f"tick 0: alive {sum(grid)}"]
    for tick in range(1, ticks + 1):
        nxt = [0] * (width * height)
        for y in range(height):
            rows = [((y + dy) % height) * width for dy in (-1, 0, 1)]
            for x in range(width):
                cols = [(x + dx) % width for dx in (-1, 0, 1)]
                n = sum(grid[r + c] for r in rows for c in cols) - grid[y * width + x]
                nxt[y * width + x] = 1 if n == 3 or (n == 2 and grid[y * width + x]) else 0
        grid = nxt
        if tick % 10 == 0 or tick == ticks:
            lines.append(f"tick {tick}: alive {sum(grid)}")
    h = 0xCBF29CE484222325
    for c in grid:
        h = ((h ^ c) * 0x100000001B3) & MASK64
    return "\\n".join(lines), sum(grid), h


# ---- what the files cite -------------------------------------------------------------------------------
# (file, what, computed, cited value, text): `text` (default "{}") formatted with the cited value must
# appear in the file verbatim; the CMake files write "\n" in their regular expressions as backslash-n.
SAMPLES = "samples/CMakeLists.txt"
BENCH = "bench/CMakeLists.txt"
COMPARE = "bench/compare.sh"
CITED = [
    (SAMPLES, "pingpong 1000: checksum", lambda: pingpong(1000), 500500, "checksum: {}\\n"),
    (SAMPLES, "pingpong 3: checksum", lambda: pingpong(3), 6, "checksum: {}\\n"),
    (SAMPLES, "hackysack K=1000 P=1000000: last holder", lambda: hackysack(1000, 1000000)[0], 366,
     "last holder: {}\\n"),
    (SAMPLES, "hackysack K=1000 P=1000000: checksum", lambda: hackysack(1000, 1000000)[1], 499382756,
     "checksum: {}\\n"),
    (SAMPLES, "hackysack K=5 P=5: exit order", lambda: hackysack(5, 5)[2],
     "p0-exit\\np1-exit\\np2-exit\\np4-exit\\np3-exit\\nmain-got-signal", "{}"),
    (SAMPLES, "hackysack K=5 P=5: last holder", lambda: hackysack(5, 5)[0], 3, "last holder: {}\\n"),
    (SAMPLES, "hackysack K=5 P=5: checksum", lambda: hackysack(5, 5)[1], 7, "checksum: {}\\n"),
    (SAMPLES, "sieve 100: last prime", lambda: sieve(100)[1], 541, "last prime: {}\\n"),
    (SAMPLES, "sieve 100: tasklets in the chain", lambda: sieve(100)[2], 101, "tasklets in the chain: {}\\n"),
    (SAMPLES, "sieve 100: checksum", lambda: sieve(100)[0], 24133, "checksum: {}\\n"),
    (SAMPLES, "sieve 2000: last prime", lambda: sieve(2000)[1], 17389, "last prime: {}\\n"),
    (SAMPLES, "sieve 2000: tasklets in the chain", lambda: sieve(2000)[2], 2001, "tasklets in the chain: {}\\n"),
    (SAMPLES, "sieve 2000: checksum", lambda: sieve(2000)[0], 16274627, "checksum: {}\\n"),
    (SAMPLES, "producer_consumer 5 3 777: consumed", lambda: producer_consumer(5, 777)[0], 3885,
     "consumed: {}\\n"),
    (SAMPLES, "producer_consumer 5 3 777: checksum", lambda: producer_consumer(5, 777)[1], 7548555,
     "checksum: {}\\n"),
    (BENCH, "weft_workloads hackysack 100 1000: checksum", lambda: hackysack(1000, 100)[1], 43855,
     '\\"checksum\\":{},'),
    (COMPARE, "sieve 2000: checksum", lambda: sieve(2000)[0], 16274627, "{}"),
    (COMPARE, "hackysack 1000000 1000: checksum", lambda: hackysack(1000, 1000000)[1], 499382756, "{}"),
    (COMPARE, "hackysack 1000000 100000: checksum", lambda: hackysack(100000, 1000000)[1], 50011331750, "{}"),
    (SAMPLES, "mandelbrot 64 48 4: bands", lambda: mandelbrot(64, 48, 4)[2],
     "band 0 done\\nband 1 done\\nband 2 done\\nband 3 done", "{}\\niterations: "),
    (SAMPLES, "mandelbrot 64 48 4: iterations", lambda: mandelbrot(64, 48, 4)[0], 150109, "iterations: {}\\n"),
    (SAMPLES, "mandelbrot 64 48 4: checksum", lambda: mandelbrot(64, 48, 4)[1], 235857126, "checksum: {}\\n"),
    (SAMPLES, "mandelbrot 257 131 13: last band", lambda: mandelbrot(257, 131, 13)[2].split("\\n")[-1],
     "band 12 done", "{}\\niterations: "),
    (SAMPLES, "mandelbrot 257 131 13: iterations", lambda: mandelbrot(257, 131, 13)[0], 1589125,
     "iterations: {}\\n"),
    (SAMPLES, "mandelbrot 257 131 13: checksum", lambda: mandelbrot(257, 131, 13)[1], 26975094959,
     "checksum: {}\\n"),
    (SAMPLES, "bank 64 1000 4 2 7: audit lines", lambda: bank(64, 1000, 4, 2, 7)[0],
     "\\n".join(f"audit {k}: total 64000" for k in range(1, 9)), "\"{}\\naudits: "),
    (SAMPLES, "bank 64 1000 4 2 7: audits", lambda: bank(64, 1000, 4, 2, 7)[1], 8, "audits: {}\\n"),
    (SAMPLES, "bank 64 1000 4 2 7: total", lambda: bank(64, 1000, 4, 2, 7)[2], 64000, "total: {}\\n"),
    (SAMPLES, "bank 64 1000 4 2 7: checksum", lambda: bank(64, 1000, 4, 2, 7)[3], 2112778, "checksum: {}\\n"),
    (SAMPLES, "bank 5 2345 3 1 42: audit lines", lambda: bank(5, 2345, 3, 1, 42)[0],
     "\\n".join(f"audit {k}: total 5000" for k in range(1, 5)), "\"{}\\naudits: "),
    (SAMPLES, "bank 5 2345 3 1 42: audits", lambda: bank(5, 2345, 3, 1, 42)[1], 4, "audits: {}\\n"),
    (SAMPLES, "bank 5 2345 3 1 42: total", lambda: bank(5, 2345, 3, 1, 42)[2], 5000, "total: {}\\n"),
    (SAMPLES, "bank 5 2345 3 1 42: checksum", lambda: bank(5, 2345, 3, 1, 42)[3], 12841, "checksum: {}\\n"),
    (SAMPLES, "agents 64 48 4 30 7: tick lines", lambda: agents(64, 48, 30, 7)[0],
     "tick 0: alive 902\\ntick 10: alive 715\\ntick 20: alive 536\\ntick 30: alive 427", "{}\\nalive: "),
    (SAMPLES, "agents 64 48 4 30 7: alive", lambda: agents(64, 48, 30, 7)[1], 427, "alive: {}\\n"),
    (SAMPLES, "agents 64 48 4 30 7: checksum", lambda: agents(64, 48, 30, 7)[2], 3477902375864285428,
     "checksum: {}\\n"),
    (SAMPLES, "agents 37 23 5|23 25 3: tick lines", lambda: agents(37, 23, 25, 3)[0],
     "tick 0: alive 247\\ntick 10: alive 162\\ntick 20: alive 107\\ntick 25: alive 108", "{}\\nalive: "),
    (SAMPLES, "agents 37 23 5|23 25 3: alive", lambda: agents(37, 23, 25, 3)[1], 108, "alive: {}\\n"),
    (SAMPLES, "agents 37 23 5|23 25 3: checksum", lambda: agents(37, 23, 25, 3)[2], 12993600607498896725,
     "checksum: {}\\n"),
    # The program headers quote the same numbers.
    ("samples/hackysack.cpp", "K=1000 P=1000000: checksum", lambda: hackysack(1000, 1000000)[1], 499382756,
     "{}"),
    ("samples/hackysack.cpp", "K=100000 P=1000000: checksum", lambda: hackysack(100000, 1000000)[1],
     50011331750, "{}"),
    ("samples/sieve.cpp", "N=2000: checksum", lambda: sieve(2000)[0], 16274627, "{}"),
    ("samples/producer_consumer.cpp", "4 3 10000: checksum", lambda: producer_consumer(4, 10000)[1],
     800020000, "{}"),
]


def main(argv):
    check = "--check" in argv[1:]
    if any(a not in ("--check",) for a in argv[1:]):
        print("usage: tools/expected_checksums.py [--check]", file=sys.stderr)
        return 2
    problems = 0
    texts = {}
    for path, what, compute, cited, text in CITED:
        if path not in texts:
            with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                texts[path] = f.read()
        computed = compute()
        shown = computed if not isinstance(computed, str) else computed.replace("\\n", " ")
        status = "ok"
        if computed != cited:
            status = f"MISMATCH: cited {cited}"
            problems += 1
        elif text.format(cited) not in texts[path]:
            status = f"NOT CITED: '{text.format(cited)}' is no longer in the file"
            problems += 1
        print(f"{path:30} {what:45} {shown!s:>20}  {status}")
    if problems:
        print(f"{problems} cited value(s) differ from the computed ones or are no longer in their file",
              file=sys.stderr)
    return 1 if check and problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
