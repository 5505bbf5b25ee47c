"""Networks: shapes over leading batch dims, gradients to every parameter, input errors."""

import pytest
import torch

from probgen.nn import MLP, ConvDecoder, ConvEncoder


@pytest.mark.parametrize("make,input_shape,output_shape", [
    (lambda: MLP(5, 3, (8, 8), "tanh"), (5,), (3,)),
    (lambda: MLP(5, 3, ()), (5,), (3,)),
    (lambda: ConvEncoder((1, 28, 28), 7, channels=4), (1, 28, 28), (7,)),
    (lambda: ConvDecoder(7, (3, 8, 12), out_channels=6, channels=4), (7,), (6, 8, 12)),
])
@pytest.mark.parametrize("batch_shape", [(2,), (4, 2)])
def test_shapes_and_gradients(make, input_shape, output_shape, batch_shape):
    torch.manual_seed(0)
    net = make()
    out = net(torch.randn(*batch_shape, *input_shape))
    assert out.shape == (*batch_shape, *output_shape)
    out.square().sum().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_leading_batch_dims_act_independently():
    torch.manual_seed(0)
    net = ConvEncoder((1, 8, 8), 3, channels=2)
    x = torch.randn(3, 2, 1, 8, 8)
    torch.testing.assert_close(net(x)[1, 0], net(x[1, 0][None])[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        MLP(0, 3)
    with pytest.raises(ValueError, match="activation"):
        MLP(2, 3, (4,), "nope")
    with pytest.raises(ValueError, match="multiples of 4"):
        ConvEncoder((1, 30, 30), 3)
    with pytest.raises(ValueError, match="channels, height, width"):
        ConvDecoder(3, (28, 28))
    with pytest.raises(ValueError, match="expected images"):
        ConvEncoder((1, 8, 8), 3)(torch.randn(2, 1, 8, 4))
