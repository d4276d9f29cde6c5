"""`coars-fast`: the command line. The only module that knows every stage."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import sys
import time
import traceback
import warnings
from pathlib import Path

from coars_fast.errors import CoarsError


class Parser(argparse.ArgumentParser):
    """argparse with its mistakes reported like every other user error: one line, exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        where = self.prog.removeprefix("coars-fast").strip()
        self.exit(2, f"coars-fast: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


def _has_default(action: argparse.Action) -> bool:
    """A default worth printing: not None, not a flag's False, not an empty list (0 is one)."""
    default = action.default
    return not (default is None or default is False or default is argparse.SUPPRESS or default == [])


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already says where it comes from."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        said = "default" in text or "config:" in text
        if said or not _has_default(action) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".lstrip()


def at_least(low: int):
    """An argparse type: an integer >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def check_paths(args) -> None:
    """Paths named on the command line, checked before any data, SASRec or model is loaded."""
    model = getattr(args, "model", None)
    if model and model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().exists():
        raise CoarsError(f"--model {model}: no such folder (a local model folder, or a Hugging Face id like org/name)")
    adapters = getattr(args, "adapters", None)
    if adapters is not None:
        missing = [a for a in ("rec", "user") if not (adapters / a / "adapter_config.json").is_file()]
        if missing:
            raise CoarsError(
                f"--adapters {adapters}: no {' or '.join(m + '/adapter_config.json' for m in missing)} there "
                "(name a checkpoint's adapters/ folder, e.g. RUN/checkpoints/step-000020/adapters)"
            )
    for flag in ("json", "out"):
        path = getattr(args, flag, None)
        if path is None:
            continue
        if flag == "json" and not path.parent.is_dir():
            raise CoarsError(f"--json {path}: folder {path.parent} does not exist")
        if flag == "out" and path.exists() and not path.is_dir():
            raise CoarsError(f"--out {path} is a file; name a folder")


def _add_data_dir(p: argparse.ArgumentParser, where: str = "") -> None:
    p.add_argument(
        "--data-dir",
        help=f"folder holding the datasets ({where}default: $COARS_FAST_DATA, else ~/.cache/coars_fast/data)",
    )


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from coars_fast.data import DATASETS

    p.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    _add_data_dir(p)


def _add_candidate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--split", default="val", help="which split to score (default: val; LastFM: val_all for every history prefix)"
    )
    p.add_argument(
        "--candidates",
        default="random",
        choices=("random", "sasrec"),
        help="candidate lists: the true item with random others, or with SASRec's top picks",
    )
    p.add_argument(
        "--num-candidates", type=at_least(2), default=20, help="items per candidate list, the true one included"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the candidate lists")
    p.add_argument("--limit", type=at_least(1), help="score only the first N episodes of the split")


DESCRIPTION = (
    "Train a Recommender and a simulated User, two LoRA adapters on one language model, with CoARS "
    "(interaction reward and self-distilled token credit); evaluate them beside classic recommenders. "
    "Start with: coars-fast train --dataset lastfm"
)


def build_parser() -> argparse.ArgumentParser:
    from coars_fast.data import DATASETS

    parser = Parser(prog="coars-fast", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of a user error too (accepted anywhere on the line)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="inspect datasets").add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="counts of users, items, episodes, history lengths, title coverage")
    _add_data_args(check)
    check.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    check.set_defaults(run=cmd_data_check)
    fetch = data.add_parser("download", help="fetch a dataset from its public source, verified, into the data folder")
    fetch.add_argument("--dataset", required=True, choices=("lastfm", "movielens", "instruments"), help="which dataset")
    _add_data_dir(fetch)
    fetch.set_defaults(run=cmd_data_download)

    base = commands.add_parser("baseline", help="Hit@1 of a classic recommender on the agents' candidate lists")
    _add_data_args(base)
    _add_candidate_args(base)
    base.add_argument(
        "--method",
        default="all",
        choices=("random", "popularity", "sasrec", "all"),
        help="which recommender to score; all scores the three",
    )
    base.add_argument("--json", type=Path, help="also write the results to this JSON file")
    base.add_argument(
        "--retrain-sasrec", action="store_true", help="train SASRec again instead of loading the cached model"
    )
    base.set_defaults(run=cmd_baseline)

    ev = commands.add_parser("eval", help="the agents' Hit@1, ValidRatio and user-agent F1, beside the baselines")
    _add_data_args(ev)
    ev.add_argument(
        "--split",
        default="val",
        help="split to evaluate (default: val; LastFM: val is one row per user, "
        "the published protocol, val_all every history prefix)",
    )
    ev.add_argument(
        "--num-users", type=at_least(1), default=200, help="episodes to play (a seeded sample of the split)"
    )
    ev.add_argument(
        "--f1-users", type=at_least(0), help="users for the user-agent F1 protocol (default: --num-users; 0 skips)"
    )
    ev.add_argument("--turns", type=at_least(1), default=5, help="maximum turns per episode")
    ev.add_argument(
        "--candidates",
        default="random",
        choices=("random", "sasrec"),
        help="candidate lists: the true item with random others, or with SASRec's top picks",
    )
    ev.add_argument(
        "--num-candidates", type=at_least(2), default=20, help="items per candidate list, the true one included"
    )
    ev.add_argument("--seed", type=int, default=0, help="seed of the sampled users and the candidate lists")
    ev.add_argument("--no-peers", action="store_true", help="do not show the User agent peer evidence p_t")
    ev.add_argument(
        "--free",
        action="store_true",
        help="free generation (the paper's setting): answers are not grounded in the candidates and "
        "actions, so ValidRatio matters",
    )
    _add_model_args(ev)
    ev.add_argument(
        "--out",
        type=Path,
        help="folder for summary.json and transcripts.jsonl (default: runs/eval-...); rerun a killed "
        "evaluation with the same --out to continue from its finished episodes",
    )
    ev.add_argument(
        "--retrain-sasrec", action="store_true", help="train SASRec again instead of loading the cached model"
    )
    ev.set_defaults(run=cmd_eval)

    tr = commands.add_parser("train", help="co-train the Recommender and User adapters with CoARS")
    tr.add_argument("--dataset", help=f"one of: {', '.join(DATASETS)} (config: data.dataset)")
    _add_data_dir(tr, "config: data.data_dir; ")
    tr.add_argument(
        "--config",
        help=f"a YAML file or a built-in preset: {', '.join(_presets())} (default: quickstart without "
        "--dataset, the generated benchmark that needs no files; cpu with --dataset)",
    )
    tr.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key, e.g. optim.lr=5e-5"
    )
    tr.add_argument("--model", help="Hugging Face id or local folder (config: model.name)")
    tr.add_argument(
        "--minutes",
        type=positive_float,
        help="training wall-clock budget, evaluation not counted (config: train.minutes)",
    )
    tr.add_argument("--steps", type=at_least(1), help="maximum optimizer steps (config: train.steps)")
    tr.add_argument(
        "--distill-coef",
        type=float,
        help="lambda of the self-distilled credit; 0 turns it off (config: loss.distill_coef)",
    )
    tr.add_argument(
        "--reward",
        choices=("interaction", "outcome"),
        help="interaction reward (Eq. 7/8) or sparse outcome (config: reward.kind)",
    )
    tr.add_argument(
        "--train-agents",
        help="comma-separated agents to train: rec,user (default) or rec (config: rollout.train_agents)",
    )
    tr.add_argument(
        "--baseline",
        choices=("none", "group", "turn"),
        help="subtract the mean reward of a user's G episodes (group), or of their turns of the same number (turn); "
        "default none (config: rollout.baseline)",
    )
    tr.add_argument(
        "--diagnosis",
        choices=("template", "self"),
        help="who writes the hindsight diagnosis: a fixed template (default) or the agent (config: rollout.diagnosis)",
    )
    tr.add_argument(
        "--eval-users", type=at_least(1), help="validation episodes per evaluation (config: eval.num_users)"
    )
    tr.add_argument("--out", type=Path, help="run folder (default: runs/<dataset>-<time>)")
    tr.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint"
    )
    tr.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in an --out folder that holds an earlier run "
        "(deleting it); without it such a folder is refused",
    )
    tr.add_argument(
        "--retrain-sasrec", action="store_true", help="train SASRec again instead of loading the cached model"
    )
    tr.set_defaults(run=cmd_train)

    rec = commands.add_parser(
        "recommend", help="the Recommender's pick and reason for a history and candidates you give"
    )
    _add_use_args(rec)
    rec.set_defaults(run=cmd_recommend)

    chat = commands.add_parser("chat", help="talk to the Recommender: you answer as the User, turn by turn")
    _add_use_args(chat)
    chat.add_argument("--turns", type=at_least(1), default=5, help="most turns of the conversation")
    chat.set_defaults(run=cmd_chat)

    exp = commands.add_parser("export", help="merge one agent's adapter into the base: a standalone model folder")
    exp.add_argument(
        "--adapters", type=Path, required=True, help="a checkpoint's adapters/ folder (with rec/ and user/)"
    )
    exp.add_argument("--agent", choices=("rec", "user"), default="rec", help="which agent to export")
    exp.add_argument(
        "--model", help="the base the adapters were trained on (default: the embedded SmolLM2-135M-Instruct)"
    )
    exp.add_argument("--out", type=Path, required=True, help="a new folder for the merged model and its tokenizer")
    exp.set_defaults(run=cmd_export)

    rep = commands.add_parser("report", help="figures and a markdown summary of one or several training runs")
    rep.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders (several are overlaid)")
    rep.add_argument("--names", help="comma-separated legend names, one per run (default: the folder names)")
    rep.add_argument(
        "--out", type=Path, help="output folder (default: RUN/report for one run, runs/report-<time> for several)"
    )
    rep.set_defaults(run=cmd_report)
    return parser


def _add_use_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--history", nargs="+", required=True, metavar="ITEM", help="what the user chose, oldest first")
    p.add_argument("--candidates", nargs="+", required=True, metavar="ITEM", help="the items to choose from")
    p.add_argument(
        "--dataset", help="read ITEMs as item ids or exact titles of this dataset (default: ITEMs are titles as typed)"
    )
    _add_data_dir(p)
    p.add_argument("--item-noun", help="what an item is, in the prompts (default: the dataset's, else item)")
    p.add_argument(
        "--user-verb", help="what the user did with past items (default: the dataset's, else interacted with)"
    )
    p.add_argument("--free", action="store_true", help="free generation: the answer may name no candidate")
    _add_model_args(p)


def _conversation(args, turns: int):
    from coars_fast.data import load_dataset
    from coars_fast.env import GENERIC, Domain
    from coars_fast.models import GenerationSettings, load_agent_adapters, load_model
    from coars_fast.rollout import Agents
    from coars_fast.rollout.runner import domain_of
    from coars_fast.use import Conversation, resolve_items
    from coars_fast.use.conversation import check_candidates

    dataset = load_dataset(args.dataset, args.data_dir) if args.dataset else None
    history = resolve_items(args.history, dataset, "--history")
    candidates = resolve_items(args.candidates, dataset, "--candidates")
    check_candidates(candidates)  # before the model loads
    known = domain_of(dataset) if dataset else GENERIC
    domain = Domain(args.item_noun or known.noun, args.user_verb or known.verb)
    model, tokenizer = load_model(args.model, args.device)
    if args.adapters:
        model = load_agent_adapters(model, args.adapters)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, batch_size=1, grounded=not args.free, reason_tokens=args.reason_tokens
    )
    return Conversation(Agents(model, tokenizer, settings), history, candidates, domain, turns)


def cmd_recommend(args) -> None:
    title, text = _conversation(args, turns=1).recommend()
    print(text if title is not None else f"(the answer names no candidate) {text}")


def cmd_chat(args) -> None:
    from coars_fast.use import parse_person_reply

    talk = _conversation(args, turns=args.turns)
    print("You are the User. Answer each recommendation with click, star, skip or dislike, then optionally a")
    print("score in [0, 1] and a reason (e.g. `skip 0.3 too slow`). click ends the conversation; an empty line quits.")
    while not talk.done:
        title, text = talk.recommend()
        print(f"\nRecommender: {text}")
        if title is None:
            print("(that answer names no candidate; the Recommender tries again)")
            continue
        while True:
            try:
                line = input("you> ")
            except EOFError:
                line = ""
            if not line.strip():
                return
            reply = parse_person_reply(line)
            if reply is not None:
                break
            print("start with click, star, skip or dislike; a score must be a number in [0, 1]")
        talk.reply(reply)
    print("\n(conversation over)")


def cmd_export(args) -> None:
    from coars_fast.models import load_model
    from coars_fast.use import export_agent

    if args.out.exists():
        raise CoarsError(f"--out {args.out} exists; name a new folder")
    model, tokenizer = load_model(args.model, "cpu")
    print(f"written: {export_agent(model, tokenizer, args.adapters, args.agent, args.out)}")


def _presets() -> list[str]:
    from coars_fast.train.config import CONFIG_DIR

    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="Hugging Face id or local folder (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--adapters", type=Path, help="folder with trained rec/ and user/ LoRA adapters (default: none)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max-new-tokens", type=at_least(1), default=64, help="most tokens per agent answer")
    p.add_argument("--batch-size", type=at_least(1), default=32, help="sequences per generation call")
    p.add_argument(
        "--reason-tokens",
        type=at_least(1),
        default=32,
        help="grounded answers: most free tokens after the answer head (use the run's generation.reason_tokens)",
    )


def cmd_data_download(args) -> None:
    from coars_fast.data.download import download
    from coars_fast.data.files import resolve_data_dir

    folders = download(args.dataset, resolve_data_dir(args.data_dir))
    print(
        f"{args.dataset}: {', '.join(map(str, folders))} (verified); next: coars-fast data check --dataset {args.dataset}"
    )


def cmd_data_check(args) -> None:
    from coars_fast.data import load_dataset
    from coars_fast.data.check import format_summary, summarize

    summary = summarize(load_dataset(args.dataset, args.data_dir))
    print(format_summary(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


def cmd_baseline(args) -> None:
    from coars_fast.data import load_dataset, sasrec
    from coars_fast.data.baselines import METHODS, hit_at_1
    from coars_fast.data.candidates import CandidateBuilder

    dataset = load_dataset(args.dataset, args.data_dir)
    episodes = dataset.split(args.split)[: args.limit]
    methods = METHODS if args.method == "all" else (args.method,)
    model = (
        sasrec.load_or_train(dataset, retrain=args.retrain_sasrec)
        if "sasrec" in methods or args.candidates == "sasrec"
        else None
    )
    candidates = CandidateBuilder(dataset, args.candidates, args.num_candidates, args.seed, model).build(episodes)
    print(
        f"{dataset.name} {args.split}: {len(episodes):,} episodes, {args.num_candidates} {args.candidates} candidates, seed {args.seed}"
    )
    print(f"{'method':<12} {'Hit@1':>7}  95% CI")
    results = []
    for method in methods:
        r = hit_at_1(method, dataset, episodes, candidates, sasrec=model)
        low, high = r.interval
        spread = "(exact expectation)" if method == "random" else f"[{low:.4f}, {high:.4f}]"
        print(f"{method:<12} {r.hit_at_1:>7.4f}  {spread}")
        results.append({"method": method, "hit_at_1": r.hit_at_1, "ci95": [low, high], "episodes": r.episodes})
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "dataset": dataset.name,
                    "split": args.split,
                    "candidates": args.candidates,
                    "seed": args.seed,
                    "results": results,
                },
                indent=2,
            )
        )


def cmd_eval(args) -> None:
    from coars_fast.distributed import finish, from_env
    from coars_fast.evaluation import EvalSettings

    settings = EvalSettings(
        split=args.split,
        num_users=args.num_users,
        f1_users=args.f1_users,
        max_turns=args.turns,
        candidates=args.candidates,
        num_candidates=args.num_candidates,
        seed=args.seed,
    )
    world = from_env(args.device)  # launched by torchrun: users split over the ranks, else one process
    try:
        _evaluate_cli(args, settings, world)
    finally:
        finish(world)


@contextlib.contextmanager
def _start_up():
    """Loading builds millions of objects that live to the end (episodes, the model, peer tables)
    and no garbage cycles: the collector's full passes over them took about a second of
    `eval --num-users 10 --turns 2`. They are skipped, and what was built is frozen out of later ones."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.freeze()


def _evaluate_cli(args, settings, world) -> None:
    from dataclasses import asdict

    from coars_fast.data import load_dataset, sasrec
    from coars_fast.distributed import device_for, main_first
    from coars_fast.evaluation import evaluate, format_report, write_result
    from coars_fast.evaluation.played import PlayedEpisodes
    from coars_fast.models import GenerationSettings, load_agent_adapters, load_model
    from coars_fast.models.lora import adapter_fingerprint
    from coars_fast.rollout import Agents, PeerIndex

    with _start_up():
        dataset = load_dataset(args.dataset, args.data_dir)
    ranker = main_first(world, lambda: sasrec.load_or_train(dataset, retrain=args.retrain_sasrec and world.main))
    with _start_up():
        model, tokenizer = main_first(world, lambda: load_model(args.model, device_for(world, args.device)))
        if args.adapters:
            model = load_agent_adapters(model, args.adapters)
    agents = Agents(
        model,
        tokenizer,
        GenerationSettings(
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            grounded=not args.free,
            reason_tokens=args.reason_tokens,
        ),
    )
    with _start_up():
        peers = None if args.no_peers else PeerIndex(ranker, dataset)
    out = args.out or Path("runs") / f"eval-{dataset.name}-{args.split}-{time.strftime('%Y%m%d-%H%M%S')}"
    # finished episodes kept in --out: a killed evaluation rerun with the same --out continues
    evaluation = {
        "dataset": dataset.name,
        "settings": asdict(settings),
        "generation": asdict(agents.settings),
        "model": args.model,
        # by content as well as place: adapters retrained in place make another evaluation
        "adapters": [str(args.adapters.resolve()), adapter_fingerprint(args.adapters)] if args.adapters else None,
        "peers": not args.no_peers,
        "world": [world.rank, world.size],
    }
    name = f"played.partial.rank{world.rank}.jsonl" if world.distributed else "played.partial.jsonl"
    played = PlayedEpisodes(out, evaluation, name)
    result = evaluate(
        agents, dataset, settings, sasrec=ranker, peers=peers, progress=world.main, world=world, played=played
    )
    if not world.main:  # every rank holds the whole result; rank 0 reports and writes it
        played.remove()
        return
    result["model"] = args.model or "smollm2-135m (embedded)"
    result["adapters"] = str(args.adapters) if args.adapters else None
    print(
        format_report(
            result,
            f"{dataset.name} {args.split}: model {result['model']}, adapters {result['adapters'] or 'none (zero-shot)'}",
        )
    )
    print(f"written: {write_result(result, out)}")
    played.remove()  # only once the result is on disk


TRAIN_FLAGS = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "model": "model.name",
    "minutes": "train.minutes",
    "steps": "train.steps",
    "distill_coef": "loss.distill_coef",
    "reward": "reward.kind",
    "train_agents": "rollout.train_agents",
    "baseline": "rollout.baseline",
    "diagnosis": "rollout.diagnosis",
    "eval_users": "eval.num_users",
}


def cmd_train(args) -> None:
    from coars_fast.train.config import load_config
    from coars_fast.train.trainer import Trainer, format_summary

    overrides = list(args.set) + [
        f"{key}={getattr(args, flag)}" for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None
    ]
    if args.resume:
        if args.out is not None and args.out.resolve() != args.resume.resolve():
            raise CoarsError(f"--resume {args.resume} continues the run in that folder; drop --out {args.out}")
        if args.overwrite:
            raise CoarsError("--resume continues a run and --overwrite deletes it: give one of them")
        if not (args.resume / "config.yaml").is_file():
            raise CoarsError(f"--resume {args.resume}: no config.yaml there (not a coars-fast run folder)")
        config = load_config(args.resume / "config.yaml", overrides)
        run_dir = args.resume
    else:
        preset = args.config or ("quickstart" if args.dataset is None else "cpu")
        config = load_config(preset, overrides)
        run_dir = args.out or Path(config.out or f"runs/{config.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    from coars_fast.distributed import finish, from_env

    world = from_env(config.model.device)  # launched by torchrun: this rank's place, else one process
    try:
        if world.main:
            print(f"run folder: {run_dir}" + (f" ({world.size} ranks)" if world.distributed else ""))
        summary = Trainer(
            config,
            run_dir,
            resume=args.resume is not None,
            overwrite=args.overwrite,
            retrain_sasrec=args.retrain_sasrec,
            world=world,
        ).run()
    finally:
        finish(world)
    if not world.main:
        return
    print(format_summary(summary))
    from coars_fast.report import write_report

    report = write_report([run_dir], run_dir / "report")
    print(f"written: {run_dir / 'summary.json'}, metrics in {run_dir / 'metrics.jsonl'}, report in {report}")


def cmd_report(args) -> None:
    from coars_fast.report import write_report

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    out = args.out or (
        args.runs[0] / "report" if len(args.runs) == 1 else Path("runs") / f"report-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    print(f"written: {write_report(args.runs, out, names)}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is read wherever it stands, before or after the command's name
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    warnings.simplefilter("default")
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"
    started = time.monotonic()
    try:
        check_paths(args)
        args.run(args)
    except CoarsError as err:
        if debug:
            traceback.print_exc()
        print(f"coars-fast: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("coars-fast: interrupted", file=sys.stderr)
        return 130
    logging.getLogger(__name__).debug("done in %.1f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
