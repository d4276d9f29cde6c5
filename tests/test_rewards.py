"""Rewards reproduce CoARS Eq. 7 and 8, the stage discount D_t and the exclusion rule."""

from dataclasses import dataclass

import pytest

from coars_fast.env import DOMAINS, EpisodeState, PeerEvidence
from coars_fast.env.rewards import RewardSettings, episode_rewards, rec_reward, stage_discount, user_reward


@pytest.mark.parametrize(
    "hit, s, t, expected",
    [
        (True, 1.0, 1, 1.0),
        (True, 0.0, 1, 0.5),
        (False, 1.0, 1, -1.0),
        (False, 0.25, 1, -0.625),
        (True, 0.5, 3, 0.75 * 0.81),
        (False, 0.0, 5, -0.5 * 0.9**4),
    ],
)
def test_recommender_reward_eq7(hit, s, t, expected):
    assert rec_reward(hit, s, t, gamma=0.9) == pytest.approx(expected)


@pytest.mark.parametrize(
    "hit, s, q, expected",
    [
        (True, 1.0, 0.0, 1.0),
        (True, 1.0, 1.0, 0.9),  # agreeing with similar peers is discounted by alpha q
        (True, 0.0, 1.0, -1.1),  # rejecting the true item despite similar peers who took it
        (False, 1.0, 0.5, -0.95),
        (False, 0.0, -1.0, 0.9),
        (True, 0.5, 0.7, 0.0),  # an undecided user earns nothing
        (False, 0.75, 0.2, -0.5 * (1 - 0.1 * 0.2 * 0.5)),
    ],
)
def test_user_reward_eq8(hit, s, q, expected):
    assert user_reward(hit, s, q, alpha=0.1) == pytest.approx(expected)


def test_stage_discount():
    assert [stage_discount(t, 0.9) for t in (1, 2, 3)] == pytest.approx([1.0, 0.9, 0.81])


@dataclass
class Said:
    text: str


def _episode(script, max_turns=5, likes=None):
    state = EpisodeState(
        "e",
        ["A", "B", "C"],
        [(1, "One"), (2, "Two"), (3, "Three")],
        target=2,
        max_turns=max_turns,
        domain=DOMAINS["lastfm"],
        likes=likes,
    )
    for rec, user, peers in script:
        state.give_recommendation(Said(rec))
        if state.awaiting == "user":
            state.give_reply(Said(user), peers)
    return state


def test_episode_rewards_exclusion_and_invalid_turns():
    state = _episode(
        [
            (" One", " click\nScore: 0.9", None),  # wrong item, user accepts: excluded (unlogged preference)
        ],
        max_turns=1,
    )
    assert episode_rewards(state)[0].excluded
    assert not episode_rewards(state, RewardSettings(exclude_unlogged_positive=False))[0].excluded

    state = _episode(
        [
            (" nothing", "", None),
            (" One", " star\nScore: 0.6", None),
            (" Three", " dislike\nScore: 0.1", PeerEvidence(2, 10, 0.5)),
            (" Two", " click\nScore: 1.0", PeerEvidence(5, 10, 0.8)),
        ]
    )
    r = episode_rewards(state)
    assert [x.excluded for x in r] == [False, True, False, False]
    assert r[0].rec == pytest.approx(-1.0) and r[0].user is None  # invalid: -1 x D_1, user not asked
    assert r[2].rec == pytest.approx(-(0.5 + 0.05) * 0.81)
    assert r[2].user == pytest.approx(-(0.2 - 1) * (1 - 0.1 * 0.5 * (0.2 - 1)))
    assert r[3].rec == pytest.approx(0.9**3) and r[3].user == pytest.approx(1 - 0.1 * 0.8)


def test_with_known_likes_only_a_liked_wrong_item_is_excluded():
    """The synthetic data knows every item the user likes: accepting a wrong item outside them is a
    false positive that both agents pay for (Eq. 7/8 by hand), accepting a liked one stays excluded."""
    script = [(" One", " star\nScore: 0.7", None), (" Three", " click\nScore: 0.9", None)]
    r = episode_rewards(_episode(script, likes=frozenset({2, 3})))
    assert [x.excluded for x in r] == [False, True]
    assert r[0].rec == pytest.approx(-(0.5 + 0.35)) and r[0].user == pytest.approx(-(1.4 - 1))
    assert [x.excluded for x in episode_rewards(_episode(script))] == [True, True]  # likes unknown


def test_a_user_answer_without_an_action_is_invalid_for_the_user():
    state = _episode([(" One", " <click, star, skip or dislike>", None)], max_turns=1)
    r = episode_rewards(state)[0]
    assert r.user == -1.0  # not the +0.5 a deliberate skip of a wrong item earns
    assert r.rec == pytest.approx(-(0.5 + 0.5 * 0.25)) and not r.excluded


def test_outcome_reward_is_the_episode_hit():
    state = _episode([(" One", " skip", None), (" Two", " click", None)])
    r = episode_rewards(state, RewardSettings(kind="outcome"))
    assert [(x.rec, x.user) for x in r] == [(1.0, 1.0), (1.0, 1.0)]
    state = _episode([(" One", " skip", None)], max_turns=1)
    assert episode_rewards(state, RewardSettings(kind="outcome"))[0].rec == -1.0


def test_bad_reward_kind():
    with pytest.raises(ValueError, match="reward kind"):
        RewardSettings(kind="sparse")
