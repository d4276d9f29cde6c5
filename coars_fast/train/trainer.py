"""The CoARS training loop: sample users, play episodes, pack, one fused-loss step over both agents.

for each step:
    episodes <- a seeded sample of training users, G sampled episodes each
    rewards  <- Eq. 7 / 8 per turn; teacher prompts <- the same prompts plus hindsight
    batches  <- every agent turn packed without padding: token trees that compute each shared
                prompt prefix once (CPU default), or one flat sequence per turn
    loss     <- coars_loss on teacher/student hidden states of the response rows, per agent
    one optimizer step over the `rec` and `user` adapters; checkpoint; log
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from coars_fast.cache import atomic_write
from coars_fast.data import load_dataset, sasrec
from coars_fast.data.candidates import CandidateBuilder
from coars_fast.distributed import (
    SINGLE,
    World,
    any_rank,
    barrier,
    check_divisible,
    device_for,
    gather,
    main_first,
    shard,
)
from coars_fast.distributed.fsdp import full_optimizer_state, gathered, shard_layers, shard_optimizer_state, whole
from coars_fast.errors import ConfigError, TrainingError
from coars_fast.evaluation import EvalSettings, evaluate, write_result
from coars_fast.kernels import active_backend
from coars_fast.models import add_agent_adapters, load_agent_adapters, load_model
from coars_fast.models.memory import checkpoint_activations, liger_patches
from coars_fast.models.packed_attention import flex_attention_available
from coars_fast.rollout import Agents, PeerIndex, Rollout, collect, pack, pack_trees, padding_report
from coars_fast.rollout.collector import non_finite_sampling
from coars_fast.train import faults
from coars_fast.train.checkpoint import latest_checkpoint, load_state, save_checkpoint
from coars_fast.train.config import Config, to_dict
from coars_fast.train.logbook import Logbook, NullLogbook
from coars_fast.train.run_folder import RunFolder
from coars_fast.train.step import adapter_parameters, clip_and_step, gradients_of_step

log = logging.getLogger(__name__)
MAX_BAD_STEPS = 3
IDLE_STEPS_WARNING = 5  # steps in a row whose every turn the exclusion rule left out


def seed_step(seed: int, step: int) -> int:
    """Every random choice of a step derives from (seed, step): a resumed run replays it exactly."""
    value = int.from_bytes(hashlib.blake2b(f"{seed}/{step}".encode(), digest_size=8).digest(), "little") % 2**63
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
    return value


def packer(packing: str, device: torch.device):
    """`pack_trees` or `pack` for `train.packing` on `device` ("auto": the faster one measured there,
    docs/RESULTS.md; CUDA stays flat until tree packing is measured on it)."""
    if packing == "auto":
        packing = "flat" if device.type == "cuda" else "tree"
    if packing == "tree" and device.type == "cuda" and not flex_attention_available(device):
        raise ConfigError(
            "train.packing=tree on CUDA needs torch's flex attention, which this torch lacks; use train.packing=flat"
        )
    log.info("packing: %s", packing)
    return pack_trees if packing == "tree" else pack


class Trainer:
    def __init__(
        self,
        config: Config,
        run_dir: Path,
        resume: bool = False,
        progress: bool = True,
        overwrite: bool = False,
        retrain_sasrec: bool = False,
        world: World = SINGLE,
    ):
        self.config, self.run_dir, self.retrain_sasrec, self.world = config, run_dir, retrain_sasrec, world
        self.progress = progress and world.main
        check_divisible(config.train.users_per_step, world)
        # rank 0 owns the run folder: checked and locked before any expensive work
        self.folder = RunFolder(run_dir, resume, overwrite) if world.main else None
        barrier(world)  # the other ranks read it (a resumed checkpoint) only once rank 0 has checked it
        try:
            self._setup(resume)
        except BaseException:
            if self.folder is not None:
                self.folder.release()
            raise

    def _setup(self, resume: bool) -> None:
        config, run_dir = self.config, self.run_dir
        data = config.data
        self.dataset = load_dataset(data.dataset, data.data_dir, synthetic_settings=data.synthetic)
        self.dataset.item_noun = data.item_noun or self.dataset.item_noun
        self.dataset.user_verb = data.user_verb or self.dataset.user_verb
        train = len(self.dataset.split("train"))
        if config.train.users_per_step > train:
            raise ConfigError(
                f"config key 'train.users_per_step' is {config.train.users_per_step}, but the "
                f"{self.dataset.name} train split has {train} episodes"
            )
        self.sasrec = main_first(
            self.world,
            lambda: sasrec.load_or_train(
                self.dataset, progress=self.progress, retrain=self.retrain_sasrec and self.world.main
            ),
        )
        self.peers = PeerIndex(self.sasrec, self.dataset) if config.train.peers else None
        self.candidates = CandidateBuilder(self.dataset, data.candidates, data.num_candidates, data.seed, self.sasrec)
        base, tokenizer = main_first(
            self.world, lambda: load_model(config.model.name, device_for(self.world, config.model.device))
        )
        self.device = next(base.parameters()).device
        if config.model.liger_patches:
            liger_patches(base, self.device)
        self.pack = packer(config.train.packing, self.device)
        checkpoint = latest_checkpoint(run_dir) if resume else None
        if resume and checkpoint is None:
            log.warning("--resume: no complete checkpoint in %s yet; starting the run from step 0", run_dir)
        if checkpoint is not None:
            self.model = load_agent_adapters(base, checkpoint / "adapters", trainable=True)
        else:
            torch.manual_seed(config.train.seed)  # LoRA A matrices start random: same seed, same start
            self.model = add_agent_adapters(base, config.lora)
        if config.train.checkpoint_activations:
            checkpoint_activations(self.model)
        self.units = self._shard()  # before the optimizer: it steps the sharded parameters
        self.sampler = Agents(self.model, tokenizer, config.generation)
        self.greedy = Agents(self.model, tokenizer, replace(config.generation, greedy=True))
        self.param_groups = adapter_parameters(self.model, config.rollout.train_agents)
        self.params = [p for group in self.param_groups.values() for p in group]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        warmup = max(1, config.optim.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.step, self.evals, self.train_seconds, logged = 0, {}, 0.0, 0
        self.curve_started = False  # the step-0 point of the validation curve
        self.curve_step = -1  # the step of the curve's latest point
        if checkpoint is not None:
            state = load_state(checkpoint, self.optimizer, self.scheduler)
            if self.units:
                shard_optimizer_state(self.optimizer)  # the checkpoint holds the whole state
            self.step, self.evals, self.train_seconds = state["step"], state["evals"], state["train_seconds"]
            self.curve_started = state.get("curve_started", self.step > 0)
            self.curve_step = state.get("curve_step", self.step)
            logged = state.get("metrics_bytes")  # None: a checkpoint from before this was recorded
            log.info("resumed from %s at step %d", checkpoint, self.step)
        # what was logged after the checkpoint is replayed now: one record per step, not two
        if self.world.main:
            self.logbook = Logbook(run_dir, config.tensorboard, keep_bytes=logged, purge_step=self.step + 1)
            # written once everything loaded: a run that failed to start leaves no run behind
            atomic_write(
                run_dir / "config.yaml", lambda p: p.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
            )
        else:
            self.logbook = NullLogbook()
        log.info("fused loss backend: %s on %s", active_backend(self.device), self.device)

    def _shard(self) -> list:
        """FSDP2 units of the decoder layers under `distributed.fsdp` and torchrun, else none."""
        if not self.config.distributed.fsdp:
            return []
        if not self.world.distributed:
            log.warning("distributed.fsdp: one process, nothing to shard; the base stays whole")
            return []
        units = shard_layers(self.model, self.world)
        log.info("FSDP2: %d decoder layers sharded over %d ranks", len(units), self.world.size)
        return units

    # -- evaluation ---------------------------------------------------------------------------------
    def _play(self, users: int, f1_users: int, folder: Path, split: str = "val") -> tuple[dict, dict]:
        cfg = self.config
        settings = EvalSettings(
            split=split,
            num_users=users,
            f1_users=f1_users,
            max_turns=cfg.rollout.max_turns,
            candidates=cfg.data.candidates,
            num_candidates=cfg.data.num_candidates,
            seed=cfg.data.seed,
        )
        self.model.eval()
        with gathered(self.units):  # ranks play different numbers of forwards
            result = evaluate(self.greedy, self.dataset, settings, self.sasrec, self.peers, self.progress, self.world)
        if self.world.main:
            write_result(result, folder)
        agents = result["agents"]
        summary = {
            "hit_at_1": agents["hit_at_1"],
            "hit_ci_low": agents["ci95"][0],
            "hit_ci_high": agents["ci95"][1],
            "valid_ratio": agents["valid_ratio"],
            "mean_turns": agents["mean_turns"],
            "episodes": agents["episodes"],
            "seconds": result["seconds"]["total"],
            **({f"user_{k}": result["user_f1"][k] for k in ("precision", "recall", "f1")} if result["user_f1"] else {}),
        }
        return result, summary

    def evaluate(self, label: str) -> dict:
        """The full evaluation before or after training: eval-<label>/, an "eval" record."""
        result, summary = self._play(
            self.config.eval.num_users, self.config.eval.f1_users, self.run_dir / f"eval-{label}"
        )
        self.evals[label] = {
            **summary,
            "step": self.step,
            "baselines": {m: b["hit_at_1"] for m, b in result["baselines"].items()},
        }
        self.logbook.log("eval", self.step, {"label": label, **summary})
        if self.config.eval.test_users:
            # the held-out test rows: reported, never used to choose anything. No F1 there: its
            # protocol asks about each user's last items whatever the split, so it would repeat val's.
            _, test = self._play(self.config.eval.test_users, 0, self.run_dir / f"eval-{label}-test", "test")
            self.evals[label]["test"] = test
            self.logbook.log("eval", self.step, {"label": f"{label}-test", **test})
        return result

    def validate(self) -> dict:
        """A point of the learning curve: the fixed validation subset, a "val" record."""
        cfg = self.config.eval
        _, summary = self._play(
            cfg.curve_users, cfg.curve_f1_users, self.run_dir / "validation" / f"step-{self.step:06d}"
        )
        faults.point("validation")
        self.logbook.log("val", self.step, summary)
        self.curve_step = self.step
        log.info(
            "validation at step %d: Hit@1 %.3f [%.3f, %.3f], ValidRatio %.3f",
            self.step,
            summary["hit_at_1"],
            summary["hit_ci_low"],
            summary["hit_ci_high"],
            summary["valid_ratio"],
        )
        return summary

    # -- one step -----------------------------------------------------------------------------------
    def step_users(self, step: int) -> tuple[list, int]:
        """The training users of step `step` (0-based) and its seed; seeds every RNG as the step does, so
        that what is sampled next is what the step samples (scripts and the bench replay a step)."""
        train = self.dataset.split("train")
        seed = seed_step(self.config.train.seed, step)
        rng = np.random.default_rng(seed)
        return [train[i] for i in rng.choice(len(train), size=self.config.train.users_per_step, replace=False)], seed

    def play(self, episodes) -> Rollout:
        """G sampled episodes per user and their training samples (no update)."""
        cfg = self.config
        return collect(
            self.sampler,
            self.dataset,
            episodes,
            self.candidates.build(episodes),
            cfg.rollout,
            cfg.reward,
            self.peers,
            world=self.world,
        )

    def train_step(self) -> dict | None:
        cfg = self.config
        episodes, seed = self.step_users(self.step)
        episodes = shard(episodes, self.world)  # this rank's users; every rank drew the same list
        if self.world.rank:
            torch.manual_seed((seed + self.world.rank) % 2**63)  # its own samples, reproducibly
        started = time.perf_counter()
        self.model.eval()  # generation: no dropout
        rollout = None
        try:
            with gathered(self.units):  # ranks play different numbers of forwards
                rollout = self.play(episodes)
        except RuntimeError as err:
            if not non_finite_sampling(err):
                raise
            log.warning(
                "step %d: non-finite logits while sampling rollouts (%s)", self.step + 1, str(err).splitlines()[0]
            )
        if any_rank(rollout is None, self.world):  # every rank skips the step together
            return {
                "skipped": True,
                "skip_reason": "non-finite logits in rollout sampling",
                "time_rollout": time.perf_counter() - started,
                "time_step": time.perf_counter() - started,
            }
        rolled = time.perf_counter()
        faults.point("rollout")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.model.train()
        batches, stats = gradients_of_step(
            self.model,
            rollout.samples,
            self.pack,
            cfg.train.token_budget,
            cfg.loss,
            cfg.generation.temperature,
            self.device,
            self.params,
            self.world,
            lockstep=bool(self.units),
        )
        faults.point("update")
        stepped = any_rank(bool(batches), self.world)
        norms = clip_and_step(self.param_groups, self.optimizer, self.scheduler, cfg.optim.grad_clip) if stepped else {}
        elapsed = time.perf_counter() - started
        metrics = {
            **rollout.stats,
            **stats,
            **padding_report(batches, cfg.train.token_budget),
            "samples": len(rollout.samples),
            "skipped": norms is None,
            **{f"grad_norm_{agent}": n for agent, n in (norms or {}).items()},
            "lr": self.scheduler.get_last_lr()[0],
            "time_rollout": rolled - started,
            "time_step": elapsed,
            "tokens_per_s": stats.get("tokens", 0) / max(1e-9, elapsed - (rolled - started)),
        }
        if self.device.type == "cuda":  # the update's peak (activations, kept for backward)
            metrics["update_peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return merge_metrics(gather(metrics, self.world)) if self.world.distributed else metrics

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self.logbook.close()
            if self.folder is not None:
                self.folder.release()

    def _run(self) -> dict:
        cfg = self.config
        before = False  # the evaluations before training, checkpointed once done: never played twice
        if cfg.eval.initial and "initial" not in self.evals:
            self.evaluate("initial")
            before = True
        if cfg.eval.every and cfg.eval.curve_start and self.step == 0 and not self.curve_started:
            self.validate()
            self.curve_started = before = True
        if before and self.step == 0:
            self._checkpoint()
        if self._curve_due() and self.curve_step != self.step:  # a crash interrupted this point
            self.validate()
            self._checkpoint()
        budget = cfg.train.minutes * 60 if cfg.train.minutes is not None else float("inf")
        bad = idle = 0
        bar = self._progress_bar()
        # the minutes budget is counted per rank: rank 0's clock decides for all, or ranks could
        # disagree on the last step and wait on each other's collectives
        while self.step < cfg.train.steps and not any_rank(
            self.train_seconds >= budget and self.world.main, self.world
        ):
            started = time.perf_counter()
            metrics = self.train_step()
            self.step += 1
            self.train_seconds += time.perf_counter() - started
            metrics["train_minutes"] = self.train_seconds / 60
            self.logbook.log("train", self.step, metrics)
            bar.update(self._progress() - bar.n)
            # an agent with no turn left after the exclusion rule has no reward this step
            bar.set_postfix(
                step=self.step,
                hit=f"{metrics.get('train_hit_at_1', float('nan')):.2f}",
                **{f"r_{a}": f"{metrics[f'reward_{a}']:.2f}" for a in ("rec", "user") if f"reward_{a}" in metrics},
            )
            if metrics["skipped"]:
                bad += 1
                log.warning(
                    "step %d skipped: %s (%d in a row)",
                    self.step,
                    metrics.get("skip_reason", "non-finite loss or gradients"),
                    bad,
                )
                if bad >= MAX_BAD_STEPS:
                    raise TrainingError(
                        f"stopping at step {self.step}: {bad} steps in a row had non-finite loss, "
                        "gradients or rollout logits (try a lower optim.lr or loss.ppo_clip)"
                    )
                continue
            bad = 0
            idle = idle + 1 if metrics.get("samples") == 0 else 0
            if idle == IDLE_STEPS_WARNING:
                log.warning(
                    "steps %d-%d: no turn reached the loss, nothing is learnt (share of turns left out by "
                    "the exclusion rule %.2f, %.1f turns per episode); if the User accepts wrong items, "
                    "--set reward.exclude_from=[rec] makes it pay for them (docs/METHOD.md)",
                    self.step - idle + 1,
                    self.step,
                    metrics.get("excluded_share", float("nan")),
                    metrics.get("mean_turns", float("nan")),
                )
            due = self._curve_due()
            if due or self.step % cfg.checkpoint.every == 0:
                self._checkpoint()  # before the curve point: a crash during it loses no training
            if due:
                self.validate()
                self._checkpoint()  # the point recorded: a resumed run does not play it again
        bar.close()
        # A resumed run whose checkpoint already holds the final evaluation of this step (it was
        # killed after its final re-save) has nothing left to do but write the summary.
        if self.evals.get("final", {}).get("step") != self.step:
            self._checkpoint()
            if cfg.eval.every and self.step % cfg.eval.every:
                self.validate()  # the curve's last point
            faults.point("final_eval")
            self.evaluate("final")
            faults.point("final_resave")
            self._checkpoint()  # with the final evaluation recorded
        summary = {"steps": self.step, "train_minutes": self.train_seconds / 60, "evals": self.evals}
        if self.world.main:
            atomic_write(self.run_dir / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2)))
        return summary

    def _curve_due(self) -> bool:
        every = self.config.eval.every
        return bool(every) and self.step > 0 and self.step % every == 0

    def _progress(self) -> float:
        """Steps done when steps bound the run; training minutes when a wall-clock budget ends it, so
        the bar's ETA is the budget's, not that of the 1000-step upper bound."""
        minutes = self.config.train.minutes
        return self.step if minutes is None else min(minutes, self.train_seconds / 60)

    def _progress_bar(self) -> tqdm:
        train = self.config.train
        if train.minutes is None:
            return tqdm(
                total=train.steps, initial=self._progress(), desc="train", unit="step", disable=not self.progress
            )
        return tqdm(
            total=train.minutes,
            initial=self._progress(),
            desc="train",
            unit="min",
            bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} min [{elapsed}<{remaining}{postfix}]",
            disable=not self.progress,
        )

    def _checkpoint(self) -> None:
        whole_state = None
        if self.units:  # sharded: every rank helps gather the whole LoRA weights and optimizer state
            adapters = {n: whole(p).detach() for n, p in self.model.named_parameters() if "lora_" in n}
            whole_state = (adapters, full_optimizer_state(self.optimizer))
        if not self.world.main:  # every rank holds the same weights; rank 0 writes them
            return
        save_checkpoint(
            self.run_dir,
            self.step,
            self.model,
            self.optimizer,
            self.scheduler,
            {
                "evals": self.evals,
                "train_seconds": self.train_seconds,
                "metrics_bytes": self.logbook.size(),
                "curve_started": self.curve_started,
                "curve_step": self.curve_step,
            },
            keep=self.config.checkpoint.keep,
            whole=whole_state,
        )


# Step metrics of several ranks: counts add up, times are the slowest rank's, the rest (rates and
# means over equally many episodes per rank) are averaged.
SUMMED = {"episodes", "turns_rec", "turns_user", "excluded_turns", "samples", "tokens", "tokens_flat"}


def merge_metrics(parts: list[dict]) -> dict:
    merged = {}
    for key in dict.fromkeys(k for part in parts for k in part):
        values = [part[key] for part in parts if key in part]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            merged[key] = any(values) if all(isinstance(v, bool) for v in values) else values[0]
        elif key in SUMMED:
            merged[key] = sum(values)
        elif key.startswith("time_") or key.endswith("peak_memory_gb"):  # the slowest, the fullest rank
            merged[key] = max(values)
        else:
            merged[key] = sum(values) / len(values)
    if "tokens" in merged and "time_step" in merged:
        merged["tokens_per_s"] = merged["tokens"] / max(1e-9, merged["time_step"] - merged.get("time_rollout", 0.0))
    if "tokens" in merged and "tokens_flat" in merged:
        merged["token_ratio"] = merged["tokens"] / max(1, merged["tokens_flat"])
    return merged


def format_summary(summary: dict) -> str:
    """The before/after table: the zero-shot memory loop, the trained agents, the classic baselines."""
    evals = summary["evals"]
    final = evals.get("final", {})
    rows = [("zero-shot memory loop", evals.get("initial")), ("CoARS (trained)", final)]
    lines = [
        f"trained {summary['steps']} steps in {summary['train_minutes']:.1f} min; "
        f"{final.get('episodes', 0)} validation episodes",
        "",
        f"{'':<30} {'Hit@1':>6} {'95% CI':>16} {'ValidRatio':>10} {'turns':>6} {'user F1':>8}",
    ]
    rows += [(f"{name}, test", e["test"]) for name, e in rows if e and "test" in e]
    for name, e in rows:
        if e:
            f1 = f"{e['user_f1']:.3f}" if "user_f1" in e else "-"
            ci = f"[{e['hit_ci_low']:.3f}, {e['hit_ci_high']:.3f}]" if "hit_ci_low" in e else "-"
            lines.append(
                f"{name:<30} {e['hit_at_1']:>6.3f} {ci:>16} {e['valid_ratio']:>10.3f} {e['mean_turns']:>6.2f} {f1:>8}"
            )
    for method, hit in final.get("baselines", {}).items():
        lines.append(f"{method:<30} {hit:>6.3f} {'-':>16} {'-':>10} {'-':>6} {'-':>8}")
    return "\n".join(lines)
