"""Data parallel over torch.distributed: 2 CPU processes (gloo) against one process.

The rollouts of a step differ by rank (each rank samples its own users), so the update test fixes the
turns: two users' turns, one user per rank, against one process with both."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from coars_fast.distributed import SINGLE, World, shard, unshard
from coars_fast.distributed.fsdp import decoder_layers, gathered, local, shard_layers
from coars_fast.rollout.collector import TurnSample
from coars_fast.rollout.packing import pack
from coars_fast.rollout.tree_packing import pack_trees
from coars_fast.train.config import LossConfig
from coars_fast.train.step import adapter_parameters, clip_and_step, gradients_of_step

VOCAB, SEED = 500, 1234


def _model():
    from helpers import tiny_llama

    from coars_fast.models.lora import LoraSettings, add_agent_adapters

    base = tiny_llama(hidden=32, vocab=VOCAB)
    torch.manual_seed(1)
    return add_agent_adapters(base, LoraSettings(rank=4, alpha=8))


def _user_turns(user: str, rec: int, users: int, rng: random.Random) -> list[TurnSample]:
    """One user's turns of a step: `rec` Recommender and `users` User turns sharing a prompt prefix."""
    prefix = [rng.randrange(3, VOCAB) for _ in range(rng.randrange(20, 40))]
    out = []
    for i in range(rec + users):
        prompt = prefix + [rng.randrange(3, VOCAB) for _ in range(rng.randrange(2, 9))]
        teacher = prompt[:-1] + [rng.randrange(3, VOCAB) for _ in range(rng.randrange(3, 9))] + prompt[-1:]
        response = [rng.randrange(3, VOCAB) for _ in range(rng.randrange(1, 7))]
        out.append(
            TurnSample(
                "rec" if i < rec else "user",
                tuple(prompt),
                tuple(teacher),
                tuple(response),
                tuple(-rng.random() for _ in response),
                rng.uniform(-1, 1),
                user,
            )
        )
    return out


def _steps() -> list[list[list[TurnSample]]]:
    """Two steps, each two users' turns; the users have different turn counts per agent, so a rank
    that divided by its own count instead of the step's would get another gradient."""
    rng = random.Random(SEED)
    return [[_user_turns("a", 5, 3, rng), _user_turns("b", 2, 4, rng)] for _ in range(2)]


def _train(world: World, packing: str, fsdp: bool = False, report: dict | None = None) -> dict[str, torch.Tensor]:
    model = _model()
    units = shard_layers(model, world) if fsdp else []
    groups = adapter_parameters(model, ["rec", "user"])  # after sharding: the sharded parameters
    params = [p for g in groups.values() for p in g]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    packer = pack_trees if packing == "tree" else pack
    for users in _steps():
        mine = [turn for user in shard(users, world) for turn in user]
        model.train()
        batches, _ = gradients_of_step(model, mine, packer, 64, LossConfig(), 1.0, "cpu", params, world, fsdp)
        clip_and_step(groups, optimizer, scheduler, 1.0)
        if report is not None:
            report.setdefault("batches", []).append(sorted(b.agent for b in batches))
    if report is not None:  # bytes of decoder-layer weights this rank holds
        layers = decoder_layers(model)
        report["layer_bytes"] = sum(local(p).numel() * p.element_size() for p in layers.parameters())
    with gathered(units):
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def _rank(rank: int, size: int, init: str, out: str, packing: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=size)
    try:
        world = World(rank, size, rank)
        torch.save(_train(world, packing), os.path.join(out, f"rank{rank}.pt"))
        if packing == "flat":  # and sharded (FSDP2) on the same turns, with what each rank holds
            report = {}
            torch.save(_train(world, packing, True, report), os.path.join(out, f"fsdp{rank}.pt"))
            _train(world, packing, False, report.setdefault("replicated", {}))
            Path(out, f"fsdp{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("packing", ["flat", "tree"])
def test_two_ranks_with_one_user_each_equal_one_process_with_both(packing, tmp_path):
    print(f"turns seed: {SEED}")
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path), packing), nprocs=2)
    single = _train(SINGLE, packing)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    moved = max((single[n] - _model().state_dict()[n]).abs().max().item() for n in single)
    assert moved > 1e-3  # two real updates happened
    for weights in ranks:
        assert weights.keys() == single.keys()
        worst = max((weights[n] - single[n]).abs().max().item() for n in single)
        assert worst <= 1e-5, worst
    assert all(torch.equal(ranks[0][n], ranks[1][n]) for n in single)  # identical weights everywhere
    if packing != "flat":
        return
    # FSDP2: the same weights as data parallel, the decoder layers' weights split over the ranks
    sharded = [torch.load(tmp_path / f"fsdp{r}.pt") for r in range(2)]
    reports = [json.loads((tmp_path / f"fsdp{r}.json").read_text()) for r in range(2)]
    for r, (weights, report) in enumerate(zip(sharded, reports)):
        worst = max((weights[n] - ranks[r][n]).abs().max().item() for n in single)
        held, whole_layers = report["layer_bytes"], report["replicated"]["layer_bytes"]
        print(f"rank {r}: FSDP2 vs data parallel {worst:.1e}; layer weights held {held} of {whole_layers} bytes")
        assert worst <= 1e-5, worst
        assert abs(held - whole_layers / 2) <= 0.01 * whole_layers
    # the ranks ran different numbers of micro-batches of their own, so padding kept them in step
    assert reports[0]["batches"] != reports[1]["batches"], reports[0]["batches"]


def test_shard_and_unshard_are_inverse():
    items = list(range(11))
    shares = [shard(items, World(r, 3, r)) for r in range(3)]
    assert shares[0] == [0, 3, 6, 9] and shares[2] == [2, 5, 8]
    assert unshard(shares, len(items)) == items


def test_a_world_that_cannot_share_the_users_is_a_clear_error():
    from coars_fast.distributed import check_divisible
    from coars_fast.errors import ConfigError

    check_divisible(4, World(0, 2, 0))
    with pytest.raises(ConfigError, match="train.users_per_step is 3, which 2 ranks cannot share evenly"):
        check_divisible(3, World(0, 2, 0))


def _evaluate(world: World, model_dir: str, data_dir: str) -> dict:
    from coars_fast.data import load_dataset
    from coars_fast.evaluation import EvalSettings, evaluate
    from coars_fast.models import GenerationSettings, add_agent_adapters, load_model
    from coars_fast.rollout import Agents

    model, tokenizer = load_model(model_dir, "cpu")
    agents = Agents(add_agent_adapters(model), tokenizer, GenerationSettings(max_new_tokens=8, reason_tokens=4))
    settings = EvalSettings(num_users=5, f1_users=3, max_turns=2)
    result = evaluate(agents, load_dataset("jsonl", data_dir), settings, progress=False, world=world)
    return {"agents": result["agents"], "user_f1": result["user_f1"], "transcripts": result["transcripts"]}


def _evaluating_rank(rank: int, size: int, init: str, out: str, model_dir: str, data_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=size)
    try:
        result = _evaluate(World(rank, size, rank), model_dir, data_dir)
        (Path(out) / f"eval{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_sharded_evaluation_equals_one_process(tiny_model_dir, cyclic_dataset, tmp_path):
    """Five users over two ranks (3 + 2; F1: 2 + 1): the same episodes, Hit@1, ValidRatio and F1."""
    data = str(tmp_path / "cyclic")
    mp.spawn(_evaluating_rank, args=(2, str(tmp_path / "init"), str(tmp_path), str(tiny_model_dir), data), nprocs=2)
    single = json.loads(json.dumps(_evaluate(SINGLE, str(tiny_model_dir), data)))
    for rank in range(2):
        sharded = json.loads((tmp_path / f"eval{rank}.json").read_text())
        assert sharded["agents"] == single["agents"]
        assert sharded["user_f1"] == single["user_f1"] and single["user_f1"]["users"] == 3
        assert [t["episode_id"] for t in sharded["transcripts"]] == [t["episode_id"] for t in single["transcripts"]]
        assert sharded["transcripts"] == single["transcripts"]


def _torchrun(*args, cwd, timeout=300, ranks=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    return subprocess.run(
        [*command, "-m", "coars_fast", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_eval_under_torchrun_equals_one_process(tiny_model_dir, cyclic_dataset, tmp_path):
    """`coars-fast eval` launched by torchrun: 5 users over 2 ranks, the same summary as 1 process."""
    args = ["eval", "--dataset", "jsonl", "--data-dir", tmp_path / "cyclic", "--model", tiny_model_dir]
    args += ["--num-users", "5", "--f1-users", "3", "--turns", "2", "--max-new-tokens", "6"]
    summaries = {}
    for ranks in (1, 2):
        done = _torchrun(*args, "--out", tmp_path / f"eval{ranks}", cwd=tmp_path, ranks=ranks)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("written:") == 1  # rank 0 alone reports
        summaries[ranks] = json.loads((tmp_path / f"eval{ranks}" / "summary.json").read_text())
    one, two = summaries[1], summaries[2]
    assert one["agents"]["episodes"] == 5 and one["user_f1"]["users"] == 3
    assert two["agents"] == one["agents"] and two["user_f1"] == one["user_f1"]


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp"])
def test_a_two_rank_run_trains_checkpoints_and_resumes(fsdp, tiny_model_dir, cyclic_dataset, tmp_path):
    out = tmp_path / "run"
    common = ["--model", tiny_model_dir, "--set", "generation.max_new_tokens=6", "--set", "rollout.max_turns=2"]
    common += ["--set", f"distributed.fsdp={str(fsdp).lower()}"]
    first = _torchrun(
        "train",
        "--dataset",
        "jsonl",
        "--data-dir",
        tmp_path / "cyclic",
        *common,
        "--steps",
        "2",
        "--eval-users",
        "4",
        "--set",
        "eval.f1_users=2",
        "--set",
        "train.users_per_step=2",
        "--set",
        "train.minutes=null",
        "--set",
        "checkpoint.every=2",
        "--set",
        "tensorboard=false",
        "--out",
        out,
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("run folder:") == 1 and "(2 ranks)" in first.stdout  # rank 0 alone speaks
    assert ("decoder layers sharded over 2 ranks" in first.stderr + first.stdout) == fsdp
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in steps if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]  # one record per step, not one per rank
    assert all(r["episodes"] == 2 * 2 for r in train)  # both ranks' users: 2 users x G = 2
    for agent in ("rec", "user"):
        saved = out / "checkpoints" / "step-000002" / "adapters" / agent
        rank = json.loads((saved / "adapter_config.json").read_text())["r"]
        weights = load_file(saved / "adapter_model.safetensors")
        # whole LoRA matrices (a sharded save would hold half of the rows), trained (B starts at 0)
        assert all(w.shape[0 if ".lora_A." in n else 1] == rank for n, w in weights.items()), rank
        assert any(w.abs().sum() > 0 for n, w in weights.items() if ".lora_B." in n), agent
    final = json.loads((out / "eval-final" / "summary.json").read_text())
    assert final["agents"]["episodes"] == 4 and final["user_f1"]["users"] == 2
    # resumed in the other mode: checkpoints hold whole adapters and optimizer state, whatever wrote them
    other = ["--set", f"distributed.fsdp={str(not fsdp).lower()}"]
    resumed = _torchrun("train", "--resume", out, "--steps", "3", *other, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ("decoder layers sharded over 2 ranks" in resumed.stderr + resumed.stdout) == (not fsdp)
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert [r["step"] for r in train] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
    for agent in ("rec", "user"):
        before = load_file(out / "checkpoints" / "step-000002" / "adapters" / agent / "adapter_model.safetensors")
        after = load_file(out / "checkpoints" / "step-000003" / "adapters" / agent / "adapter_model.safetensors")
        assert before.keys() == after.keys()
        assert all(after[n].shape == w.shape for n, w in before.items())
        assert any(not torch.equal(after[n], w) for n, w in before.items() if ".lora_B." in n), agent


def _worker(launcher: subprocess.Popen, rank: int) -> int | None:
    """The PID of the launcher's worker process with this LOCAL_RANK, once it runs."""
    for proc in Path("/proc").iterdir():
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher.pid and f"LOCAL_RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_a_killed_rank_stops_the_run_and_resume_continues(tiny_model_dir, cyclic_dataset, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--dataset", "jsonl", "--data-dir", tmp_path / "cyclic", "--model", tiny_model_dir]
    args += ["--steps", "6", "--eval-users", "2", "--set", "eval.f1_users=0", "--set", "train.minutes=null"]
    args += ["--set", "generation.max_new_tokens=6", "--set", "rollout.max_turns=2", "--set", "checkpoint.every=2"]
    args += ["--set", "tensorboard=false", "--set", "eval.initial=false", "--out", out]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [*command, "coars_fast", *map(str, args)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "step-000002").is_dir():  # killed after a checkpoint, mid-run
        assert launcher.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.5)
    victim = _worker(launcher, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0 and time.monotonic() - killed < 120
    assert "local_rank: 1" in stderr and "Signal 9 (SIGKILL)" in stderr  # torchrun names the lost rank
    assert not (out / "summary.json").exists()
    resumed = _torchrun("train", "--resume", out, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
