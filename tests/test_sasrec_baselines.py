"""SASRec learns sequential patterns popularity cannot; baselines score the agents' candidate lists."""

import pytest
import torch

from coars_fast.data import sasrec
from coars_fast.data.baselines import hit_at_1, popularity
from coars_fast.data.candidates import CandidateBuilder
from coars_fast.errors import DataError
from coars_fast.stats import wilson_interval


@pytest.fixture
def cyclic_model(cyclic_dataset):
    return sasrec.load_or_train(cyclic_dataset, sasrec.SASRecConfig(max_epochs=15, patience=15), progress=False)


def test_sasrec_learns_the_cycle_and_beats_popularity(cyclic_dataset, cyclic_model):
    episodes = cyclic_dataset.split("val")
    lists = CandidateBuilder(cyclic_dataset, num_candidates=10, seed=0).build(episodes)
    rec = hit_at_1("sasrec", cyclic_dataset, episodes, lists, sasrec=cyclic_model)
    pop = hit_at_1("popularity", cyclic_dataset, episodes, lists)
    assert rec.hit_at_1 > 0.9 > 0.5 > pop.hit_at_1
    assert rec.episodes == len(episodes) == 400


def test_sasrec_is_cached_and_reloads_identically(cyclic_dataset, cyclic_model, monkeypatch):
    import os
    from pathlib import Path

    config = sasrec.SASRecConfig(max_epochs=15, patience=15)
    path = Path(os.environ["COARS_FAST_CACHE"]) / "sasrec" / f"jsonl-{sasrec.training_key(cyclic_dataset, config)}.pt"
    assert path.is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model must not be retrained")

    monkeypatch.setattr(sasrec, "train", no_training)
    again = sasrec.load_or_train(cyclic_dataset, config, progress=False)
    histories = [ep.history for ep in cyclic_dataset.split("val")[:20]]
    assert torch.equal(again.scores(histories), cyclic_model.scores(histories))


def test_user_representations(cyclic_dataset, cyclic_model):
    reps = cyclic_model.encode([(1, 2, 3), (1, 2, 3), (40, 41, 42, 43, 44)])
    assert reps.shape == (3, 64) and torch.isfinite(reps).all()
    assert torch.equal(reps[0], reps[1]) and not torch.allclose(reps[0], reps[2])


def test_random_baseline_is_exactly_one_over_list_size(cyclic_dataset):
    episodes = cyclic_dataset.split("val")
    lists = CandidateBuilder(cyclic_dataset, num_candidates=20).build(episodes)
    r = hit_at_1("random", cyclic_dataset, episodes, lists)
    assert r.hit_at_1 == pytest.approx(0.05) and r.interval == pytest.approx((0.05, 0.05))


def test_popularity_picks_the_most_frequent_train_target(cyclic_dataset):
    scores = popularity(cyclic_dataset)
    assert scores.sum() == len(cyclic_dataset.split("train"))
    ep = cyclic_dataset.split("val")[0]
    lists = CandidateBuilder(cyclic_dataset, num_candidates=5).build([ep])
    r = hit_at_1("popularity", cyclic_dataset, [ep], lists)
    best = max(lists[0], key=lambda i: scores[i])
    assert r.hit_at_1 == float(best == ep.target)


def test_baseline_errors(cyclic_dataset):
    episodes = cyclic_dataset.split("val")[:3]
    lists = CandidateBuilder(cyclic_dataset).build(episodes)
    with pytest.raises(DataError, match="unknown baseline 'oracle'"):
        hit_at_1("oracle", cyclic_dataset, episodes, lists)
    with pytest.raises(DataError, match="needs a trained SASRec"):
        hit_at_1("sasrec", cyclic_dataset, episodes, lists)
    with pytest.raises(DataError, match="no episodes"):
        hit_at_1("popularity", cyclic_dataset, [], [])


def test_wilson_interval():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 0) == (0.0, 1.0)


def test_training_ends_by_epochs_a_time_limit_is_never_cached_and_retrain_forces_a_new_model(
    cyclic_dataset, monkeypatch
):
    import json
    import os
    from pathlib import Path

    config = sasrec.SASRecConfig(max_epochs=3, patience=10)
    path = Path(os.environ["COARS_FAST_CACHE"]) / "sasrec" / f"jsonl-{sasrec.training_key(cyclic_dataset, config)}.pt"
    sasrec.load_or_train(cyclic_dataset, config, progress=False)
    assert json.loads(path.with_suffix(".json").read_text()) == {"ended": "max_epochs", "epochs": 3}
    calls = []
    real = sasrec.train
    monkeypatch.setattr(sasrec, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    sasrec.load_or_train(cyclic_dataset, config, progress=False)
    assert calls == []  # cached
    sasrec.load_or_train(cyclic_dataset, config, progress=False, retrain=True)
    assert calls == [1]
    # an opt-in wall-clock limit that cuts training short: used, but not cached under the finished key
    short = sasrec.SASRecConfig(max_epochs=3, patience=10, max_minutes=1e-9)
    short_path = path.with_name(f"jsonl-{sasrec.training_key(cyclic_dataset, short)}.pt")
    sasrec.load_or_train(cyclic_dataset, short, progress=False)
    assert not short_path.exists() and calls == [1, 1]


def test_peer_representations_are_cached_beside_sasrec_and_never_stale(cyclic_dataset, monkeypatch):
    """The second PeerIndex of a cached SASRec reads its users' representations from disk instead of
    encoding them; a retrained SASRec (a new weights file) encodes them again."""
    from coars_fast.rollout.peers import PeerIndex, _training_users

    config = sasrec.SASRecConfig(max_epochs=2, patience=10, seed=3)
    model = sasrec.load_or_train(cyclic_dataset, config, progress=False)
    encoded = []
    real = sasrec.SASRec.encode
    monkeypatch.setattr(sasrec.SASRec, "encode", lambda self, h: encoded.append(len(h)) or real(self, h))
    first = PeerIndex(model, cyclic_dataset)
    users = len(_training_users(cyclic_dataset.split("train")))
    assert encoded == [users] and model.cache_path.with_suffix(".peers.pt").is_file()
    again = PeerIndex(sasrec.load_or_train(cyclic_dataset, config, progress=False), cyclic_dataset)
    assert encoded == [users] and torch.equal(again.reps, first.reps)
    with torch.no_grad():  # independent: the representations straight from the model
        expected = torch.nn.functional.normalize(
            real(model, [s for _, s, _ in _training_users(cyclic_dataset.split("train"))]), dim=1
        )
    assert torch.allclose(again.reps, expected, atol=1e-6)
    # new weights in the cached file (as a retrained SASRec would write): encoded again, not reused
    state = {k: v + 0.01 if k == "norm.bias" else v for k, v in model.state_dict().items()}
    torch.save(state, model.cache_path)
    changed = PeerIndex(sasrec.load_or_train(cyclic_dataset, config, progress=False), cyclic_dataset)
    assert encoded == [users, users] and not torch.allclose(changed.reps, first.reps)
