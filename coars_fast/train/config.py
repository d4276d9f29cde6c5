"""The training configuration: plain data, one section per component, loaded from YAML and
`section.key=value` overrides. Unknown keys and ill-typed values are errors that name the key."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from coars_fast.data.synthetic import SyntheticSettings
from coars_fast.env.rewards import RewardSettings
from coars_fast.errors import ConfigError
from coars_fast.models.generation import GenerationSettings
from coars_fast.models.lora import LoraSettings
from coars_fast.models.memory import liger_unavailable
from coars_fast.rollout.collector import RolloutSettings

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def _check(obj, **rules) -> None:
    """Range rules per field, checked when a section is built: `name=(test, "what it must be")`."""
    for name, (ok, must) in rules.items():
        value = getattr(obj, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and ok(value)):
            raise ValueError(f"{name} must be {must}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    name: str | None = None  # HF id or local folder; None: the embedded SmolLM2-135M-Instruct
    device: str | None = None  # None: cuda when available
    # Liger-Kernel's RMSNorm, SwiGLU and RoPE kernels (needs CUDA and liger-kernel); off until
    # measured on a GPU (coars_fast/models/memory.py)
    liger_patches: bool = False

    def __post_init__(self):
        if self.device is not None:
            try:
                kind = torch.device(self.device).type
            except RuntimeError:
                raise ValueError(f"device {self.device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
            if kind == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"device {self.device!r}: this torch sees no CUDA device")
        problem = liger_unavailable(self.device) if self.liger_patches else None
        if problem:
            raise ValueError(f"liger_patches {problem}")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "lastfm"
    data_dir: str | None = None
    candidates: str = "random"
    num_candidates: int = 20
    seed: int = 0
    synthetic: SyntheticSettings = SyntheticSettings()  # the generator's knobs (dataset synthetic only)
    # the prompts' wording, over the dataset's own (a jsonl folder's meta.json) and the built-in one
    item_noun: str | None = None  # what an item is: "book"
    user_verb: str | None = None  # what users did with past items: "read"

    def __post_init__(self):
        from coars_fast.data import DATASETS
        from coars_fast.data.candidates import MODES

        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.candidates not in MODES:
            raise ValueError(f"candidates must be one of {', '.join(MODES)}, got {self.candidates!r}")
        _check(self, num_candidates=(lambda v: v >= 2, ">= 2"))
        for key in ("item_noun", "user_verb"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip() or "\n" in value):
                raise ValueError(f"{key} must be a short non-empty string on one line, got {value!r}")


@dataclass(frozen=True)
class LossConfig:
    distill_coef: float = 0.1  # lambda: weight of the self-distilled credit A
    credit_clip: float = 1.0  # c: A is clipped to [-c, c]
    ppo_clip: float | None = None  # PPO ratio clip against the behaviour log-probs (off: REINFORCE)

    def __post_init__(self):
        _check(
            self,
            distill_coef=(lambda v: v >= 0, ">= 0"),
            credit_clip=(lambda v: v > 0, "> 0"),
            ppo_clip=(lambda v: v > 0, "> 0 (or null: off)"),
        )


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 0

    def __post_init__(self):
        _check(
            self,
            lr=(lambda v: v > 0, "a finite number > 0"),
            weight_decay=(lambda v: v >= 0, ">= 0"),
            grad_clip=(lambda v: v >= 0, ">= 0 (0: no clipping)"),
            warmup_steps=(lambda v: v >= 0, ">= 0"),
        )


PACKINGS = ("auto", "tree", "flat")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # upper bound; `minutes` usually ends the run first
    minutes: float | None = None  # wall-clock budget for rollouts + updates (evaluation not counted)
    users_per_step: int = 2
    token_budget: int = 4096  # tokens per packed micro-batch stream (unique tokens with tree packing)
    # tree: shared prompt prefixes computed once (coars_fast/rollout/tree_packing.py); flat: every turn
    # its own sequence; auto: the one measured faster on the device (tree on CPU, flat on CUDA)
    packing: str = "auto"
    # recompute each decoder layer's activations in backward instead of keeping them: less memory,
    # about one more forward of time (coars_fast/models/memory.py)
    checkpoint_activations: bool = False
    peers: bool = True  # show the User agent peer evidence p_t (and use q_t in its reward)
    seed: int = 0

    def __post_init__(self):
        _check(
            self,
            steps=(lambda v: v >= 1, ">= 1"),
            minutes=(lambda v: v > 0, "> 0 (or null: no time limit)"),
            users_per_step=(lambda v: v >= 1, ">= 1"),
            token_budget=(lambda v: v >= 1, ">= 1"),
        )
        if self.packing not in PACKINGS:
            raise ValueError(f"packing must be one of {', '.join(PACKINGS)}, got {self.packing!r}")


@dataclass(frozen=True)
class EvalConfig:
    num_users: int = 16  # the full evaluations before and after training
    f1_users: int = 8
    initial: bool = True  # evaluate the untrained agents (the zero-shot memory loop) first
    # the full evaluations also on this many test users (0: none); choices are made on validation
    test_users: int = 0
    # Periodic validation (the learning curve): every `every` steps, and at steps 0 and last, the
    # agents play a fixed seeded subset of `curve_users` validation episodes (greedy, batched) and
    # `curve_f1_users` users answer the F1 protocol; 0 turns it off.
    every: int = 0
    curve_users: int = 100
    curve_f1_users: int = 20
    # the step-0 point is the untrained model's, the same for every arm of a comparison on the same
    # data and seed (LoRA starts at zero); false skips it when another run already measured it
    curve_start: bool = True

    def __post_init__(self):
        if (
            min(self.num_users, self.curve_users) < 1
            or min(self.f1_users, self.curve_f1_users, self.every, self.test_users) < 0
        ):
            raise ValueError(
                "num_users and curve_users must be >= 1; f1_users, curve_f1_users, every and test_users >= 0"
            )


@dataclass(frozen=True)
class DistributedConfig:
    # Under torchrun: shard every decoder layer over the ranks with FSDP2 (a base that does not fit
    # one device beside its activations); off: every rank holds the whole base (docs/DISTRIBUTED.md)
    fsdp: bool = False


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 2  # steps between checkpoints (and always at the end)
    keep: int = 2

    def __post_init__(self):
        _check(self, every=(lambda v: v >= 1, ">= 1"), keep=(lambda v: v >= 1, ">= 1"))


@dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    lora: LoraSettings = LoraSettings()
    data: DataConfig = DataConfig()
    generation: GenerationSettings = GenerationSettings(greedy=False)  # sampling for rollouts; eval is greedy
    rollout: RolloutSettings = RolloutSettings()
    reward: RewardSettings = RewardSettings()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    distributed: DistributedConfig = DistributedConfig()
    out: str | None = None  # run folder; default runs/<dataset>-<time>
    tensorboard: bool = True


def _fields(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value, kind, key: str):
    """`value` as type `kind` (bool, int, float, str, tuple[...], X | None), or a ConfigError."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        kind = next(k for k in options if k is not type(None))
        origin = typing.get_origin(kind)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        return tuple(_coerce(v, typing.get_args(kind)[0], key) for v in value)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-5 and 1E-4 (no dot) as strings
            try:
                return float(value.strip())
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"config key {key!r} expects {getattr(kind, '__name__', kind)}, got {value!r}")


def _build(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '(top)'} must be a mapping, got {data!r}")
    known = _fields(cls)
    values = {}
    for key, value in data.items():
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(
                f"unknown config key {prefix + key!r}"
                + (f"; did you mean {prefix + hint[0]!r}?" if hint else "")
                + f" (known in this section: {', '.join(known)})"
            )
        kind = known[key]
        values[key] = (
            _build(kind, value, f"{prefix}{key}.")
            if dataclasses.is_dataclass(kind)
            else _coerce(value, kind, prefix + key)
        )
    defaults = cls()
    merged = {name: values.get(name, getattr(defaults, name)) for name in known}
    try:
        return cls(**merged)
    except (ValueError, TypeError) as err:
        name, _, rest = str(err).partition(" ")
        if name in known:  # a range rule of one key: name the key
            raise ConfigError(f"config key {prefix + name!r} {rest}") from None
        raise ConfigError(f"config section {prefix.rstrip('.') or '(top)'}: {err}") from None


def to_dict(config) -> dict:
    return {
        f.name: to_dict(getattr(config, f.name))
        if dataclasses.is_dataclass(getattr(config, f.name))
        else list(getattr(config, f.name))
        if isinstance(getattr(config, f.name), tuple)
        else getattr(config, f.name)
        for f in dataclasses.fields(config)
    }


def _set(tree: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for part in path:
        tree = tree.setdefault(part, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"config key {dotted!r}: {part!r} is not a section")
    tree[last] = value


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """The defaults, updated by a YAML file (a name in coars_fast/configs or a path), then by
    `section.key=value` overrides (values parsed as YAML: 1e-4, true, null, [rec, user])."""
    tree: dict = {}
    if path is not None:
        file = Path(path)
        if not file.is_file() and (CONFIG_DIR / f"{path}.yaml").is_file():
            file = CONFIG_DIR / f"{path}.yaml"
        if not file.is_file():
            presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
            raise ConfigError(f"config file {path} not found (built-in presets: {presets})")
        try:
            tree = yaml.safe_load(file.read_bytes().decode("utf-8")) or {}
        except UnicodeDecodeError as err:
            raise ConfigError(f"{file}: not UTF-8 text (byte {err.start}); a config is a YAML file") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{file}: not valid YAML ({' '.join(str(err).split())})") from None
        if not isinstance(tree, dict):
            raise ConfigError(
                f"{file}: a config is a YAML mapping of sections (model:, train:, ...), got a {type(tree).__name__}"
            )
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set(tree, key.strip(), value)
    return _build(Config, tree)
