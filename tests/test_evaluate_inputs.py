"""probgen.evaluate takes what probgen.fit takes (a Dataset, a DataLoader), refuses a device the
machine lacks in the caller's terms, and is both a function and the package the API docs name."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy.stats import norm
from torch.distributions import constraints
from torch.utils.data import DataLoader, TensorDataset

import probgen


def regression(x, y):
    """y ~ N(w·x + b, σ): a user's program with side data (inputs x)."""
    weight = pyro.param("weight", torch.tensor([0.5, -1.0], dtype=torch.float64))
    bias = pyro.param("bias", torch.tensor(0.2, dtype=torch.float64))
    scale = pyro.param("scale", torch.tensor(0.7, dtype=torch.float64),
                       constraint=constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(x @ weight + bias, scale), obs=y)


def _data(n: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return x, torch.randn(n, generator=generator, dtype=torch.float64)


def _by_hand(x: torch.Tensor, y: torch.Tensor) -> list[float]:
    loc = x.numpy() @ [0.5, -1.0] + 0.2
    return norm.logpdf(y.numpy(), loc, 0.7).tolist()


@pytest.mark.parametrize("wrap", [
    lambda x, y: DataLoader(TensorDataset(x, y), batch_size=10),
    lambda x, y: TensorDataset(x, y),
    lambda x, y: iter([(x[:7], y[:7]), (x[7:], y[7:])]),
], ids=["dataloader", "dataset", "iterable"])
def test_evaluate_takes_a_dataset_or_dataloader_like_fit(wrap):
    x, y = _data()
    whole = probgen.evaluate(regression, (x, y))
    batched = probgen.evaluate(regression, wrap(x, y))
    assert batched.kind == whole.kind == "exact"
    assert batched.per_example.tolist() == pytest.approx(_by_hand(x, y), abs=1e-10)
    assert batched.num_examples == 25 and batched.num_dims == whole.num_dims == 1


def test_a_dataloader_scored_twice_in_order_keeps_its_fingerprint():
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    first, second = (probgen.evaluate(regression, loader) for _ in range(2))
    assert first.data_id is not None and first.data_id == second.data_id
    shuffled = probgen.evaluate(regression, DataLoader(TensorDataset(x, y), batch_size=10,
                                                        shuffle=True))
    assert shuffled.data_id != first.data_id  # other rows in other places: never paired


def test_an_empty_dataloader_says_so():
    x, y = _data()
    with pytest.raises(ValueError, match="empty Dataset or DataLoader"):
        probgen.evaluate(regression, DataLoader(TensorDataset(x[:0], y[:0]), batch_size=4))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_evaluate_on_a_missing_cuda_device_says_so():
    x, y = _data()
    with pytest.raises(ValueError, match=r"device='cuda': CUDA is not available on this "
                                         r"machine \(torch .*\); use device='cpu'"):
        probgen.evaluate(regression, (x, y), device="cuda")


def test_check_device_speaks_in_the_callers_terms():
    from probgen.core.devices import check_device

    assert check_device(None) is None and check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="map_location='gpu7' is not a device"):
        check_device("gpu7", name="map_location")
    with pytest.raises(ValueError, match="--device 'gpu7' is not a device; use cpu"):
        check_device("gpu7", name="--device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda:1: CUDA is not available.*use "
                                             "--device cpu"):
            check_device("cuda:1", name="--device")


def test_probgen_evaluate_is_the_function_and_the_package():
    import probgen.evaluate.api
    from probgen.evaluate import compare
    from probgen.evaluate.compare import compare as compare_function

    x, y = _data()
    called = probgen.evaluate(regression, (x, y))
    assert called.per_example.tolist() == pytest.approx(_by_hand(x, y), abs=1e-10)
    assert probgen.evaluate.api.evaluate is probgen.evaluate.evaluate
    assert compare is compare_function is probgen.compare
    assert probgen.evaluate.exact.exact_log_prob is not None  # submodules stay reachable
    import inspect

    assert "estimator" in inspect.signature(probgen.evaluate).parameters
