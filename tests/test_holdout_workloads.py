"""The held-out hidden-truth generators (benchmarks/holdout.py): out of tuning, run by name, and
written as the workload CSV an outsider feeds `ari estimate simulate`."""

from __future__ import annotations

import numpy as np

from ari_console import estimate as est
from benchmarks import bench_scheduler, hidden, holdout


def test_held_out_generators_stay_out_of_the_tuning_list_but_every_mode_runs_them_by_name():
    assert not set(holdout.MODELS) & set(hidden.MODELS)
    for name in holdout.MODELS:
        work, truth = bench_scheduler.workload(name, 400, 2)
        hours = np.array([h for h, _ in truth.values()])
        assert len(work) == 400 and abs(np.median(hours) - 6.0) < 0.01
        assert np.percentile(hours, 99) > 8 * np.median(hours)  # the long tail
        assert all(d.hours is None and d.mem_gb is None for d in work)  # the scheduler sees metadata only


def test_mitigated_cubes_past_the_size_limit_run_quicker_than_those_just_below_it_which_swap():
    n = 2000
    m = hidden.metadata(2 * n, np.random.default_rng(0))
    m.update(band=np.full(2 * n, 3), is_mosaic=np.zeros(2 * n, bool), array=np.full(2 * n, "12m"),
             n_spw=np.full(2 * n, 4), size_gb=np.full(2 * n, 30.0),
             n_chan=np.repeat([1920, 15360], n))  # cubes around the limit; cubes 8x bigger, binned under it
    hours, mem = holdout.mitigated(m, np.random.default_rng(1))
    under, over = slice(0, n), slice(n, 2 * n)
    assert np.mean(hours[over]) < 0.7 * np.mean(hours[under])  # 8x the channels, less time: no monotone fit
    assert np.mean(mem[under] > holdout.NODE_MEM_GB) > 2 * np.mean(mem[over] > holdout.NODE_MEM_GB)


def test_a_held_out_workload_written_as_csv_reads_back_with_its_nulls_and_truth(tmp_path):
    work, truth = holdout.workload("concat", 500, 3)
    holdout.write_csv(tmp_path / "w.csv", work, truth)
    back = est.read_workload((tmp_path / "w.csv").read_text(), "w.csv")
    assert back.datasets == work and back.truth == truth and back.ignored == ()
    assert sum(d.n_chan is None for d in back.datasets) > 30  # NULL channels stay unknown, never 0
