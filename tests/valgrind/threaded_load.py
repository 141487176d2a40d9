"""A threaded load for valgrind: several Python threads, each loading with the Rust
thread pool, casts, ties (one source, equal copies, a mismatch), overlapping leaves,
flat keys and a refused load. Run by tests/valgrind/run.sh; prints OK when every result
is right."""

import threading

import numpy as np

import fastload


def model(seed, fill=True):
    rng = np.random.default_rng(seed)
    make = (
        (lambda *s: rng.standard_normal(s).astype(np.float32))
        if fill
        else (lambda *s: np.zeros(s, np.float32))
    )
    tree = {"emb": make(512, 64), "layers": [{"w": make(64, 64), "b": make(64)} for _ in range(8)]}
    tree["head"] = tree["emb"]  # a tie
    return tree


def work(k, errors):
    try:
        src = model(k)
        dst = model(100 + k, fill=False)
        for _ in range(3):
            fastload.loadmodel(dst, src, threads=2)
            half = {"emb": np.zeros((512, 64), np.float16)}
            fastload.loadmodel(half, {"emb": src["emb"]})
            base = np.arange(100, dtype=np.float64)
            fastload.loadmodel([base[10:60], base[30:80]], [base[0:50], base[50:100]])
        assert np.array_equal(dst["layers"][3]["w"], src["layers"][3]["w"])
        assert dst["head"] is dst["emb"]
        # Tied sources that are equal copies, compared in place; flat keys both ways.
        fastload.loadmodel(dst, {**src, "head": src["emb"].copy()})
        nested = fastload.unflatten(fastload.flatten(src))
        assert np.array_equal(nested["layers"]["2"]["b"], src["layers"][2]["b"])
        try:
            fastload.loadmodel(dst, {**src, "head": src["emb"] + 1})
        except fastload.LoadError:
            pass
        else:
            raise AssertionError("a mismatched tie was accepted")
    except Exception as e:  # reported by the main thread
        errors.append(e)


errors = []
workers = [threading.Thread(target=work, args=(k, errors)) for k in range(3)]
for w in workers:
    w.start()
for w in workers:
    w.join()
assert not errors, errors
print("OK")
