import csv
import json
from pathlib import Path

import pytest
import yaml

from conftest import TINY
from proxymix.cli import main


def test_run_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--config", "configs/quick.yaml", "--controller", "fixed:0.2", "--out", str(out),
                 *[o for o in TINY if not o.startswith("seed")], "--seed", "1"]) == 0
    for name in ("config.yaml", "metrics.json", "R.csv", "mixture.csv", "report.md", "R.png", "mixture.png"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    for key in ("avg_accuracy", "avg_incremental", "forgetting", "forgetting_first", "bwt", "fwt", "safety",
                "over_refusal", "R", "tasks", "flops", "wall_s"):
        assert key in m, key
    assert m["seed"] == 1 and m["controller"] == "fixed:0.2"
    rows = list(csv.DictReader((out / "mixture.csv").open()))
    assert len(rows) == 6 and {"step", "task", "w:current", "w:safety", "w:replay:sort"} <= set(rows[0])
    assert "proxymix run: fixed:0.2" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("args, msg", [
    (["--config", "missing.yaml"], "config file not found"),
    (["--config", "configs/quick.yaml", "train.lrr=1"], "did you mean 'lr'"),
    (["--config", "configs/quick.yaml", "--controller", "fixd:0.3"], "unknown controller"),
    (["--config", "configs/quick.yaml", "data.sequence=[sort, nope]"], "unknown task"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, msg):
    assert main(["run", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_compare_with_equal_budget(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--config", "configs/quick.yaml", "--out", str(out), "--methods", "no_replay", "fixed:0.4",
            "equal:fixed:0.4", "--seeds", "0", "1", "--workers", "1", *[o for o in TINY if not o.startswith("seed")]]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 6
    equal = [r for r in results if r["method"] == "equal:fixed:0.4"]
    assert all(r["replay_share"] == pytest.approx(0.4, abs=1e-3) for r in equal)
    for r in equal:  # each run directory records the controller it ran, not the config file's
        assert yaml.safe_load((Path(r["dir"]) / "config.yaml").read_text())["controller"]["name"] == "fixed:0.400"
    table = (out / "table.md").read_text()
    assert "| no_replay | 2 |" in table and "equal:fixed:0.4" in table
    # resuming keeps finished runs and runs nothing new
    assert main(args) == 0
    assert len(json.loads((out / "results.json").read_text())) == 6


def test_doremi_weights_transfer_as_static_weights(tmp_path, capsys):
    tiny = [o for o in TINY if not o.startswith("seed")]
    proxy, target = tmp_path / "doremi", tmp_path / "static"
    assert main(["run", "--config", "configs/quick.yaml", "--controller", "doremi:0.4", "--out", str(proxy),
                 *tiny]) == 0
    assert main(["run", "--config", "configs/quick.yaml", "--controller", f"static:{proxy}", "--out", str(target),
                 *tiny, "--seed", "3"]) == 0

    def rows(run):
        return list(csv.DictReader((run / "mixture.csv").open()))

    cols = [c for c in rows(proxy)[0] if c.startswith("w:")]
    for task in ("sort", "capital", "max"):
        src = [r for r in rows(proxy) if r["task"] == task]
        dst = [r for r in rows(target) if r["task"] == task]
        assert sum(float(r["w:current"]) for r in src) / len(src) == pytest.approx(0.6, abs=1e-5)
        for c in cols:  # every decision of the phase replays the phase mean of the doremi run
            mean = sum(float(r[c]) for r in src) / len(src)
            assert all(float(r[c]) == pytest.approx(mean, abs=1e-5) for r in dst), (task, c)
    # another sequence has buffers the recorded run never had: one line, exit 2, no run directory
    capsys.readouterr()
    assert main(["run", "--config", "configs/quick.yaml", "--controller", f"static:{proxy}", "--out",
                 str(tmp_path / "bad"), *tiny, "data.sequence=[sort, code, max]"]) == 2
    err = capsys.readouterr().err
    assert "no recorded weight for slot" in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("methods, msg", [
    (["fixed:0.3", "data.sequence=[sort, max]"], "looks like a config override; put overrides before --methods"),
    (["fixed:0.3", "equal:fixd:0.3"], "unknown controller 'fixd:0.3'"),
])
def test_compare_checks_methods_before_running(tmp_path, capsys, methods, msg):
    assert main(["compare", "--config", "configs/quick.yaml", "--out", str(tmp_path / "c"), "--methods",
                 *methods]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()
