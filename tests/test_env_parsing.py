"""Parsers: the preferred formats, the fallbacks, and never an exception on any string."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coars_fast.env.parsing import (
    ACTIONS,
    DEFAULT_SCORE,
    SCORE_BAND,
    clamp_to_band,
    match_title,
    parse_recommendation,
    parse_user_reply,
)

TITLES = ["Joy Division", "Kent", "Iggy Pop", "The Kent Band", "Air", "Sigur Rós", "Guns N' Roses"]


@pytest.mark.parametrize(
    "text, position, how",
    [
        ("Item: Iggy Pop\nReason: raw energy", 2, "exact"),
        ("Reason: x\nItem: **iggy   POP**.", 2, "normalized"),
        ('Item: "Sigur Ros"', 5, "close"),  # a missing accent: a unique close match
        ("Item: Guns N Roses", 6, "close"),
        ("Item: The Kent Band", 3, "exact"),  # not confused with "Kent"
        ("Item: I pick Kent for them", 1, "mention"),
        ("Kent", 1, "exact"),  # no label: the first line
        ("Item: 10. Iggy Pop", 2, "exact"),  # a list number copied from the prompt
        ("Item: - Air", 4, "exact"),
        ("I think they would enjoy Air a lot.", 4, "mention"),
        ("Item: Kent or Air", None, None),  # two candidates: ambiguous
        ("Item: Radiohead", None, None),
        ("Kent and Air and Iggy Pop", None, None),
        ("", None, None),
    ],
)
def test_recommendation_matching(text, position, how):
    rec = parse_recommendation(text, TITLES)
    assert (rec.position, rec.matched_by) == (position, how)
    assert rec.valid == (position is not None)


def test_recommendation_reason_and_last_label_wins():
    rec = parse_recommendation("Item: Kent\nReason: calm.\nItem: Air", TITLES)
    assert rec.position == 4 and rec.reason == "calm"


def test_close_match_must_be_unique():
    assert match_title("Kent Bandd", ["Kent Band", "Kent Bands"]) == (None, None)
    assert match_title("Kent Bnd", ["Kent Band", "Joy Division"])[0] == 0


@pytest.mark.parametrize(
    "text, action, score, stated",
    [
        ("Action: click\nScore: 0.9\nReason: love it", "click", 0.9, (True, True)),
        ("Action: click\nScore: 0.3", "click", 0.75, (True, True)),  # clamped into click's band
        ("Action: dislike\nScore: 0.9", "dislike", math.nextafter(0.25, 0), (True, True)),
        ("Action: star", "star", 0.75, (True, False)),  # missing score: the action's default
        ("I would skip it. Score: 40%", "skip", 0.4, (True, True)),
        ("Action: starred\nScore: 6/10", "star", 0.6, (True, True)),
        ("Action: Skipped. score 45/100", "skip", 0.45, (True, True)),
        ("Action: starting over", "skip", 0.25, (False, False)),  # "starting" is not "star"
        ("no idea", "skip", 0.25, (False, False)),
        ("Action: dislike\nScore: -3", "dislike", 0.0, (True, True)),
        ("Action: <click, star, skip, dislike, star>", "skip", 0.25, (False, False)),  # the format, echoed
        ("I clicked it. Yes, click!", "click", 1.0, (True, False)),
    ],
)
def test_user_reply(text, action, score, stated):
    reply = parse_user_reply(text)
    assert reply.action == action and reply.score == pytest.approx(score)
    assert (reply.action_stated, reply.score_stated) == stated


def test_defaults_and_bands_are_the_designed_ones():
    assert DEFAULT_SCORE == {"click": 1.0, "star": 0.75, "skip": 0.25, "dislike": 0.0}
    assert clamp_to_band(1.0, "click") == 1.0 and clamp_to_band(0.75, "star") < 0.75
    assert clamp_to_band(0.1, "skip") == 0.25 and clamp_to_band(0.5, "skip") < 0.5


@settings(max_examples=400, deadline=None)
@given(st.text(), st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=20))
def test_recommendation_parser_never_raises(text, titles):
    rec = parse_recommendation(text, titles)
    assert rec.position is None or 0 <= rec.position < len(titles)
    assert isinstance(rec.reason, str) and len(rec.reason) <= 300


@settings(max_examples=400, deadline=None)
@given(st.text() | st.from_regex(r"Action: (click|star|skip|dislike)\nScore: -?[0-9.]{1,8}(%|/10)?\n.*"))
def test_user_parser_never_raises_and_stays_in_band(text):
    reply = parse_user_reply(text)
    assert reply.action in ACTIONS
    if reply.score_stated:  # a stated score lands in its action's band (half-open except click's)
        low, high = SCORE_BAND[reply.action]
        assert low <= reply.score <= high and (reply.score < high or reply.action == "click")
    else:  # the documented defaults (docs/METHOD.md) (star's 0.75 sits on its band's open end, as designed)
        assert reply.score == DEFAULT_SCORE[reply.action]


def test_non_string_output_is_data_too():
    assert not parse_recommendation(None, TITLES).valid
    assert parse_user_reply(None).action == "skip"


# The cases measured on the embedded model's real answers (when grounding was introduced).
MORE_TITLES = [
    "Emily Osment",
    "Queen",
    "Queen + Adam Lambert",
    "Toy Story (1995)",
    "Usual Suspects, The (1995)",
    "It (1990)",
]


@pytest.mark.parametrize(
    "text, position",
    [
        ("Item: The user should get next:\n- Emily Osment\nReason: pop", 0),  # the title under the label
        ("Item: Emily Osment\nRecommendation: I would go with that.", 0),  # a later label naming nothing
        ("Item: Emily Osment\nReason: fun\nAnswer: see above", 0),
        ("Item: Queen", 1),
        ("Item: I pick Queen + Adam Lambert for them", 2),  # the longer title wins over the one inside it
        ("They should hear Queen + Adam Lambert live.", 2),
        ("Item: Toy Story", 3),  # a MovieLens title without its year
        ("Item: The Usual Suspects", 4),  # ... and with its article in front
        ("Item: toy story (1995)", 3),
        ("Item: It", None),  # too short a title to match without its year
        ("Item: Queen or Emily Osment", None),
    ],
)
def test_recommendation_fixes(text, position):
    assert parse_recommendation(text, MORE_TITLES).position == position


def test_a_later_label_does_not_cancel_a_stated_action():
    reply = parse_user_reply("Action: click\nScore: 0.9\nResponse: I think it is great")
    assert (reply.action, reply.action_stated) == ("click", True)
    reply = parse_user_reply("Action: click, star, skip or dislike\nResponse: dislike")
    assert (reply.action, reply.action_stated) == ("dislike", True)


@pytest.mark.parametrize(
    "text",
    [
        "\n" * 40_000,
        "Item:" + " \n" * 40_000 + "Queen",
        "Action:\n" * 20_000,
        "Score " * 20_000,
        "x" * 200_000,
        "Item: " + "Queen + " * 10_000,
        "Queen + Adam Lambert " * 10_000,
    ],
)
def test_parsers_are_linear_on_pathological_answers(text):
    import time

    started = time.perf_counter()
    parse_recommendation(text, MORE_TITLES)
    parse_user_reply(text)
    elapsed = time.perf_counter() - started
    print(f"{len(text)} chars parsed in {elapsed:.3f} s")
    assert elapsed < 2.0  # the quadratic parser took 60 s on 40k newlines
