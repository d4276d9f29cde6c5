"""The command line's bad-input table: every row is a mistake a user makes; each must exit 2 with one
line that names what is wrong, no traceback, and before any dataset, SASRec or model is loaded."""

import argparse
import gzip
import time

import pytest
import torch
from helpers import write_jsonl

from coars_fast.cli import build_parser, main

ITEMS = [("a", "Alpha"), ("b", "Beta"), ("c", "Gamma"), ("d", "Delta"), ("e", "Epsilon")]


def _setup(tmp):
    """Files the rows point at."""
    (tmp / "list.yaml").write_text("- train\n- optim\n")
    (tmp / "latin1.yaml").write_bytes("optim: {lr: 1.0e-4}  # caf\xe9\n".encode("latin-1"))
    (tmp / "broken.yaml").write_text("optim: {lr: 1.0e-4\n")
    (tmp / "a-file").write_text("not a folder\n")
    (tmp / "old-run").mkdir()
    (tmp / "old-run" / "config.yaml").write_text("data: {dataset: synthetic}\n")
    write_jsonl(tmp / "singles", ITEMS, {"u1": ["a"], "u2": ["b"], "u3": ["c"]})
    write_jsonl(tmp / "badline", ITEMS, {"u1": ["a", "b", "c", "d", "e"]})
    with open(tmp / "badline" / "sequences.jsonl", "a") as f:
        f.write('{"user_id": "u2", "items": [\n')
    (tmp / "movielens" / "ml-100k").mkdir(parents=True)
    with gzip.open(tmp / "movielens" / "ml-100k" / "u.item.gz", "wt") as f:
        f.write("1|Toy Story (1995)|01-Jan-1995||x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n")


# (arguments, text the one line must contain); {tmp} is the test's folder
ROWS = [
    # config values and overrides
    ("train --dataset synthetic --set optim.lr=-1", "config key 'optim.lr' must be a finite number > 0"),
    ("train --dataset synthetic --set optim.lr=abc", "config key 'optim.lr' expects float"),
    ("train --dataset synthetic --set loss.distill_coef=.nan", "config key 'loss.distill_coef' must be >= 0"),
    ("train --dataset synthetic --distill-coef -0.5", "config key 'loss.distill_coef' must be >= 0"),
    ("train --dataset synthetic --set checkpoint.every=0", "config key 'checkpoint.every' must be >= 1"),
    ("train --dataset synthetic --set train.users_per_step=0", "config key 'train.users_per_step' must be >= 1"),
    ("train --dataset synthetic --set train.token_budget=-1", "config key 'train.token_budget' must be >= 1"),
    ("train --dataset synthetic --set generation.temperature=0", "temperature >= 1e-06"),
    ("train --dataset synthetic --set generation.temperature=1e-39", "temperature >= 1e-06"),
    (
        "train --dataset synthetic --set rollout.train_agents=[critic]",
        "config key 'rollout.train_agents' must be a non-empty subset",
    ),
    ("train --dataset synthetic --set optim.lrr=1e-4", "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
    ("train --dataset synthetic --set train=5", "config section train must be a mapping"),
    ("train --dataset synthetic --set novalue", "override 'novalue' must look like section.key=value"),
    ("train --dataset netflix", "config key 'data.dataset' must be one of"),
    (
        "train --dataset synthetic --set data.candidates=pop",
        "config key 'data.candidates' must be one of random, sasrec",
    ),
    ("train --dataset synthetic --set data.synthetic.noise=2", "noise must lie in [0, 1)"),
    (
        "train --dataset synthetic --set train.packing=trie",
        "config key 'train.packing' must be one of auto, tree, flat",
    ),
    # config files
    ("train --config {tmp}/missing.yaml", "config file {tmp}/missing.yaml not found (built-in presets:"),
    ("train --config {tmp}/list.yaml", "a config is a YAML mapping of sections"),
    ("train --config {tmp}/latin1.yaml", "not UTF-8 text"),
    ("train --config {tmp}/broken.yaml", "not valid YAML"),
    # command-line numbers
    ("train --dataset synthetic --steps -3", "argument --steps: must be >= 1, got -3"),
    ("train --dataset synthetic --steps three", "argument --steps: expected an integer, got 'three'"),
    ("train --dataset synthetic --minutes -1", "argument --minutes: must be a finite number > 0"),
    ("train --dataset synthetic --minutes nan", "argument --minutes: must be a finite number > 0"),
    ("baseline --dataset synthetic --limit -5", "argument --limit: must be >= 1, got -5"),
    ("baseline --dataset synthetic --num-candidates 1", "argument --num-candidates: must be >= 2"),
    ("eval --dataset synthetic --num-users 0", "argument --num-users: must be >= 1, got 0"),
    ("eval --dataset synthetic --turns 0", "argument --turns: must be >= 1"),
    ("eval --dataset synthetic --candidates pop", "argument --candidates: invalid choice: 'pop'"),
    ("frobnicate", "argument command: invalid choice: 'frobnicate'"),
    # paths
    ("train --dataset synthetic --out {tmp}/a-file", "--out {tmp}/a-file is a file; name a folder"),
    (
        "train --dataset synthetic --out {tmp}/old-run",
        "holds an earlier run: pass --resume {tmp}/old-run to continue it",
    ),
    ("train --resume {tmp}/nowhere", "--resume {tmp}/nowhere: no config.yaml there"),
    ("train --resume {tmp}/old-run --overwrite", "give one of them"),
    ("train --resume {tmp}/old-run --out {tmp}/elsewhere", "drop --out"),
    ("train --dataset synthetic --model /no/such/model", "--model /no/such/model: no such folder"),
    ("eval --dataset synthetic --adapters {tmp}/nowhere", "--adapters {tmp}/nowhere: no rec/adapter_config.json"),
    ("eval --dataset synthetic --model ./missing-model", "--model ./missing-model: no such folder"),
    ("data check --dataset synthetic --json {tmp}/nowhere/x.json", "folder {tmp}/nowhere does not exist"),
    ("report {tmp}/nowhere", "{tmp}/nowhere: no such run folder"),
    ("report {tmp}/a-file", "no such run folder"),
    # data folders
    ("data check --dataset lastfm --data-dir {tmp}/nowhere", "data directory {tmp}/nowhere does not exist"),
    ("data check --dataset movielens --data-dir {tmp}/movielens/ml-100k", "has no movielens/ folder: --data-dir"),
    ("data check --dataset movielens --data-dir {tmp}", "missing data file: looked for {tmp}/movielens/ml-100k/u.data"),
    ("data check --dataset jsonl --data-dir {tmp}/badline", "sequences.jsonl:2: not valid JSON"),
    ("baseline --dataset jsonl --data-dir {tmp}/singles --method sasrec", "no training episodes"),
    ("data check --dataset instruments --data-dir {tmp}", "has no instruments/ folder"),
    ("train --dataset synthetic --set model.device=gpu", "config key 'model.device' 'gpu' is not a torch device"),
    *(
        [
            (
                "train --dataset synthetic --set model.device=cuda",
                "config key 'model.device' 'cuda': this torch sees no CUDA device",
            ),
            (
                "train --dataset synthetic --set model.liger_patches=true",
                "config key 'model.liger_patches' needs CUDA and liger-kernel",
            ),
        ]
        if not torch.cuda.is_available()
        else []
    ),
    # using trained agents
    ("recommend --history Blur --candidates Oasis Oasis", "--candidates: an item is listed twice"),
    (
        "recommend --dataset synthetic --history nope --candidates a b",
        "--history: 'nope' is neither an item id nor a title of dataset synthetic",
    ),
    ("export --adapters {tmp}/old-run --out {tmp}/merged", "--adapters {tmp}/old-run: no rec/adapter_config.json"),
    ("export --adapters {tmp}/old-run --agent critic --out {tmp}/merged", "invalid choice: 'critic'"),
]


@pytest.mark.parametrize("args, expected", ROWS, ids=[r[0][:60] for r in ROWS])
def test_bad_input_exits_2_with_one_line(args, expected, tmp_path, capsys):
    _setup(tmp_path)
    started = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(args.format(tmp=tmp_path).split()))
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("coars-fast: error: ") and "Traceback" not in err
    assert expected.format(tmp=tmp_path) in err, err
    assert time.monotonic() - started < 20  # refused before any SASRec or model work
    assert not (tmp_path / "old-run" / "metrics.jsonl").exists()  # a refused run wrote nothing


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_adds_the_traceback_to_the_same_line(where, tmp_path, capsys):
    args = "train --dataset synthetic --set checkpoint.every=0".split()
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("Traceback (most recent call last)") and "ConfigError" in "\n".join(err)
    assert err[-1] == "coars-fast: error: config key 'checkpoint.every' must be >= 1, got 0"


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield sub
                yield from _subparsers(sub)


def test_every_option_has_help_that_names_its_default():
    parser = build_parser()
    commands = list(_subparsers(parser))
    assert {c.prog for c in commands} >= {f"coars-fast {c}" for c in ("baseline", "eval", "train", "report")}
    for command in [parser, *commands]:
        formatter = command._get_formatter()
        for action in command._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            text = formatter._expand_help(action) if action.help else ""
            assert text, f"{command.prog} {action.option_strings[0]} has no help"
            default = action.default
            if not (default is None or default is False or default is argparse.SUPPRESS or default == []):
                assert "default" in text, f"{command.prog} {action.option_strings[0]}: {text!r} hides its default"


class _Started(Exception):
    pass


@pytest.mark.parametrize(
    "args, dataset, steps, turns",
    [
        ([], "synthetic", 20, 1),  # the quick start: nothing but the package
        (["--dataset", "lastfm"], "lastfm", 1000, 5),  # real data: the cpu preset
        (["--config", "synthetic"], "synthetic", 14, 2),
    ],
)
def test_train_picks_the_quick_start_without_a_dataset(args, dataset, steps, turns, monkeypatch, tmp_path):
    import coars_fast.train.trainer as trainer

    seen = {}

    def start(config, run_dir, **_):
        seen["config"] = config
        raise _Started

    monkeypatch.setattr(trainer, "Trainer", start)
    with pytest.raises(_Started):
        main(["train", *args, "--out", str(tmp_path / "run")])
    config = seen["config"]
    assert (config.data.dataset, config.train.steps, config.rollout.max_turns) == (dataset, steps, turns)
