"""The grid: N counts the non-embedding parameters of the built model, run specs name what they depend on, and the
planner fills a time budget, or says clearly why it cannot."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npformer.models import GPT
from npformer.scaling.grid import LADDER, MIN_STEPS, RunSpec, _makespan, decades, plan_grid, token_ladder

SIZES = [(1, 16, 2), (2, 32, 4), (3, 48, 4)]
STEP_S = {(1, 16, 2): 0.004, (2, 32, 4): 0.01, (3, 48, 4): 0.03}


@pytest.mark.parametrize("L, C, H", LADDER[:4])
def test_N_is_the_built_models_parameters_without_its_tables(L, C, H):
    spec = RunSpec(L, C, H, steps=10, vocab_size=65)
    model = GPT(spec.model_config())
    tables = model.config.vocab_size * C + model.config.block_size * C  # token and position tables
    counts = spec.counts()
    assert counts["N"] == model.num_parameters() - tables == spec.N
    assert counts["N_total"] == model.num_parameters()
    assert counts["D"] == 10 * 16 * 64 and counts["C"] == 6 * counts["N"] * counts["D"]
    assert counts["C_attn"] == 6 * L * 64 * C * counts["D"]
    assert counts["flops"] > counts["C"]  # npformer.size adds the attention scores and the LM head


def test_the_ladder_spans_the_decades_the_sweep_needs():
    Ns = [RunSpec(L, C, H, steps=1, vocab_size=65).N for L, C, H in LADDER]
    assert Ns == sorted(Ns) and decades(Ns[:5]) >= 1.5 and decades(Ns) >= 2.5


def test_run_spec_round_trips_and_names_its_settings():
    spec = RunSpec(2, 32, 4, steps=100, vocab_size=65)
    assert RunSpec.from_dict(spec.to_dict()) == spec
    assert spec.name == "L2-C32-H4-T64-B16-S100-lr0.00212-s1337"
    assert RunSpec(2, 32, 4, steps=101, vocab_size=65).name != spec.name
    with pytest.raises(ValueError, match="not divisible"):
        RunSpec(2, 30, 4, steps=1, vocab_size=65)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        RunSpec(2, 32, 4, steps=0, vocab_size=65)
    with pytest.raises(ValueError, match="unknown fields"):
        RunSpec.from_dict({**spec.to_dict(), "dropout": 0.1})


@settings(deadline=None)
@given(budget_s=st.floats(400, 7200), jobs=st.integers(1, 3), d_points=st.integers(2, 6), d_span=st.floats(10, 40))
def test_plan_fills_the_budget(budget_s, jobs, d_points, d_span):
    overhead = {s: 0.5 for s in SIZES}
    plan = plan_grid(budget_s, SIZES, STEP_S, jobs, vocab_size=65, d_points=d_points, d_span=d_span,
                     overhead_s=overhead)
    assert 0.85 * budget_s <= plan.makespan_s <= 1.002 * budget_s
    assert len(plan.runs) == len(SIZES) * d_points
    steps = sorted({r.steps for r in plan.runs})
    assert steps[0] >= MIN_STEPS and steps[-1] / steps[0] == pytest.approx(d_span, rel=0.05)
    costs = [plan.predicted_s[r.name] for r in plan.runs]
    assert costs == sorted(costs, reverse=True)  # largest first: the packing the makespan assumes
    assert plan.makespan_s == pytest.approx(_makespan(costs, jobs))


def test_token_ladder_is_geometric_in_whole_steps():
    assert token_ladder(1024 * 1000, 4, 1000 / 125, 1024) == [125, 250, 500, 1000]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(sizes=[]), "the grid is empty"),
    (dict(d_points=0), "the grid is empty"),
    (dict(budget_s=0.05), "too small for one run"),
    (dict(budget_s=3.0), "too small for this grid"),
    (dict(budget_s=-1.0), "must be positive"),
    (dict(sizes=[(4, 64, 4)]), "no step time measured"),
])
def test_plan_refuses_what_cannot_be_run(kwargs, fragment):
    args = dict(budget_s=600.0, sizes=SIZES, seconds_per_step=STEP_S, jobs=2, vocab_size=65)
    args.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        plan_grid(**args)
