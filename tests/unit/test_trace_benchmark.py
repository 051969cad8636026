"""The trace benchmark on a tiny synthetic trace: it runs, the bound bounds every policy, the load
is the busiest day's, and a trace without time columns gets a message instead of a KeyError."""

import csv
import random
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import trace_utilisation as tu  # noqa: E402
from tracesim.bound import upper_bound  # noqa: E402
from tracesim.replay import Replay  # noqa: E402
from tracesim.sessions import DAY, H, load_per_day, load_sessions, scale_to_busiest_day  # noqa: E402

from hub_plugins.gpu.simulated import parse_spec  # noqa: E402

COLUMNS = ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "qos", "pod_phase",
           "creation_time", "deletion_time", "scheduled_time"]


def tiny_trace(path: Path, n: int = 120, seed: int = 3) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        t = 0
        for i in range(n):
            t += rng.randint(0, 4000) * (10 if i > n // 2 else 1)
            gpus = rng.choice([0, 1, 1, 1, 1, 2, 4, 8])
            milli = rng.choice([250, 500, 1000]) if gpus == 1 else (1000 if gpus else 0)
            dur = int(min(86400, rng.lognormvariate(9, 1.0)))
            w.writerow([f"p{i}", 1000, 1024, gpus, milli, "", "LS", "Succeeded", t, t + dur + 5, t + 5])
    return path


def test_runs_and_prints_the_contract_line(tmp_path, capsys):
    trace = tiny_trace(tmp_path / "pods.csv")
    assert tu.main(["--trace", str(trace), "--hosts", "2", "--gpus-per-host", "8", "--users", "6"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"trace: load=(\S+) gpulab_pct_of_bound=(\S+) fcfs_pct_of_bound=(\S+) refuse_pct_of_bound=(\S+) "
                     r"served_8gpu_pct=(\S+) mean_wait_all_min=(\S+) sharing_gain=(\S+)", last)
    assert m, last
    load, *pcts = (float(x) for x in m.groups()[:4])
    assert abs(load - 1.0) < 0.05
    assert all(0 < p <= 100.0 for p in pcts)


def test_the_bound_bounds_every_policy(tmp_path):
    sessions = load_sessions(tiny_trace(tmp_path / "pods.csv", n=200, seed=5), 8, 1, 8)
    scale_to_busiest_day(sessions, 16, 1.5)
    bound = upper_bound(sessions, 16, 24 * H)
    assert 0 < bound <= sum(s.gpus * s.active for s in sessions) + 1
    for name, pol in tu.policies(2).items():
        inv = parse_spec(tu.spec(2, 8, tu.shared_gpus(sessions, 16, 2) if pol.shares else 0))
        r = Replay(sessions, inv, pol, 8, 24 * H).run(7)
        if not pol.shares:  # shares count work in other units
            assert r.useful_gpu_s <= bound + 1, name
        assert len(r.served) + r.abandoned == len(sessions), name
        assert len(r.waits) == len(sessions) and max(r.waits.values()) <= 24 * H, name


def test_load_is_the_busiest_day(tmp_path):
    sessions = load_sessions(tiny_trace(tmp_path / "pods.csv"), 8, 1, 8)
    _, load = scale_to_busiest_day(sessions, 16, 1.2)
    assert abs(load - 1.2) < 0.05
    per_day = load_per_day(sessions, 16)
    assert max(per_day) <= load + 1e-9  # a calendar day is one of the 24 h windows
    assert sum(per_day) * 16 * DAY == pytest.approx(sum(s.gpus * s.active for s in sessions))


@pytest.mark.parametrize("header", [["name", "num_gpu", "gpu_milli"], ["name", "num_gpu", "gpu_milli", "creation_time"]])
def test_trace_without_time_columns_says_so(tmp_path, capsys, header):
    bad = tmp_path / "nodes.csv"
    bad.write_text(",".join(header) + "\n" + ",".join("1" for _ in header) + "\n")
    assert tu.main(["--trace", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "no time columns" in err and "deletion_time" in err and "--trace" in err
