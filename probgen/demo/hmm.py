"""``probgen demo``: Bernoulli HMMs on the JSB chorales, fitted by Baum-Welch."""

from __future__ import annotations

from probgen.core.paths import data_dirs
from probgen.core.result import LogLikelihood
from probgen.data.jsb import find_jsb_file, load_jsb_chorales
from probgen.demo.registry import DemoData, DemoEntry, DemoUnavailable, register_demo
from probgen.infer.fit import fit
from probgen.models.hmm import HMM, evaluate_forward, initialize_from_data

__all__ = ["demo_entries"]


@register_demo(order=30)
def demo_entries(smoke: bool) -> list[DemoEntry]:
    """Bernoulli HMMs with a few state counts on JSB chorales, fitted by Baum-Welch
    (``probgen.fit(..., method="baum_welch")``).

    Raises :class:`DemoUnavailable` when the chorales are neither local nor downloadable.
    """
    if find_jsb_file() is None:
        try:
            load_jsb_chorales(timeout=10.0)  # downloads, checks and caches
        except Exception as error:  # offline, or the source moved: the demo goes on without it
            first = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
            searched = ", ".join(str(folder) for folder in data_dirs("jsb_chorales"))
            raise DemoUnavailable(
                f"jsb_chorales (HMMs): the JSB chorales are not in {searched} and the download "
                f"failed ({first}); put jsb-chorales-quarter.json in $PROBGEN_DATA/jsb_chorales "
                "to include them") from error

    def load(smoke: bool) -> DemoData:
        data = load_jsb_chorales()
        train, test = (data.train[:40], data.test[:20]) if smoke else (data.train, data.test)
        return DemoData("jsb_chorales", train.as_tuple(), test.as_tuple(),
                        f"JSB chorales, 88-key piano rolls at quarter notes, {len(train)} train / "
                        f"{len(test)} test chorales (per-example = per chorale)")

    def make_run(num_states: int, num_steps: int):
        def run(data: DemoData, out_dir: str) -> LogLikelihood:
            hmm = HMM(num_states, "bernoulli", num_features=88).double()
            initialize_from_data(hmm, *data.train, seed=0)
            fit(hmm, data.train, method="baum_welch", num_steps=num_steps, tol=1e-5,
                pseudocount=0.1, seed=0, progress=False)
            return evaluate_forward(hmm, data.test)

        return run

    states = (4, 16) if smoke else (8, 32)
    num_steps = 10 if smoke else 40
    return [DemoEntry("jsb_chorales", f"hmm-{s}", make_run(s, num_steps), load) for s in states]
