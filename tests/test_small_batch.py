"""Linear layers of few rows through oneDNN (models/small_batch.py) against torch's own linear."""

import pytest
import torch

import coars_fast.models.small_batch as small_batch
from coars_fast.models.small_batch import SMALL_ROWS, available, small_batch_linears

SEED = 0
pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(SEED)
        self.frozen = torch.nn.Linear(37, 53).requires_grad_(False)
        self.unbiased = torch.nn.Linear(53, 300, bias=False).requires_grad_(False)
        self.trained = torch.nn.Linear(300, 11)  # like a LoRA matrix: keeps torch's path

    def forward(self, x):
        return self.trained(self.unbiased(self.frozen(x)))


def _errors(a, b):
    return (a - b).abs().max().item(), ((a - b).norm() / b.norm()).item()


def test_small_inputs_match_torch_and_large_ones_take_torchs_path(monkeypatch):
    net = Net()
    assert available(net)
    g = torch.Generator().manual_seed(SEED)
    small, large = torch.randn(2, 7, 37, generator=g), torch.randn(SMALL_ROWS + 1, 37, generator=g)
    calls = []
    onednn = small_batch._linear
    monkeypatch.setattr(small_batch, "_linear", lambda *a: calls.append(1) or onednn(*a))
    with torch.no_grad():
        expected_small, expected_large = net(small), net(large)
        with small_batch_linears(net):
            got_small = net(small)
            assert len(calls) == 2  # the two frozen layers; the trained one keeps torch's path
            got_large = net(large)
            assert len(calls) == 2
    max_abs, rel = _errors(got_small, expected_small)
    print(f"14 rows: max |a-b| {max_abs:.2e}, relative norm {rel:.2e}")
    assert got_small.shape == expected_small.shape and max_abs < 1e-5 and rel < 1e-6
    assert torch.equal(got_large, expected_large)  # more than SMALL_ROWS rows: torch's own linear
    assert "forward" not in vars(net.frozen)  # the patch is gone after the block


def test_a_changed_weight_is_never_served_stale():
    net = Net()
    x = torch.randn(3, 37, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        with small_batch_linears(net):
            net(x)
        net.frozen.weight.mul_(-2.0)  # in place, as an optimizer or a weight load would
        expected = net(x)
        with small_batch_linears(net):
            got = net(x)
    assert _errors(got, expected)[0] < 1e-5
