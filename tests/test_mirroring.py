"""Mirroring probes, the comparison, and the transfer gate on tiny models."""

import json

import numpy as np
import pytest

from conftest import TINY
from proxymix.cli import main
from proxymix.config import ConfigError, load_config
from proxymix.mirroring import compare, gate, model_key, register_report, vulnerabilities


def _run(L, R, tasks=("safety", "a", "b", "c")):
    return {"tasks": list(tasks), "L_full": L, "R_full": R, "sequence": "s", "seed": 0}


def test_vulnerabilities_by_hand():
    # domain rows: base, after a, after b, after c; columns a, b, c (safety row/col dropped)
    L = [[9, 9, 9, 9], [1, 4, 4, 4], [1, 1.0, 4, 4], [1, 2.0, 1.0, 4], [1, 3.0, 1.5, 1.0]]
    R = [[0] * 4, [100, 0, 0, 0], [100, 90, 0, 0], [100, 60, 80, 0], [100, 30, 70, 95]]
    vec, labels = vulnerabilities(_run(L, R), "pairs")
    # a<-b: log(L[2,a] / L[1,a]) = log(2 / 1); a<-c: log(3 / 2); b<-c: log(1.5 / 1)
    np.testing.assert_allclose(vec, np.log([2.0, 1.5, 1.5]))
    assert labels == ["a<-b", "a<-c", "b<-c"]
    tasks, names = vulnerabilities(_run(L, R), "tasks")
    # a: log(L[3,a] / L[1,a]) = log(3); b: log(L[3,b] / L[2,b]) = log(1.5)
    np.testing.assert_allclose(tasks, np.log([3.0, 1.5]))
    assert names == ["a", "b"]
    acc, _ = vulnerabilities(_run(L, R), "accuracy")
    np.testing.assert_allclose(acc, [60.0, 10.0])


def _probe(vulns_by_seed, key="k"):
    """A probe document whose 'tasks' vulnerabilities are the given vectors (one per seed)."""
    runs = []
    for seed, v in enumerate(vulns_by_seed):
        T = len(v) + 1
        L = np.ones((T + 1, T))
        for i, x in enumerate(v):
            L[T, i] = np.exp(x)  # 'tasks' vulnerability = log(L[T, i] / L[i+1, i]) = x
        R = np.zeros((T + 1, T))
        R[np.arange(1, T + 1), np.arange(T)] = 100.0  # every task learned on its own phase
        runs.append({"tasks": [f"t{k}" for k in range(T)], "L_full": L.tolist(), "R_full": R.tolist(),
                     "sequence": "seq1", "seed": seed})
    return {"runs": runs, "model_key": key, "model": {}, "n_params": 1, "schedule": "fixed:0.3",
            "cost": {"flops": 0, "wall_s": 0}}


def test_compare_pass_and_fail():
    rng = np.random.default_rng(0)
    base = np.arange(8, dtype=float)
    proxy = _probe([base + rng.normal(0, 0.1, 8) for _ in range(3)])
    same = _probe([2 * base + rng.normal(0, 0.1, 8) for _ in range(3)])
    flipped = _probe([-base + rng.normal(0, 0.1, 8) for _ in range(3)])
    assert compare(proxy, same, items="tasks", n_boot=200)["verdict"] == "PASS"
    res = compare(proxy, flipped, items="tasks", n_boot=200)
    assert res["verdict"] == "FAIL" and res["pooled"]["spearman"] < 0
    tied = _probe([np.zeros(8)] * 3)
    assert "tie" in compare(proxy, tied, items="tasks", n_boot=50)["reason"]


def test_compare_fails_when_a_side_did_not_learn_a_task():
    base = np.arange(8, dtype=float)
    proxy, target = _probe([base, base + 0.1]), _probe([base, base + 0.2])
    for run in proxy["runs"]:
        run["R_full"][3][2] = 20.0  # t2 reached only 20 points right after its phase
    res = compare(proxy, target, items="tasks", n_boot=50)
    assert res["verdict"] == "FAIL" and "proxy did not learn t2 (20)" in res["reason"]
    assert res["not_learned"] == {"proxy": {"t2": 20.0}, "target": {}}


def test_gate_decisions(tmp_path):
    cfg = load_config(None, ["model.hidden=32"])
    ctrl = tmp_path / "ctrl"
    assert gate(ctrl, cfg, force=False)[0] == "unchecked"
    report = tmp_path / "mirroring.json"
    report.write_text(json.dumps({"verdict": "FAIL", "reason": "spearman -0.2 below 0.3"}))
    register_report(ctrl, report, model_key(cfg))
    with pytest.raises(ConfigError, match="FAILED.*--force"):
        gate(ctrl, cfg, force=False)
    assert gate(ctrl, cfg, force=True)[0] == "forced"
    other = load_config(None, ["model.hidden=64"])
    assert gate(ctrl, other, force=False)[0] == "unchecked"  # the report is for another target
    report.write_text(json.dumps({"verdict": "PASS", "reason": "ok"}))
    register_report(ctrl, report, model_key(cfg))
    assert gate(ctrl, cfg, force=False) == ("ok", "Mirroring verdict PASS: ok")


def write_yaml_config(path, overrides):
    """Dotted overrides -> a nested YAML config file."""
    import yaml

    raw = {}
    for item in overrides:
        key, value = item.split("=", 1)
        section, _, name = key.rpartition(".")
        (raw.setdefault(section, {}) if section else raw)[name] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(raw))


def test_mirror_check_cli_and_run_gate(tmp_path, capsys):
    """mirror-check on tiny proxy/target configs writes the report; `run` refuses a FAIL unless --force."""
    from proxymix.controllers.features import GLOBAL_FEATURES, SLOT_FEATURES
    from proxymix.controllers.learned import LearnedController
    from proxymix.rl.ppo import SlotPolicy

    proxy, target = tmp_path / "proxy.yaml", tmp_path / "target.yaml"
    for path, hidden in ((proxy, 16), (target, 32)):
        write_yaml_config(path, [o for o in TINY if not o.startswith("model.hidden")] + [f"model.hidden={hidden}"])
    ctrl = tmp_path / "ctrl"
    LearnedController(SlotPolicy(len(SLOT_FEATURES), len(GLOBAL_FEATURES), 8)).save(ctrl, {"name": "t"})
    out = tmp_path / "mirror"
    assert main(["mirror-check", "--proxy", str(proxy), "--target", str(target), "--out", str(out),
                 "--seeds", "0", "1", "--items", "tasks", "--controller", str(ctrl)]) == 0
    doc = json.loads((out / "mirroring.json").read_text())
    assert doc["verdict"] in ("PASS", "WARN", "FAIL") and (out / "mirroring.png").is_file()
    for key in ("pooled", "per_sequence", "noise_floor", "proxy_vulnerability", "target_vulnerability"):
        assert key in doc
    assert doc["proxy"]["cost"]["flops"] > 0 and doc["target"]["cost"]["flops"] > 0
    # reuse the saved probes instead of re-running them
    assert main(["mirror-check", "--proxy", str(out / "probe_proxy.json"), "--target", str(out / "probe_target.json"),
                 "--out", str(tmp_path / "again"), "--items", "tasks"]) == 0
    # or assemble probes from finished run directories
    for seed in ("0", "1"):
        assert main(["run", "--config", str(proxy), "--controller", "fixed:0.3", "--seed", seed,
                     "--out", str(tmp_path / "pr" / seed), "data.sequence=seq1"]) == 0
    assert main(["mirror-check", "--proxy", str(tmp_path / "pr"), "--target", str(out / "probe_target.json"),
                 "--out", str(tmp_path / "from-runs"), "--items", "tasks"]) == 0
    from_runs = json.loads((tmp_path / "from-runs" / "mirroring.json").read_text())
    assert from_runs["pooled"] == doc["pooled"]  # same probes, same statistics
    assert main(["mirror-check", "--proxy", str(tmp_path / "pr"), "--target", str(tmp_path / "pr" / "0"),
                 "--out", str(tmp_path / "bad"), "--items", "tasks"]) == 0  # a single target seed: at best WARN
    # force a FAIL report for this target and check the gate in `run`
    reg = next((ctrl / "mirroring").glob("*.json"))
    reg.write_text(json.dumps({**doc, "verdict": "FAIL", "reason": "constructed failure"}))
    capsys.readouterr()
    assert main(["run", "--config", str(target), "--controller", str(ctrl), "--out", str(tmp_path / "r")]) == 2
    assert "refusing the transfer" in capsys.readouterr().err
    assert main(["run", "--config", str(target), "--controller", str(ctrl), "--out", str(tmp_path / "r"),
                 "--force"]) == 0
    assert "FORCED" in (tmp_path / "r" / "report.md").read_text()
