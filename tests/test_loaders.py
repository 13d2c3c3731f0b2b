import json

import pytest

from proxymix.data.loaders import DataError, load_task, read_hf_dataset, read_jsonl


def _write(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_three_formats_detected_per_line(tmp_path):
    f = _write(tmp_path / "mix.jsonl", [
        {"prompt": "p1", "completion": "c1"},
        {"instruction": "Do it", "input": "x", "output": "c2"},
        {"instruction": "Only", "output": "c3"},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "c4"}]},
    ])
    ex = read_jsonl(f)
    assert [e.completion for e in ex] == ["c1", "c2", "c3", "c4"]
    assert ex[1].prompt == "Do it\nx"
    assert ex[2].prompt == "Only"
    assert ex[3].prompt == "system: s\nuser: u"


@pytest.mark.parametrize("bad, msg", [
    ("{not json", "invalid JSON"),
    (json.dumps({"foo": 1}), "unrecognised record"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), "no assistant turn"),
    (json.dumps({"prompt": "p", "completion": ""}), "empty completion"),
    (json.dumps([1, 2]), "expected a JSON object"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad, msg):
    f = _write(tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "b"}, bad])
    with pytest.raises(DataError, match=rf"bad.jsonl:2: .*{msg}"):
        read_jsonl(f)


def test_load_task_splits_are_deterministic(tmp_path):
    f = _write(tmp_path / "t.jsonl", [{"prompt": f"p{k}", "completion": f"c{k}"} for k in range(30)])
    a, b = load_task("t", f, 5, 5, seed=1), load_task("t", f, 5, 5, seed=1)
    assert a.test == b.test and a.val == b.val and len(a.train) == 20
    assert {e.prompt for e in a.test}.isdisjoint({e.prompt for e in a.train})
    assert load_task("t", f, 5, 5, seed=2).test != a.test
    with pytest.raises(DataError, match="need more than"):
        load_task("t", f, 20, 20, seed=1)
    with pytest.raises(DataError, match="file not found"):
        load_task("t", tmp_path / "missing.jsonl", 1, 1, 0)


def test_hf_dataset_on_disk(tmp_path):
    import datasets

    dd = datasets.DatasetDict({
        split: datasets.Dataset.from_list([{"prompt": f"{split}{k}", "completion": "y"} for k in range(4)])
        for split in ("train", "validation", "test")
    })
    dd.save_to_disk(str(tmp_path / "ds"))
    splits = read_hf_dataset(tmp_path / "ds")
    assert [e.prompt for e in splits["test"]] == [f"test{k}" for k in range(4)]
    task = load_task("ds", tmp_path / "ds", 1, 1, 0)
    assert task.val[0].prompt == "validation0"
