"""The trainer on a tiny model: exact resume, crash-safe checkpoints, non-finite steps, ablations, CLI."""

import json
import logging

import pytest
import torch

from coars_fast.cli import main
from coars_fast.errors import ConfigError, TrainingError
from coars_fast.report.plots import PANELS
from coars_fast.train import checkpoint as checkpoint_module
from coars_fast.train import step as step_module
from coars_fast.train import trainer as trainer_module
from coars_fast.train.config import load_config
from coars_fast.train.trainer import Trainer


def _config(tiny_model_dir, data_dir, *extra):
    return load_config(
        "cpu",
        [
            f"model.name={tiny_model_dir}",
            "data.dataset=jsonl",
            f"data.data_dir={data_dir}",
            "train.minutes=null",
            "train.users_per_step=2",
            "rollout.group_size=2",
            "rollout.max_turns=2",
            "generation.max_new_tokens=6",
            "eval.initial=false",
            "eval.num_users=1",
            "eval.f1_users=0",
            "checkpoint.every=2",
            "tensorboard=false",
            "optim.lr=0.01",
            *extra,
        ],
    )


@pytest.fixture
def cyclic_dir(cyclic_dataset, tmp_path):
    return tmp_path / "cyclic"


def _adapter_weights(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}


def test_resume_reproduces_an_uninterrupted_run(tiny_model_dir, cyclic_dir, tmp_path):
    straight = Trainer(_config(tiny_model_dir, cyclic_dir, "train.steps=4"), tmp_path / "a", progress=False)
    straight.run()
    first = Trainer(_config(tiny_model_dir, cyclic_dir, "train.steps=2"), tmp_path / "b", progress=False)
    first.run()
    resumed = Trainer(_config(tiny_model_dir, cyclic_dir, "train.steps=4"), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 2
    resumed.run()
    a, b = _adapter_weights(straight), _adapter_weights(resumed)
    assert a.keys() == b.keys() and len(a) > 0
    worst = max((a[n] - b[n]).abs().max().item() for n in a)
    assert worst <= 1e-6
    moved = max((a[n] - _adapter_weights(first)[n]).abs().max().item() for n in a)
    assert moved > 1e-4  # steps 3-4 did change the adapters
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "train"
    ]
    assert steps == [1, 2, 3, 4]


def test_the_evaluations_before_training_are_never_played_twice(tiny_model_dir, cyclic_dir, tmp_path, monkeypatch):
    """Killed in its first step, a run resumes from the checkpoint written once the zero-shot
    evaluation and the curve's step-0 point were done: neither is played again."""
    played = []
    real_play = Trainer._play
    monkeypatch.setattr(Trainer, "_play", lambda self, *a, **k: played.append(a[2].name) or real_play(self, *a, **k))
    extra = ["eval.initial=true", "eval.every=2", "eval.curve_users=1", "eval.curve_f1_users=0", "train.steps=2"]
    killed = Trainer(_config(tiny_model_dir, cyclic_dir, *extra), tmp_path / "run", progress=False)
    monkeypatch.setattr(Trainer, "train_step", lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert played == ["eval-initial", "step-000000"]
    assert checkpoint_module.latest_checkpoint(tmp_path / "run").name == "step-000000"
    monkeypatch.undo()
    monkeypatch.setattr(Trainer, "_play", lambda self, *a, **k: played.append(a[2].name) or real_play(self, *a, **k))
    resumed = Trainer(_config(tiny_model_dir, cyclic_dir, *extra), tmp_path / "run", resume=True, progress=False)
    summary = resumed.run()
    assert played == ["eval-initial", "step-000000", "step-000002", "eval-final"]
    assert summary["steps"] == 2 and "initial" in summary["evals"]


def test_one_step_updates_both_adapters_and_ablation_freezes_user(tiny_model_dir, cyclic_dir, tmp_path):
    """Synthetic turns of both agents through the real step: each adapter moves only on its own turns."""
    from coars_fast.rollout import TurnSample, pack
    from coars_fast.train.step import accumulate_gradients, clip_and_step

    def turn(agent, seed):
        g = torch.Generator().manual_seed(seed)
        ids = lambda n: tuple(torch.randint(5, 1000, (n,), generator=g).tolist())
        prompt = ids(30)
        return TurnSample(agent, prompt, prompt[:-1] + ids(8) + prompt[-1:], ids(6), (-1.0,) * 6, 0.7, "u")

    for agents, samples in ((("rec", "user"), [turn("rec", 1), turn("user", 2)]), (("rec",), [turn("rec", 3)])):
        trainer = Trainer(
            _config(tiny_model_dir, cyclic_dir, f"rollout.train_agents=[{', '.join(agents)}]"),
            tmp_path / "-".join(agents),
            progress=False,
        )
        before = _adapter_weights(trainer)
        trainer.model.train()
        stats = accumulate_gradients(trainer.model, pack(samples, 4096), trainer.config.loss, 1.0, trainer.device)
        norms = clip_and_step(trainer.param_groups, trainer.optimizer, trainer.scheduler, 1.0)
        assert set(norms) == set(agents) and norms["rec"] > 0
        after = _adapter_weights(trainer)
        moved = {
            a: max((after[n] - before[n]).abs().max().item() for n in before if f".{a}." in n) for a in ("rec", "user")
        }
        assert moved["rec"] > 0 and (moved["user"] > 0) == ("user" in agents)
        assert {f"loss_{a}" for a in agents} <= set(stats)


def test_non_finite_steps_are_skipped_then_training_stops(tiny_model_dir, cyclic_dir, tmp_path, monkeypatch):
    real = step_module.coars_loss

    def poisoned(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(step_module, "coars_loss", poisoned)
    trainer = Trainer(_config(tiny_model_dir, cyclic_dir, "train.steps=10"), tmp_path / "nan", progress=False)
    before = _adapter_weights(trainer)
    with pytest.raises(TrainingError, match="3 steps in a row had non-finite loss"):
        trainer.run()
    records = [json.loads(line) for line in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in records if r["kind"] == "train"] == [True, True, True]
    after = _adapter_weights(trainer)
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_non_finite_rollout_logits_are_skipped_steps_not_a_crash(tiny_model_dir, cyclic_dir, tmp_path):
    """A diverged adapter makes sampling itself fail (torch.multinomial on NaN probabilities): counted
    like a non-finite loss, three in a row stop the run with the documented message."""
    trainer = Trainer(_config(tiny_model_dir, cyclic_dir, "train.steps=10"), tmp_path / "diverged", progress=False)
    lora_b = next(p for n, p in trainer.model.named_parameters() if "lora_B.rec" in n)
    with torch.no_grad():
        lora_b.fill_(float("nan"))
    with pytest.raises(TrainingError, match="3 steps in a row had non-finite loss, gradients or rollout logits"):
        trainer.run()
    records = [json.loads(line) for line in (tmp_path / "diverged" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [(r["step"], r["skipped"], r["skip_reason"]) for r in train] == [
        (s, True, "non-finite logits in rollout sampling") for s in (1, 2, 3)
    ]


def test_a_crash_while_checkpointing_keeps_the_last_good_checkpoint(tiny_model_dir, cyclic_dir, tmp_path, monkeypatch):
    run = tmp_path / "crash"
    Trainer(_config(tiny_model_dir, cyclic_dir, "train.steps=2"), run, progress=False).run()
    assert checkpoint_module.latest_checkpoint(run).name == "step-000002"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies halfway through writing the checkpoint

    trainer = Trainer(_config(tiny_model_dir, cyclic_dir, "train.steps=4"), run, resume=True, progress=False)
    monkeypatch.setattr(checkpoint_module.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    monkeypatch.undo()
    assert checkpoint_module.latest_checkpoint(run).name == "step-000002"
    assert not (run / "checkpoints" / "step-000004").exists()
    again = Trainer(_config(tiny_model_dir, cyclic_dir, "train.steps=4"), run, resume=True, progress=False)
    assert again.step == 2
    again.run()
    assert checkpoint_module.latest_checkpoint(run).name == "step-000004"


def test_cli_train_end_to_end(tiny_model_dir, cyclic_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "train",
            "--dataset",
            "jsonl",
            "--data-dir",
            str(cyclic_dir),
            "--model",
            str(tiny_model_dir),
            "--steps",
            "2",
            "--eval-users",
            "2",
            "--set",
            "eval.f1_users=1",
            "--set",
            "generation.max_new_tokens=6",
            "--set",
            "rollout.max_turns=2",
            "--set",
            "train.minutes=null",
            "--set",
            "eval.every=1",
            "--set",
            "eval.curve_users=2",
            "--set",
            "eval.curve_f1_users=1",
            "--set",
            "eval.test_users=3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "zero-shot memory loop" in printed and "CoARS (trained)" in printed and "sasrec" in printed
    assert "CoARS (trained), test" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and {"initial", "final"} <= set(summary["evals"])
    # the full evaluations also ran on the test split: its own users, its own folder
    for label in ("initial", "final"):
        assert summary["evals"][label]["test"]["episodes"] == 3
        test = json.loads((out / f"eval-{label}-test" / "summary.json").read_text())
        assert test["settings"]["split"] == "test" and test["agents"]["episodes"] == 3
        # F1 asks about each user's last items whatever the split: measured once, on validation
        assert test["user_f1"] is None and summary["evals"][label]["user_f1"] is not None
        val_ids, test_ids = (
            {json.loads(line)["episode_id"] for line in (out / name / "transcripts.jsonl").read_text().splitlines()}
            for name in (f"eval-{label}", f"eval-{label}-test")
        )
        assert test_ids and not test_ids & val_ids
    train_records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    for key in (
        "reward_rec",
        "train_hit_at_1",
        "grad_norm_rec",
        "grad_norm_user",
        "tokens_per_s",
        "packed_fill",
        "padded_waste",
        "time_rollout",
        "time_teacher",
        "time_student",
        "tokens",
        "tokens_flat",
        "token_ratio",
    ):
        assert key in train_records[-1]
    # CPU default: tree packing; the turns of an episode share their prompt prefixes
    assert train_records[-1]["tokens"] < train_records[-1]["tokens_flat"]
    assert train_records[-1]["token_ratio"] == pytest.approx(
        train_records[-1]["tokens"] / train_records[-1]["tokens_flat"]
    )
    assert (out / "tensorboard").is_dir()
    # the learning curve: steps 0, 1, 2 on the fixed validation subset, and the report written at the end
    val = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert [r["step"] for r in val] == [0, 1, 2] and all(r["episodes"] == 2 for r in val)
    assert {"hit_at_1", "hit_ci_low", "hit_ci_high", "valid_ratio", "user_f1"} <= set(val[0])
    assert (out / "validation" / "step-000002" / "transcripts.jsonl").is_file()
    report = (out / "report" / "REPORT.md").read_text()
    assert "zero-shot (before training)" in report and "| cli | 2 |" in report
    assert "| cli | trained, test users | 3 |" in report
    for name in ("report_by_step.png", "report_by_minutes.png"):
        assert (out / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every panel of the report draws something the trainer logs (time_update: derived from time_step)
    logged = {"train": set(train_records[-1]) | {"time_update"}, "val": set(val[-1])}
    missing = [(kind, key) for _, _, series in PANELS for kind, key, _ in series if key not in logged[kind]]
    assert not missing, f"report panels of metrics the trainer does not log: {missing}"
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(out / "checkpoints" / "step-000002" / "adapters" / "rec").r == 16


def test_packing_setting():
    from coars_fast.rollout import pack, pack_trees
    from coars_fast.train.trainer import packer

    cpu = torch.device("cpu")
    assert packer("auto", cpu) is pack_trees and packer("tree", cpu) is pack_trees and packer("flat", cpu) is pack
    assert load_config("cpu", ["train.packing=flat"]).train.packing == "flat"
    with pytest.raises(ConfigError, match="config key 'train.packing' must be one of auto, tree, flat, got 'trie'"):
        load_config("cpu", ["train.packing=trie"])


def test_float_keys_take_the_notations_people_write(tmp_path):
    """YAML 1.1 reads 5e-5 as a string; the README's own `--set optim.lr=5e-5` must work."""
    assert load_config("cpu", ["optim.lr=5e-5"]).optim.lr == 5e-5
    assert load_config("cpu", ["loss.distill_coef=1E-4"]).loss.distill_coef == 1e-4
    assert load_config("cpu", ["loss.distill_coef=.5"]).loss.distill_coef == 0.5
    (tmp_path / "lr.yaml").write_text("optim: {lr: 5e-5, weight_decay: 1_000.0}\n")
    config = load_config(tmp_path / "lr.yaml")
    assert config.optim.lr == 5e-5 and config.optim.weight_decay == 1000.0
    with pytest.raises(ConfigError, match="config key 'optim.lr' expects float, got 'fast'"):
        load_config("cpu", ["optim.lr=fast"])


def test_config_mistakes_name_the_key(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown config key 'optim.grad_clp'; did you mean 'optim.grad_clip'"):
        load_config("cpu", ["optim.grad_clp=1"])
    with pytest.raises(ConfigError, match="train.minutes' expects float"):
        load_config("cpu", ["train.minutes=soon"])
    (tmp_path / "bad.yaml").write_text("rollout: {groupsize: 4}\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown config key 'rollout.groupsize'; did you mean 'rollout.group_size'?" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2


def test_each_adapter_is_clipped_on_its_own():
    """Gradients of norm 3 (rec) and 0.5 (user), clip 1: rec is scaled to norm 1 and user left as it is
    (a joint clip would scale both by 1/3.04)."""
    from coars_fast.train.step import clip_and_step

    rec, user = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(3))
    rec.grad, user.grad = torch.tensor([3.0, 0, 0, 0]), torch.tensor([0, 0.3, 0.4])
    optimizer = torch.optim.SGD([rec, user], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    norms = clip_and_step({"rec": [rec], "user": [user]}, optimizer, scheduler, 1.0)
    assert norms == pytest.approx({"rec": 3.0, "user": 0.5})
    assert rec.detach().tolist() == pytest.approx([-1.0, 0, 0, 0])  # SGD with lr 1: the step is -grad
    assert user.detach().tolist() == pytest.approx([0, -0.3, -0.4])


def test_a_step_with_every_turn_excluded_logs_and_goes_on(tiny_model_dir, cyclic_dir, tmp_path, monkeypatch, caplog):
    """When the exclusion rule leaves no turn of either agent (the User liked only wrong items), the step
    has no reward means to log: the run goes on (it crashed with KeyError 'reward_rec')."""
    from dataclasses import replace

    from coars_fast.rollout import collector

    real = collector.episode_rewards
    monkeypatch.setattr(
        collector, "episode_rewards", lambda state, settings: [replace(r, excluded=True) for r in real(state, settings)]
    )
    monkeypatch.setattr(trainer_module, "IDLE_STEPS_WARNING", 2)
    trainer = Trainer(_config(tiny_model_dir, cyclic_dir, "train.steps=2"), tmp_path / "excluded", progress=False)
    with caplog.at_level(logging.WARNING, logger="coars_fast.train.trainer"):
        summary = trainer.run()
    assert summary["steps"] == 2
    # a run that learns nothing says so, and names the knob (once, at the 2nd idle step)
    idle = [r.getMessage() for r in caplog.records if "no turn reached the loss" in r.getMessage()]
    assert len(idle) == 1 and idle[0].startswith("steps 1-2:") and "reward.exclude_from=[rec]" in idle[0]
    records = [json.loads(line) for line in (tmp_path / "excluded" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(
        r["samples"] == 0 and "reward_rec" not in r and r["excluded_share"] == 1.0 for r in train
    )


def test_checkpointed_activations_train_as_kept_ones(tiny_model_dir, cyclic_dir, tmp_path):
    """train.checkpoint_activations recomputes the layers in backward: a step ends with the same
    adapters as with every activation kept (the same rollouts, the same gradients)."""
    kept = Trainer(_config(tiny_model_dir, cyclic_dir, "train.steps=1"), tmp_path / "kept", progress=False)
    kept.run()
    config = _config(tiny_model_dir, cyclic_dir, "train.steps=1", "train.checkpoint_activations=true")
    recomputed = Trainer(config, tmp_path / "recomputed", progress=False)
    layer = recomputed.model.get_base_model().model.layers[0]
    assert layer.gradient_checkpointing and not kept.model.get_base_model().model.layers[0].gradient_checkpointing
    recomputed.run()
    a, b = _adapter_weights(kept), _adapter_weights(recomputed)
    assert a.keys() == b.keys() and len(a) > 0
    assert max((a[n] - b[n]).abs().max().item() for n in a) <= 1e-6
    assert max(a[n].abs().max().item() for n in a if "lora_B" in n) > 1e-4  # the step moved B off 0
