"""Running a grid: a 2 x 2 sweep of tiny models end to end, an interrupted sweep that resumes (finished runs
skipped, the stopped run continuing from its checkpoint to the loss an uninterrupted run reaches), both ways of
using two cores, the validation loss over the whole split, progress, and results files that are refused when
corrupt or made for other data or settings."""

import csv
import json
import math
import threading

import numpy as np
import pytest

from npformer import backend
from npformer.data import CharTokenizer, train_val_split
from npformer.models import GPT
from npformer.scaling.grid import Plan, RunSpec
from npformer.scaling.records import load_results
from npformer.scaling.runner import SweepData, full_val_loss, run_one
from npformer.scaling.sweep import Progress, measure_modes, processes_usable, run_grid, run_sweep

TEXT = "to be or not to be, that is the question.\nwhether 'tis nobler in the mind to suffer\n" * 30
TINY = dict(block_size=16, batch_size=4)
REQUEST = {"preset": "test", "sizes": [[1, 8, 2], [1, 16, 2]]}


def tiny_data(text=TEXT) -> SweepData:
    tok = CharTokenizer.from_text(text)
    train_ids, val_ids = train_val_split(tok.encode(text), val_fraction=0.1)
    return SweepData.from_ids(train_ids, val_ids, tok.vocab_size, "test text")


def tiny_plan(data, steps=(6, 12), sizes=((1, 8, 2), (1, 16, 2))) -> Plan:
    runs = [RunSpec(L, C, H, steps=s, vocab_size=data.vocab_size, **TINY) for L, C, H in sizes for s in steps]
    predicted = {r.name: 0.001 * r.steps * r.n_embd for r in runs}
    runs.sort(key=lambda r: predicted[r.name], reverse=True)
    return Plan(runs=runs, predicted_s=predicted, makespan_s=sum(predicted.values()), jobs=1)


def sweep(out_dir, data, plan=None, **kwargs):
    lines = []
    plan = plan or tiny_plan(data)
    results, complete = run_sweep(str(out_dir), data, REQUEST, lambda: (plan, "runs"), log=lines.append, jobs=1,
                                  **kwargs)
    return results, complete, lines


def test_a_2x2_sweep_runs_end_to_end(tmp_path):
    data = tiny_data()
    results, complete, lines = sweep(tmp_path, data)
    assert complete and len(results["runs"]) == 4
    assert load_results(str(tmp_path / "results.json")) == json.loads(json.dumps(results))
    assert results["data"]["fingerprint"] == data.fingerprint and results["request"] == REQUEST
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {int(r["D"]) for r in rows} == {6 * 64, 12 * 64}
    assert len({r["N"] for r in rows}) == 2
    for r in results["runs"]:
        assert 0 < r["val_loss"] < math.log(data.vocab_size) + 1.0
        assert r["val_tokens"] == data.val_ids.size - 1  # every validation token after the first is scored
        assert r["C"] == 6 * r["N"] * r["D"] and r["wall_s"] > 0
    assert any(line.startswith("sweep: 4/4 runs done") for line in lines)


def test_an_interrupted_sweep_resumes(tmp_path):
    data = tiny_data()
    plan = tiny_plan(data)
    first, target = plan.runs[0], plan.runs[1]
    stop = threading.Event()

    def interrupt(event, name, step, steps):
        if name == target.name and step >= 5:
            stop.set()

    results, complete, _ = sweep(tmp_path, data, plan, stop=stop, progress_hook=interrupt, checkpoint_s=1e9)
    assert not complete and [r["name"] for r in results["runs"]] == [first.name]
    run_dir = tmp_path / "runs" / target.name
    assert (run_dir / "ckpt.npz").exists()
    finished = dict(results["runs"][0])

    def no_planning():
        raise AssertionError("a resumed sweep reads its plan from results.json")

    lines = []
    results, complete = run_sweep(str(tmp_path), data, REQUEST, no_planning, log=lines.append, jobs=1)
    assert complete and len(results["runs"]) == 4
    assert results["runs"][0] == finished  # skipped, not trained again
    assert sum(r["name"] == first.name for r in results["runs"]) == 1
    assert f"  {target.name}: resumed from its checkpoint at step 5/{target.steps}" in lines
    resumed = next(r for r in results["runs"] if r["name"] == target.name)
    straight = run_one(target, data, str(tmp_path / "straight"))
    assert resumed["val_loss"] == straight["val_loss"]  # the checkpoint continues exactly
    assert resumed["train_loss"] == straight["train_loss"]


@pytest.mark.parametrize("mode", ["runs", "data"])
def test_both_ways_of_using_two_cores(tmp_path, mode):
    data = tiny_data()
    plan = tiny_plan(data, steps=(4,))
    records = []
    assert run_grid(plan.runs, data, str(tmp_path), records.append, jobs=2, mode=mode, predicted=plan.predicted_s,
                    log=lambda line: None)
    alone = {r.name: run_one(r, data, None)["val_loss"] for r in plan.runs}
    assert sorted(r["name"] for r in records) == sorted(alone)
    for r in records:  # one BLAS thread per run, or the batch split over two replicas: rounding differs at most
        assert r["val_loss"] == pytest.approx(alone[r["name"]], rel=1e-4)


def test_measure_modes_times_both(tmp_path):
    if not processes_usable():
        pytest.skip("worker processes need fork and the NumPy backend")
    data = tiny_data()
    m = measure_modes(RunSpec(1, 16, 2, steps=4, vocab_size=data.vocab_size, **TINY), data, jobs=2, steps=2,
                      rounds=1)
    assert m["runs"] > 0 and m["data"] > 0 and m["single"] > 0 and m["choice"] in ("runs", "data")


def test_full_validation_loss_scores_every_window():
    data = tiny_data()
    spec = RunSpec(1, 16, 2, steps=1, vocab_size=data.vocab_size, block_size=7, batch_size=2)
    model = GPT(spec.model_config())
    val = data.val_ids
    loss, tokens = full_val_loss(model, val, 7, rows=3)
    n = val.size - 1
    assert tokens == n
    total = 0.0
    for s in range(0, n, 7):
        length = min(7, n - s)
        x, y = backend.asarray(val[None, s:s + length]), backend.asarray(val[None, s + 1:s + length + 1])
        total += backend.to_float(model.loss(x, y)) * length
        model.drop_caches()
    assert loss == pytest.approx(total / n, rel=1e-5)


def test_progress_reports_work_done_and_time_left():
    runs = [RunSpec(1, 8, 2, steps=s, vocab_size=10, **TINY) for s in (10, 30)]
    lines = []
    progress = Progress(runs, {runs[0].name: 10.0, runs[1].name: 30.0}, jobs=2, log=lines.append, every_s=1e9)
    progress.update("start", runs[0].name, 0, 10)
    progress.update("resumed", runs[1].name, 15, 30)
    progress.update("step", runs[0].name, 10, 10)
    progress.finish(runs[0].name)
    line = progress.line()
    assert "1/2 runs done" in line and "62% of the work" in line and "left ~" in line
    assert lines == [f"  {runs[1].name}: resumed from its checkpoint at step 15/30"]


def test_a_corrupt_results_file_is_refused(tmp_path):
    data = tiny_data()
    path = tmp_path / "results.json"
    path.write_text('{"version": 1, "runs": [', encoding="utf-8")
    with pytest.raises(ValueError, match="results file is corrupt .not JSON"):
        sweep(tmp_path, data)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="corrupt .a JSON list"):
        sweep(tmp_path, data)
    sweep(tmp_path / "good", data)
    results = json.loads((tmp_path / "good" / "results.json").read_text())
    results["runs"][1]["val_loss"] = float("nan")
    path.write_text(json.dumps(results), encoding="utf-8")
    with pytest.raises(ValueError, match="run 1: val_loss must be a positive finite number"):
        sweep(tmp_path, data)
    del results["runs"][1]["val_loss"]
    path.write_text(json.dumps(results), encoding="utf-8")
    with pytest.raises(ValueError, match="run 1: missing fields .'val_loss'."):
        sweep(tmp_path, data)


def test_a_sweep_for_other_data_or_settings_is_not_mixed_in(tmp_path):
    data = tiny_data()
    sweep(tmp_path, data, tiny_plan(data, steps=(4,), sizes=((1, 8, 2),)))
    with pytest.raises(ValueError, match="other data"):
        sweep(tmp_path, tiny_data(TEXT.replace("be", "go")))
    with pytest.raises(ValueError, match="planned with other settings .sizes"):
        run_sweep(str(tmp_path), data, {**REQUEST, "sizes": [[1, 8, 2]]}, lambda: None, log=lambda line: None)


def test_a_run_directory_holding_another_run_is_refused(tmp_path):
    data = tiny_data()
    spec = RunSpec(1, 8, 2, steps=3, vocab_size=data.vocab_size, **TINY)
    other = RunSpec(1, 8, 2, steps=4, vocab_size=data.vocab_size, **TINY)
    run_one(spec, data, str(tmp_path))
    with pytest.raises(ValueError, match="holds another run"):
        run_one(other, data, str(tmp_path))
    with pytest.raises(ValueError, match="vocab_size"):
        run_one(RunSpec(1, 8, 2, steps=3, vocab_size=99, **TINY), data, None)


def test_records_hold_numbers_from_the_whole_split_on_the_host(tmp_path):
    data = tiny_data()
    record = run_one(RunSpec(1, 8, 2, steps=2, vocab_size=data.vocab_size, **TINY), data, None)
    assert all(isinstance(record[k], (int, float)) for k in ("N", "D", "C", "val_loss", "train_loss", "wall_s"))
    assert np.isfinite(record["val_loss"])
