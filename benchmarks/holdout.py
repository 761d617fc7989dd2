"""Hidden-truth workloads kept out of tuning: the check of a scheduler nobody tuned on them.

Same interface as :mod:`benchmarks.hidden` (``MODELS``: name -> ``(metadata, rng) ->
(true hours at speed 1.0, true memory GB)``; :func:`workload`), scaled the same way
(median ~6 h, the study's figure, with a long tail), but *not* in ``hidden.MODELS``:
whoever tunes the predictor or the placement tunes on those twelve, and these six
stay unseen until the figures are printed (``bench_scheduler --hidden products`` and
the other modes accept their names).

Each has a mechanism none of the twelve has, taken from how the ALMA imaging
pipeline's cost behaves (its imaging workflow: ``hif_makeimlist`` lists one imaging
target per field and spectral window, ``hif_checkproductsize`` bins channels or
drops fields when a cube or the products exceed a size limit, ``hif_tclean`` makes a
dirty cube, its statistics, a mask and a clean per target):

- ``products``: the runtime is a sum over image products (targets x spws, plus a
  continuum image per target), each with a fixed overhead (dirty image, statistics,
  masks, primary beam) and a clean growing with its channels; the number of targets
  (sources of a multi-source MOUS) is not in the metadata. Small data sets with many
  products cost far more than their size says; memory follows the *largest* product,
  not the sum.
- ``mitigated``: cost grows with the cube (spws x channels x an image size that widens
  at low band and for mosaics) until the product-size limit, where the pipeline bins
  channels (by 2, 4, ...) to get under it: the biggest cubes are *cheaper* than the
  ones just below the limit, so no monotone feature fits. Between 60 % and 100 % of
  the limit, the unbinned cube no longer fits in a node-like 48 GB: memory jumps and
  the run swaps (2.5-4x slower).
- ``concat``: work per visibility: hours grow with the baselines (7 m: 66 against
  ~1000 for 12 m, so 7 m data are several times quicker than their size says) and
  quadratically with the execution blocks (a restore per EB, and the EBs concatenated
  and imaged jointly, each major cycle over all of them); and, as real archive rows have,
  a share of the data sets comes with metadata missing (NULL channels, size or spws).
- ``archive``: the study's looseness with its causes half-visible: hours a weak power law
  of size and the cube with an unexplained log-sd of 0.65; memory a mixture whose heavy
  group (cubes and mosaics imaged whole, 20-400 GB, 1.5x slower) is made likelier by a
  big cube or a mosaic but set by neither; a few MOUSes (0.5 %) with size NULL.

Two more draw their metadata from another archive than the twelve's (:func:`wide_metadata`:
bands 1-10, up to 32 spws and 7680 channels, up to 10 EBs, a third mosaics, sizes spread
twice as wide), so a predictor fitted to :func:`~benchmarks.hidden.metadata`'s ranges meets
values it never saw:

- ``widecubes``: hours a power law of size and the cube times a gamma (not lognormal) scatter,
  3 % of data sets swapping 3-8x slower; memory follows the cube and mosaics (log-sd 0.4), so
  most of it is foreseeable, but over half the queue needs more than a workstation's 24 GB
  and a few percent more than any node's 512 GB: the big nodes are the bottleneck.
- ``pereb``: hours a *sum* (an overhead per EB, a term in size, a term in the cube, each with
  its own scatter), which no log-linear form fits everywhere; memory unrelated to the
  metadata for one data set in ten (20-300 GB).

Each can be written as an outsider's files (``python -m benchmarks.holdout DIR [seeds...]
[models...]``: ``DIR/<model>-<seed>.csv`` with the metadata and the ``true_hours`` /
``true_mem_gb`` columns, NULL metadata as empty cells, and ``DIR/study-nodes.toml``, the
study's 31 nodes), for ``ari estimate simulate --workload DIR/concat-1.csv --nodes
DIR/study-nodes.toml``.

>>> ds, truth = workload("concat", 400, seed=2)
>>> round(float(np.median([h for h, _ in truth.values()])), 1), any(d.n_chan is None for d in ds)
(6.0, True)
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from ari_console import scheduler as sch

from .hidden import _scaled, metadata

MAX_CUBE_GB = 40.0
"""Product-size limit of ``mitigated`` (the order of the pipeline's default cube limit)."""
NODE_MEM_GB = 48.0
"""Memory past which ``mitigated``'s unbinned cube swaps on a node-like machine."""
MISSING = {"products": {"n_chan": 0.03}, "mitigated": {"n_chan": 0.03, "size_gb": 0.02},
           "concat": {"n_chan": 0.15, "size_gb": 0.05, "n_spw": 0.08, "n_eb": 0.05},
           "archive": {"size_gb": 0.005}}
"""Per generator, the share of data sets whose metadata column the archive gives as NULL."""


def _cube(m: dict) -> np.ndarray:
    """Spws x channels, in units of a 4 x 1920 setup."""
    return m["n_spw"] * m["n_chan"] / 7680.0


def products(m: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = len(m["size_gb"])
    targets = np.where(m["is_mosaic"], 1 + rng.binomial(1, 0.2, n), 1 + rng.poisson(1.2, n) + rng.poisson(
        np.where(rng.random(n) < 0.08, 10.0, 0.0)))  # a survey MOUS with a dozen sources now and then
    pointings = np.where(m["is_mosaic"], 3.0 + rng.poisson(8.0, n), 1.0)
    per_cube = 0.35 + 0.5 * (m["n_chan"] / 1920.0) ** 0.8 * pointings ** 0.5 * (m["size_gb"] / 30.0 / targets) ** 0.3
    per_cont = 0.2 + 0.15 * pointings ** 0.5
    raw = targets * (m["n_spw"] * per_cube + per_cont)
    raw = raw * np.where(m["array"] == "7m", 0.6, 1.0) * np.exp(rng.normal(0, 0.3, n))
    image = (7.0 / m["band"]) ** 1.5 * pointings ** 0.7
    mem = 4.0 + 6.0 * image * (m["n_chan"] / 1920.0) ** 0.7 * np.exp(rng.normal(0, 0.3, n))
    return _scaled(raw), np.clip(mem, 2.0, 900.0)


def mitigated(m: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = len(m["size_gb"])
    image = (7.0 / m["band"]) ** 2 * np.where(m["is_mosaic"], rng.uniform(3, 12, n), 1.0) * np.where(
        m["array"] == "7m", 0.3, 1.0) * np.exp(rng.normal(0, 0.5, n))
    cube_gb = 2.5 * image * m["n_chan"] / 1920.0 * m["n_spw"] ** 0.5  # the biggest spw's cube and its kin
    nbin = 2.0 ** np.ceil(np.log2(np.maximum(cube_gb / MAX_CUBE_GB, 1.0)))
    kept = cube_gb / nbin
    mem = np.clip(3.0 + 1.1 * kept * np.exp(rng.normal(0, 0.2, n)), 2.0, 900.0)
    swapping = (nbin == 1) & (kept > 0.6 * MAX_CUBE_GB)
    mem = np.where(swapping, np.maximum(mem, NODE_MEM_GB * rng.uniform(1.0, 1.6, n)), mem)
    raw = ((m["size_gb"] / 30.0) ** 0.4 * (1.0 + kept / 4.0) ** 0.8 * m["n_spw"] ** 0.3
           * np.where(swapping, rng.uniform(2.5, 4.0, n), 1.0) * np.exp(rng.normal(0, 0.35, n)))
    return _scaled(raw), mem


def concat(m: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = len(m["size_gb"])
    baselines = np.where(m["array"] == "7m", 66.0, rng.uniform(700, 1200, n))
    per_eb = m["size_gb"] / m["n_eb"]
    ebs = m["n_eb"] * (1.0 + 0.3 * (m["n_eb"] - 1))  # a restore per EB, and joint imaging's cross terms
    raw = ((per_eb / 30.0) ** 0.5 * (baselines / 900.0) ** 0.7 * ebs
           * _cube(m) ** 0.25 * np.where(m["is_mosaic"], 1.5, 1.0) * np.exp(rng.normal(0, 0.4, n)))
    mem = np.clip(6.0 * m["n_eb"] ** 0.8 * np.maximum(_cube(m), 0.05) ** 0.4 * np.where(m["is_mosaic"], 2.0, 1.0)
                  * np.exp(rng.normal(0, 0.3, n)), 2.0, 900.0)
    return _scaled(raw), mem


def archive(m: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = len(m["size_gb"])
    heavy = rng.random(n) < 0.05 + 0.08 * (_cube(m) > 1) + 0.07 * m["is_mosaic"]
    raw = (m["size_gb"] ** 0.6 * _cube(m) ** 0.15 * np.where(heavy, 1.5, 1.0) * np.exp(rng.normal(0, 0.65, n)))
    mem = np.where(heavy, np.exp(rng.uniform(np.log(20), np.log(400), n)),
                   np.exp(rng.normal(np.log(9.0), 0.5, n)) * np.where(m["is_mosaic"], 1.3, 1.0))
    return _scaled(raw), np.clip(mem, 2.0, 900.0)


def wide_metadata(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Archive metadata of ``n`` data sets, from wider ranges than :func:`~benchmarks.hidden.metadata`'s."""
    n_eb = rng.choice(np.arange(1, 11), n, p=np.array([40, 20, 12, 8, 6, 5, 3, 2, 2, 2]) / 100)
    mosaic = rng.random(n) < 0.3
    array = np.where(rng.random(n) < 0.28, "7m", "12m")
    size = (np.exp(rng.normal(np.log(15), 1.2, n)) * n_eb * np.where(mosaic, 2.0, 1.0)
            * np.where(array == "7m", 0.3, 1.0))
    return dict(
        size_gb=np.clip(size, 0.2, 6000),
        n_spw=rng.choice([1, 3, 4, 6, 8, 12, 16, 32], n, p=[.04, .06, .5, .05, .15, .05, .1, .05]),
        n_chan=rng.choice([64, 128, 480, 960, 1920, 3840, 7680], n, p=[.1, .15, .15, .2, .2, .15, .05]),
        array=array,
        band=rng.choice(np.arange(1, 11), n, p=[.02, .02, .22, .06, .04, .24, .24, .08, .05, .03]),
        is_mosaic=mosaic,
        n_eb=n_eb,
    )


def widecubes(m: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = len(m["size_gb"])
    cube = m["n_spw"] * m["n_chan"]
    raw = m["size_gb"] ** 0.65 * (cube / 2000.0) ** 0.25 * (1 + 0.8 * m["is_mosaic"]) * rng.gamma(2.0, 0.5, n)
    raw = raw * np.where(rng.random(n) < 0.03, rng.uniform(3, 8, n), 1.0)
    mem = 3.0 + 0.004 * cube * (1 + 2 * m["is_mosaic"]) * np.exp(rng.normal(0, 0.4, n))
    return _scaled(raw), np.clip(mem, 2.0, 700.0)


def pereb(m: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = len(m["size_gb"])
    cube = m["n_spw"] * m["n_chan"]
    raw = (0.8 * m["n_eb"] + 0.02 * m["size_gb"] * np.exp(rng.normal(0, 0.7, n))
           + 0.0004 * cube * np.exp(rng.normal(0, 0.5, n)))
    mem = np.exp(rng.normal(np.log(8.0), 0.5, n))
    odd = rng.random(n) < 0.10
    return _scaled(raw), np.where(odd, rng.uniform(20, 300, n), mem)


MODELS = {"products": products, "mitigated": mitigated, "concat": concat, "archive": archive,
          "widecubes": widecubes, "pereb": pereb}
METADATA = {"widecubes": wide_metadata, "pereb": wide_metadata}
"""Generators whose metadata come from :func:`wide_metadata` (the others: ``hidden.metadata``)."""


def _blank(m: dict, model: str, rng: np.random.Generator) -> dict:
    """The metadata as the scheduler sees it: NULL where the archive gives none (per :data:`MISSING`)."""
    seen = {k: v.astype(object) for k, v in m.items()}
    for col, share in MISSING.get(model, {}).items():
        seen[col][rng.random(len(seen[col])) < share] = None
    return seen


def workload(model: str, n: int = 6000, seed: int = 1
             ) -> tuple[list[sch.DataSet], dict[str, tuple[float, float]]]:
    """(data sets with metadata only, some of it NULL; uid -> (true hours, true memory GB))."""
    rng = np.random.default_rng(seed)
    m = METADATA.get(model, metadata)(n, rng)
    hours, mem = MODELS[model](m, rng)
    seen = _blank(m, model, rng)
    out, truth = [], {}
    for i in range(n):
        uid = f"uid://A001/X{seed:x}/X{i:x}"
        size, spw, chan, eb = (seen[k][i] for k in ("size_gb", "n_spw", "n_chan", "n_eb"))
        out.append(sch.DataSet(uid, size_gb=None if size is None else round(float(size), 2),
                               array=str(m["array"][i]), band=int(m["band"][i]),
                               n_spw=None if spw is None else int(spw), n_chan=None if chan is None else int(chan),
                               is_mosaic=bool(m["is_mosaic"][i]), n_eb=None if eb is None else int(eb)))
        truth[uid] = (round(float(hours[i]), 3), round(float(mem[i]), 1))
    return out, truth


STUDY_NODES_TOML = """\
# The study's cluster (benchmarks.bench_scheduler.study_cluster): 31 nodes.
[[node]]
name = "ws"          # old workstations: no walltime
count = 16
slots = 1
mem_gb = 24
speed = 0.6

[[node]]
name = "mup"
count = 12
slots = 2
mem_gb = 64
walltime_h = 48
speed = 1.0

[[node]]
name = "hpc"
count = 3
slots = 4
mem_gb = 512
walltime_h = 240
speed = 1.2
"""
CSV_COLUMNS = ("uid", "size_gb", "n_spw", "n_chan", "array", "band", "is_mosaic", "n_eb", "true_hours", "true_mem_gb")


def write_csv(path: Path, datasets: list[sch.DataSet], truth: dict[str, tuple[float, float]]) -> None:
    """A workload CSV of ``datasets`` with their truth columns (unknown metadata as empty cells)."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(CSV_COLUMNS)
        for d in datasets:
            out.writerow([d.uid, d.size_gb, d.n_spw, d.n_chan, d.array, d.band,
                          "" if d.is_mosaic is None else str(d.is_mosaic).lower(), d.n_eb, *truth[d.uid]])


def main(argv: list[str] | None = None) -> None:
    """Write each model's workload for each seed (default: every model, seeds 1-3) and the study's nodes."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return
    where = Path(args[0])
    seeds = [int(a) for a in args[1:] if a.isdigit()] or [1, 2, 3]
    models = [a for a in args[1:] if not a.isdigit()] or list(MODELS)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model {unknown[0]!r} — known: {', '.join(MODELS)}")
    where.mkdir(parents=True, exist_ok=True)
    (where / "study-nodes.toml").write_text(STUDY_NODES_TOML)
    for model in models:
        for seed in seeds:
            write_csv(where / f"{model}-{seed}.csv", *workload(model, 6000, seed))
            print(where / f"{model}-{seed}.csv")


if __name__ == "__main__":
    main()
