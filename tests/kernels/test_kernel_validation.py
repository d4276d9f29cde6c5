"""Bad input raises ValueError naming the argument, before any kernel runs, for every op."""

import pytest
import torch

from coars_fast.kernels import coars_loss, reference, teacher_student_logprobs, token_logprobs

N, D, V = 5, 4, 11


def _good():
    return dict(
        hidden=torch.randn(N, D),
        teacher_hidden=torch.randn(N, D),
        weight=torch.randn(V, D),
        targets=torch.tensor([0, 3, -100, 10, 7]),
        rewards=torch.randn(N),
        token_weights=torch.rand(N) + 0.1,
    )


def _with(**changes):
    inputs = _good()
    inputs.update(changes)
    return inputs


LOGPROB_CASES = [
    ("hidden", _with(hidden=[[1.0] * D] * N)),
    ("hidden", _with(hidden=torch.randn(1, N, D))),
    ("hidden", _with(hidden=torch.randint(0, 5, (N, D)))),
    ("weight", _with(weight=torch.randn(V))),
    ("weight", _with(weight=torch.randn(V, D + 1))),
    ("weight", _with(weight=torch.randn(0, D))),
    ("weight", _with(weight=torch.randn(V, D, dtype=torch.float64))),
    ("weight", _with(weight=torch.randn(V, D, device="meta"))),
    ("targets", _with(targets=torch.tensor([0, 1, 2]))),
    ("targets", _with(targets=torch.zeros(N))),
    ("targets", _with(targets=torch.tensor([0, 3, -100, 11, 7]))),  # == V
    ("targets", _with(targets=torch.tensor([0, 3, -1, 10, 7]))),  # negative, not ignore_index
    ("targets", _with(targets=torch.tensor([0, 3, -100, 10, 7], device="meta"))),
]
TEACHER_CASES = [
    ("teacher_hidden", _with(teacher_hidden=torch.randn(N + 1, D))),
    ("teacher_hidden", _with(teacher_hidden=torch.randn(N, D).bfloat16())),
    ("teacher_hidden", _with(teacher_hidden=None)),
]
LOSS_CASES = [
    ("rewards", _with(rewards=torch.randn(N + 1))),
    ("rewards", _with(rewards=torch.ones(N, dtype=torch.long))),
    ("token_weights", _with(token_weights=torch.rand(N, 1))),
]


def _call(op, inputs, **kwargs):
    i = inputs
    if op == "token_logprobs":
        return token_logprobs(i["hidden"], i["weight"], i["targets"], **kwargs)
    if op == "teacher_student_logprobs":
        return teacher_student_logprobs(i["hidden"], i["teacher_hidden"], i["weight"], i["targets"], **kwargs)
    return coars_loss(
        i["hidden"], i["teacher_hidden"], i["weight"], i["targets"], i["rewards"], i["token_weights"], **kwargs
    )


OPS = ["token_logprobs", "teacher_student_logprobs", "coars_loss"]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name,inputs", LOGPROB_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(LOGPROB_CASES)])
def test_bad_logprob_inputs(op, name, inputs):
    with pytest.raises(ValueError, match=f"^{name}"):
        _call(op, inputs)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf"), "1.0", torch.tensor(1.0), 1e-39, 1e-7])
def test_bad_temperature(op, temperature):
    with pytest.raises(ValueError, match="^temperature"):
        _call(op, _good(), temperature=temperature)


@pytest.mark.parametrize("op", OPS)
def test_the_smallest_temperature_accepted_gives_finite_results(op):
    """At the floor (1e-6) the logits / temperature still fit fp32; at 1e-39 they gave NaN."""
    out = _call(op, _good(), temperature=1e-6)
    values = out if isinstance(out, tuple) else (out,)
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    tensors += [v for value in values if isinstance(value, dict) for v in value.values() if isinstance(v, torch.Tensor)]
    assert tensors and all(bool(torch.isfinite(t).all()) for t in tensors)


@pytest.mark.parametrize("op", OPS)
def test_bad_ignore_index(op):
    with pytest.raises(ValueError, match="^ignore_index"):
        _call(op, _good(), ignore_index=-100.0)


@pytest.mark.parametrize("op", OPS[1:])
@pytest.mark.parametrize("name,inputs", TEACHER_CASES, ids=["shape", "dtype", "none"])
def test_bad_teacher(op, name, inputs):
    with pytest.raises(ValueError, match=f"^{name}"):
        _call(op, inputs)


@pytest.mark.parametrize("name,inputs", LOSS_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(LOSS_CASES)])
def test_bad_loss_inputs(name, inputs):
    with pytest.raises(ValueError, match=f"^{name}"):
        _call("coars_loss", inputs)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("distill_coef", dict(distill_coef=float("inf"))),
        ("credit_clip", dict(credit_clip=0.0)),
        ("credit_clip", dict(credit_clip=float("nan"))),
        ("old_logprobs", dict(ppo_clip=0.2)),
        ("old_logprobs", dict(old_logprobs=torch.zeros(N))),
        ("old_logprobs", dict(old_logprobs=torch.zeros(N + 2), ppo_clip=0.2)),
        ("ppo_clip", dict(old_logprobs=torch.zeros(N), ppo_clip=-0.1)),
    ],
)
def test_bad_loss_options(name, kwargs):
    with pytest.raises(ValueError, match=f"^{name}"):
        _call("coars_loss", _good(), **kwargs)


def test_reference_validates_too():
    with pytest.raises(ValueError, match="^targets"):
        reference.token_logprobs(torch.randn(N, D), torch.randn(V, D), torch.full((N,), V))


def test_good_input_passes():
    for op in OPS:
        _call(op, _good())
