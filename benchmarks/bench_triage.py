"""How fast triage classifies a huge CASA log, and whether memory stays flat.

Target: a 1 GB log classifies in seconds with flat memory (peak RSS does not grow with
the log). The log is a realistic pipeline casa log: the leap-second SEVERE noise at start,
stage banners, mostly INFO lines from tclean/flagdata/the pipeline, a WARN now and then,
and the failure (a MemoryError traceback in hif_makeimlist) near the end.

Run: ``.venv/bin/python -m benchmarks.bench_triage [SIZE_MB]`` (default 1024).
"""

from __future__ import annotations

import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from ari_console import triage

TARGET_SECONDS = 10.0
LEAP = ("2026-11-25 08:00:01\tSEVERE\tMeasTable::dUTC(Double) (file MeasTable.cc, line 4290)\tLeap second table TAI_UTC seems out-of-date.\n"
        "2026-11-25 08:00:01\tSEVERE\tMeasTable::dUTC(Double) (file MeasTable.cc, line 4290)+\tUntil the table is updated (see the CASA documentation or your system admin),\n")
INFO = (
    "tclean::SIMinorCycleController::printSummary\tRun Hogbom minor-cycle on {n} chans | CycleThreshold={x:.5f}, CycleNiter=100000, Gain=0.1",
    "tclean::SIImageStore::getPSFSidelobeLevel\tPSF sidelobe level is {x:.4f} for channel {n}",
    "hif_makeimages::pipeline.hif.heuristics.imageparams_base::casa\tUsing cell size 0.{n}arcsec for field NGC_1068 spw 25",
    "flagdata::AgentFlagger::run\tChunk = {n} [progress: {x:.2f}%]",
    "tclean::SynthesisImagerVi2::executeMajorCycle\t----------------------------------------------------------- Run Major Cycle {n} -------------------------------------",
    "applycal::Calibrater::correct\tApplying calibration to chunk {n}, rows {n} of {n}",
)
WARN = "2026-11-25 09:{m:02d}:00\tWARN\ttclean::SIImageStore::restore\tRestoring with an empty model image for channel {n}. Only residuals will be processed.\n"
FAILURE = (
    "2026-11-25 23:59:00\tINFO\thif_makeimlist::::casa\t##### Begin Task: hif_makeimlist     #####\n"
    "2026-11-25 23:59:01\tSEVERE\thif_makeimlist::pipeline.h.cli.utils::casa\tError executing pipeline task hif_makeimlist.\n"
    "2026-11-25 23:59:01\tSEVERE\thif_makeimlist::pipeline.h.cli.utils::casa+\tTraceback (most recent call last):\n"
    "2026-11-25 23:59:01\tSEVERE\thif_makeimlist::pipeline.h.cli.utils::casa+\tMemoryError\n"
    "2026-11-25 23:59:02\tINFO\t::casa\tTerminating procedure execution ...\n"
)


def block(rng: random.Random, lines: int = 20000) -> str:
    """About 2 MB of pipeline INFO lines with one stage banner and a rare WARN."""
    out = [f"2026-11-25 09:00:00\tINFO\thif_makeimages::::casa\t##### Begin Task: tclean             #####\n"]
    for i in range(lines):
        stamp = f"2026-11-25 {10 + i % 12:02d}:{i % 60:02d}:{(i * 7) % 60:02d}"
        if i % 2000 == 1999:
            out.append(WARN.format(m=i % 60, n=i))
        else:
            msg = INFO[i % len(INFO)].format(n=rng.randrange(1, 4000), x=rng.random() * 100)
            out.append(f"{stamp}\tINFO\t{msg}\n")
    return "".join(out)


def write_log(path: Path, size_mb: int) -> int:
    """A log of about ``size_mb`` MB ending in the failure; its size in bytes."""
    rng = random.Random(42)
    blocks = [block(rng) for _ in range(8)]
    target = size_mb * 1024 * 1024
    written = 0
    with open(path, "w") as f:
        f.write(LEAP)
        i = 0
        while written < target:
            text = blocks[i % len(blocks)]
            f.write(text)
            written += len(text)
            i += 1
        f.write(FAILURE)
    return path.stat().st_size


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warn_heavy_seconds(lines: int = 200_000) -> tuple[float, float]:
    """Microseconds per line for WARN lines that repeat one shape, and for all-different ones."""
    rng = random.Random(7)
    words = "channel spw antenna flagged scan field data selection returned rows baseline weight sigma model".split()
    repeated = [f"2026-11-25 09:00:00\tWARN\tflagdata::AgentFlagger::run\tChannel {i} of spw 25 is fully flagged\n"
                for i in range(lines)]
    unique = [f"2026-11-25 09:00:00\tWARN\tcasa::X::y\t" + " ".join(rng.choice(words) for _ in range(14)) + "\n"
              for i in range(lines // 4)]
    out = []
    for batch in (repeated, unique):
        t0 = time.perf_counter()
        triage.classify(batch)
        out.append((time.perf_counter() - t0) / len(batch) * 1e6)
    return out[0], out[1]


def main(argv: list[str] | None = None) -> None:
    """Generate the logs, classify them, print seconds, MB/s, peak RSS and the verdict."""
    args = sys.argv[1:] if argv is None else argv
    size_mb = int(args[0]) if args else 1024
    with tempfile.TemporaryDirectory(prefix="ari-bench-triage-") as tmp:
        small = Path(tmp) / "casa-small.log"
        write_log(small, max(1, size_mb // 8))
        rss_start = peak_rss_mb()
        triage.classify_file(small)
        rss_small = peak_rss_mb()
        small.unlink()
        log = Path(tmp) / "casa-20261125-080000.log"
        t0 = time.perf_counter()
        size = write_log(log, size_mb)
        gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        verdict = triage.classify_file(log)
        seconds = time.perf_counter() - t0
        rss_big = peak_rss_mb()
    mb = size / 1024 / 1024
    print(f"log: {mb:.0f} MB (generated in {gen:.1f} s)")
    print(f"classify: {seconds:.2f} s, {mb / seconds:.0f} MB/s")
    print(f"peak RSS: {rss_start:.0f} MB at start, {rss_small:.0f} MB after a {size_mb // 8} MB log, "
          f"{rss_big:.0f} MB after the {mb:.0f} MB log (flat: +{rss_big - rss_small:.0f} MB for 8x the size)")
    print(f"verdict: {verdict.category} stage={verdict.stage} line={verdict.line} rule={verdict.rule}")
    repeated, unique = warn_heavy_seconds()
    print(f"non-INFO lines (they reach the rules): {repeated:.1f} us/line when repetitive, {unique:.1f} us/line when all different")
    scaled = seconds * 1024 / mb
    print(f"target: 1 GB in <= {TARGET_SECONDS:.0f} s -> {scaled:.1f} s per GB: {'met' if scaled <= TARGET_SECONDS else 'NOT met'}")


if __name__ == "__main__":
    main()
