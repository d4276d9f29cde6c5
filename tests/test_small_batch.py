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


def _lora_net(requires_grad=False):
    """Net with two PEFT adapters on its frozen layers, B random (seed SEED) so that each adapter
    changes the output."""
    from peft import LoraConfig, get_peft_model

    net = get_peft_model(
        Net(), LoraConfig(r=4, lora_alpha=8, target_modules=["frozen", "unbiased"]), adapter_name="rec"
    )
    net.add_adapter("user", LoraConfig(r=4, lora_alpha=16, target_modules=["frozen", "unbiased"]))
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "lora_" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=g))
                param.requires_grad_(requires_grad)
    return net


def test_a_lora_layer_runs_as_one_merged_linear_per_adapter(monkeypatch):
    """Each adapter: base + scaling * B A in one oneDNN linear per LoRA layer, equal to PEFT's own
    forward; an adapter updated in place (as the optimizer does) is merged again, never served stale."""
    net = _lora_net()
    x = torch.randn(5, 37, generator=torch.Generator().manual_seed(SEED + 1))
    merged = []  # per LoRA layer's call: served by a merged weight or not
    real_merged = small_batch._merged

    def counted(module, x):
        weight = real_merged(module, x)
        merged.append(weight is not None)
        return weight

    monkeypatch.setattr(small_batch, "_merged", counted)
    with torch.no_grad():
        for adapter in ("rec", "user", "rec"):
            net.set_adapter(adapter)  # (PEFT makes the active adapter trainable: no gradient is kept here)
            expected = net(x)
            merged.clear()
            with small_batch_linears(net):
                got = net(x)
            assert merged == [True, True]  # frozen and unbiased, each one merged linear
            max_abs, rel = _errors(got, expected)
            print(f"{adapter}: max |a-b| {max_abs:.2e}, relative norm {rel:.2e}")
            assert max_abs < 1e-5 and rel < 1e-6
        net.base_model.model.frozen.lora_B["rec"].weight.mul_(-3.0)
        expected = net(x)
        with small_batch_linears(net):
            got = net(x)
        assert _errors(got, expected)[0] < 1e-5
        # A new weight tensor in place of the old one at the same address and version (as a freed
        # block taken again by a weight of the same size could be): its values negated through an
        # alias, which leaves the old tensor's version as it was.
        lora_b = net.base_model.model.frozen.lora_B["rec"]
        old = lora_b.weight

        def alias():
            return torch.empty(0).set_(old.untyped_storage(), old.storage_offset(), old.shape, old.stride())

        alias().mul_(-1.0)
        replacement = alias()
        while replacement._version < old._version:
            replacement.add_(0.0)
        lora_b.weight = torch.nn.Parameter(replacement, requires_grad=False)
        assert (lora_b.weight.data_ptr(), lora_b.weight._version) == (old.data_ptr(), old._version)
        expected = net(x)
        with small_batch_linears(net):
            got = net(x)
        assert _errors(got, expected)[0] < 1e-5


def test_a_lora_layer_being_trained_keeps_its_gradient():
    net = _lora_net(requires_grad=True)
    x = torch.randn(5, 37, generator=torch.Generator().manual_seed(SEED + 2))
    net(x).sum().backward()
    expected = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    with small_batch_linears(net):
        net(x).sum().backward()
    got = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys() and any("lora_A" in n for n in got)
    for name in expected:
        assert _errors(got[name], expected[name])[0] < 1e-6, name


def test_lora_layers_of_a_sharded_model_keep_pefts_forward(tmp_path):
    """FSDP2 (one rank, gloo, in this process): a LoRA layer inside a sharded unit is not merged."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        net = _lora_net()
        layer = net.base_model.model.frozen
        fully_shard(layer, mesh=init_device_mesh("cpu", (1,)))
        with small_batch_linears(net):
            assert "forward" not in vars(layer) and "forward" not in vars(net.base_model.model.unbiased)
    finally:
        dist.destroy_process_group()
