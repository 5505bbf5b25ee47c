"""Resume after ``restore_best``: the checkpoint keeps the training state (last parameters,
optimizer moments, RNG, averages) apart from the best parameters it returns, so 150 steps and a
resume to 300 are the straight 300-step run."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen
from probgen.core.checkpoint import atomic_save, load_checkpoint


def program(x):
    loc = pyro.param("loc", torch.zeros(2, dtype=torch.float64))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """Training data around 3, validation around 0.5: the validation loss is best early
    (near step 50 at lr 0.01) and worse at the end, so restore_best changes the parameters."""
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(64, 2, generator=generator, dtype=torch.float64) + 3.0
    held_out = torch.randn(32, 2, generator=generator, dtype=torch.float64) + 0.5
    return train, held_out


def run(num_steps: int, ema_decay: float | None, restore_best: bool = True, **kwargs):
    """fit with validation every 10 steps; returns the result and the parameters seen at each
    validation (a callback's record, independent of the checkpoint's best copy)."""
    train, held_out = data()
    seen: dict[int, torch.Tensor] = {}

    def record(state) -> None:
        if state.validation and state.validation[-1][0] == state.step + 1:
            seen[state.step + 1] = pyro.param("loc").detach().clone()

    result = probgen.fit(program, train, num_steps=num_steps, batch_size=16, optim=0.01, seed=3,
                         validation=held_out, validate_every=10, restore_best=restore_best,
                         ema_decay=ema_decay, progress=False, callbacks=[record], **kwargs)
    return result, seen


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_after_restore_best_continues_from_the_last_training_state(tmp_path, ema_decay):
    straight, _ = run(300, ema_decay, checkpoint=tmp_path / "straight.pt")
    straight_loc = pyro.param("loc").detach().clone()
    pyro.clear_param_store()

    path = tmp_path / "run.pt"
    first, seen_first = run(150, ema_decay, checkpoint=path)
    assert first.best_step < 150  # restore_best put other parameters back
    if ema_decay is None:  # without averaging, the best parameters are the ones validated
        torch.testing.assert_close(pyro.param("loc").detach(), seen_first[first.best_step],
                                   rtol=0, atol=0)
    pyro.clear_param_store()  # as in a fresh process
    resumed, _ = run(300, ema_decay, checkpoint=path, resume=True)

    assert resumed.losses == straight.losses  # every step after 150 is the straight run's
    assert resumed.validation == straight.validation
    assert resumed.best_step == straight.best_step
    torch.testing.assert_close(pyro.param("loc").detach(), straight_loc, rtol=0, atol=1e-10)
    # the raw parameters training ended with (kept for a further resume) are the straight run's
    ends = [load_checkpoint(p)["training_state"]["param_store"]["params"]["loc"]
            for p in (path, tmp_path / "straight.pt")]
    torch.testing.assert_close(ends[0], ends[1], rtol=0, atol=1e-10)
    assert (ends[0] - straight_loc).abs().max() > 0.1  # and differ from the returned best


def test_returned_parameters_are_the_best_validated_ones(tmp_path):
    result, seen = run(150, None, checkpoint=tmp_path / "run.pt")
    best_step = min(result.validation, key=lambda entry: entry[1])[0]
    assert result.best_step == best_step and best_step < 150
    torch.testing.assert_close(pyro.param("loc").detach(), seen[best_step], rtol=0, atol=0)
    # probgen.load on the checkpoint gives what fit returned: the best parameters
    pyro.clear_param_store()
    probgen.load(tmp_path / "run.pt", model=program)
    torch.testing.assert_close(pyro.param("loc").detach(), seen[best_step], rtol=0, atol=0)


def test_a_checkpoint_without_a_separate_training_state_still_resumes(tmp_path):
    """Files written before the training state was kept apart: resume from their parameters."""
    path = tmp_path / "run.pt"
    run(100, None, checkpoint=path)
    state = load_checkpoint(path)
    state.pop("training_state", None)  # the old layout
    atomic_save(state, path)
    pyro.clear_param_store()
    resumed, _ = run(150, None, checkpoint=path, resume=True)
    assert resumed.num_steps == 150 and len(resumed.losses) == 150


def test_resume_after_returning_the_averages_continues_from_the_raw_parameters(tmp_path):
    """ema_decay without restore_best: fit returns θ̄ and the checkpoint keeps θ to go on from;
    probgen.load gives what fit returned."""
    straight, _ = run(300, 0.9, restore_best=False)
    straight_loc = pyro.param("loc").detach().clone()
    pyro.clear_param_store()
    path = tmp_path / "run.pt"
    run(150, 0.9, restore_best=False, checkpoint=path)
    returned = pyro.param("loc").detach().clone()
    pyro.clear_param_store()
    probgen.load(path, model=program)
    torch.testing.assert_close(pyro.param("loc").detach(), returned, rtol=0, atol=0)
    pyro.clear_param_store()
    resumed, _ = run(300, 0.9, restore_best=False, checkpoint=path, resume=True)
    assert resumed.losses == straight.losses
    torch.testing.assert_close(pyro.param("loc").detach(), straight_loc, rtol=0, atol=1e-10)


def test_the_run_time_adds_up_across_resumes(tmp_path):
    """run_seconds counts every call of a run: a first call slowed to >= 0.6 s by a sleeping
    callback, then a fast resume, gives a run time >= 0.6 s beyond the resume's own; a file
    without the record gives None rather than an undercount."""
    import time

    path = tmp_path / "run.pt"
    train, _ = data()
    first = probgen.fit(program, train, num_steps=30, batch_size=16, optim=0.01, seed=3,
                        checkpoint=path, progress=False,
                        callbacks=[lambda state: time.sleep(0.02)])
    assert first.seconds >= 0.6 and first.run_seconds == pytest.approx(first.seconds, abs=0.2)
    assert 0 < first.run_cpu_seconds < first.run_seconds  # the sleep costs wall, not CPU
    pyro.clear_param_store()
    resumed = probgen.fit(program, train, num_steps=60, batch_size=16, optim=0.01, seed=3,
                          checkpoint=path, resume=True, progress=False)
    assert resumed.seconds < 0.6
    assert resumed.run_seconds >= resumed.seconds + 0.6
    assert resumed.run_cpu_seconds >= first.run_cpu_seconds

    state = load_checkpoint(path)
    assert state["elapsed"][0] == pytest.approx(resumed.run_seconds, abs=0.2)
    del state["elapsed"]  # as a file written before the run time was recorded
    atomic_save(state, path)
    pyro.clear_param_store()
    later = probgen.fit(program, train, num_steps=90, batch_size=16, optim=0.01, seed=3,
                        checkpoint=path, resume=True, progress=False)
    assert later.run_seconds is None and later.run_cpu_seconds is None
    assert later.seconds > 0
