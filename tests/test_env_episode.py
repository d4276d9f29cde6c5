"""The episode state machine with scripted agents (no model)."""

from dataclasses import dataclass

import pytest

from coars_fast.env import DOMAINS, EpisodeState, PeerEvidence

CANDIDATES = [(10, "Alpha"), (11, "Beta"), (12, "Gamma"), (13, "Delta")]


@dataclass
class Said:
    text: str


def play(state, script):
    """Feed (recommender text, user text) pairs until the episode ends."""
    for rec, user in script:
        if state.done:
            break
        state.give_recommendation(Said(rec))
        if state.awaiting == "user":
            state.give_reply(Said(user))
    return state


def new_state(max_turns=5):
    return EpisodeState(
        "ep",
        ["Old One", "Old Two", "Old Three"],
        CANDIDATES,
        target=12,
        max_turns=max_turns,
        domain=DOMAINS["movielens"],
    )


def test_click_ends_the_episode_and_final_item_decides_hit():
    s = play(
        new_state(), [(" Alpha\nReason: a", " skip\nScore: 0.3"), (" Gamma", " click\nScore: 0.9"), (" Beta", " skip")]
    )
    assert s.done and len(s.turns) == 2
    assert s.final_item == 12 and s.hit
    assert [t.hit for t in s.turns] == [False, True]


def test_turn_cap_and_final_item_is_the_last_turn():
    s = play(new_state(max_turns=3), [(" Gamma", " skip"), (" Beta", " dislike"), (" Alpha", " star")] * 2)
    assert s.done and len(s.turns) == 3
    assert s.final_item == 10 and not s.hit  # Gamma was right at turn 1, but the last turn counts


def test_invalid_turn_is_a_miss_and_the_user_is_not_asked():
    s = new_state(max_turns=2)
    s.give_recommendation(Said(" Radiohead"))
    assert s.awaiting == "rec" and s.turns[0].item is None and s.turns[0].reply is None
    s.give_recommendation(Said(" nothing useful"))
    assert s.done and s.valid_turns == 0 and not s.hit and s.final_item is None


def test_memory_is_shared_append_only_and_rendered_in_full():
    s = new_state()
    s.give_recommendation(Said(" Alpha\nReason: it is popular"))
    user_chat = s.user_prompt()
    assert "Conversation so far" not in user_chat[1]["content"]  # M_0 is empty
    s.give_reply(Said(" skip\nScore: 0.4\nReason: seen enough"))
    s.give_recommendation(Said(" ???"))
    memory = s.memory()
    assert memory == [
        'Turn 1: the recommender suggested "Alpha" (it is popular). The user chose skip (score 0.40): seen enough',
        "Turn 2: the recommender named no candidate.",
    ]
    rec_chat = s.rec_prompt()
    assert all(line in rec_chat[1]["content"] for line in memory)
    assert rec_chat[-1] == {"role": "assistant", "content": "Item:"}


def test_prompts_hold_history_candidates_and_peer_evidence():
    s = new_state()
    rec_text = s.rec_prompt()[1]["content"]
    assert "1. Old One" in rec_text and all(f"- {t}" in rec_text for _, t in CANDIDATES)
    s.give_recommendation(Said(" Beta"))
    chat = s.user_prompt(PeerEvidence(count=3, k=10, similarity=0.4))
    assert (
        '"Beta"' in chat[1]["content"]
        and "Of the 10 users most similar to you, 3 chose this movie." in chat[1]["content"]
    )
    assert "Gamma" not in chat[1]["content"]  # the user agent never sees the candidate list or the target


def test_teacher_prompt_adds_hindsight_to_the_same_prompt():
    s = play(new_state(max_turns=2), [(" Alpha", " skip"), (" Gamma", " click")])
    teacher = s.teacher_prompt(s.turns[0], "rec")
    student = s.turns[0].rec_prompt
    assert len(teacher) == len(student) and teacher[-1] == student[-1]
    assert '"Gamma"' in teacher[1]["content"] and teacher[1]["content"] != student[1]["content"]
    assert 'Turn 1: recommended "Alpha", the user chose skip; "Alpha" is not the true item.' in teacher[1]["content"]
    assert 'Turn 2: recommended "Gamma", the user chose click; "Gamma" is the true item.' in teacher[1]["content"]
    # exactly the student's prompt, with the hindsight block as its own paragraph after the parts every
    # turn shares (history, candidates): turn 1 has no conversation yet, so right before the question
    question = "Which candidate should the user get next?"
    assert student[1]["content"].endswith("\n\n" + question)
    assert teacher[1]["content"] == student[1]["content"].replace(question, f"{s.hindsight()}\n\n{question}")
    assert teacher[0] == student[0] and teacher[2:] == student[2:]
    assert s.hindsight().startswith(
        'Hindsight (known only after the episode): the movie this user actually chose next is "Gamma".\n'
    )
    # turn 2: before the conversation, so both turns' teacher prompts share everything up to it
    memory = "Conversation so far:"
    rec2 = s.teacher_prompt(s.turns[1], "rec")[1]["content"]
    assert rec2 == s.turns[1].rec_prompt[1]["content"].replace(memory, f"{s.hindsight()}\n\n{memory}")
    assert rec2.startswith(teacher[1]["content"].removesuffix(question))
    user_teacher = s.teacher_prompt(s.turns[1], "user")
    assert user_teacher[-1] == {"role": "assistant", "content": "Action:"}
    user_student = s.turns[1].user_prompt[1]["content"]
    assert user_teacher[1]["content"] == user_student.replace(memory, f"{s.hindsight()}\n\n{memory}")
    # the User's turn 1 (no conversation): right after its history, before the suggestion
    suggestion = "The recommender now suggests"
    user1 = s.teacher_prompt(s.turns[0], "user")[1]["content"]
    assert user1 == s.turns[0].user_prompt[1]["content"].replace(suggestion, f"{s.hindsight()}\n\n{suggestion}")


def test_moves_out_of_order_are_programming_errors():
    s = new_state()
    with pytest.raises(RuntimeError, match="expected a rec move"):
        s.user_prompt()
    with pytest.raises(ValueError, match="not among the candidates"):
        EpisodeState("x", [], CANDIDATES, target=99)


def test_hit_interval_is_wilson_per_user_and_clustered_otherwise():
    from coars_fast.stats import hit_interval, wilson_interval

    hits = [True] * 10 + [False] * 30
    assert hit_interval(hits, [f"u{i}" for i in range(40)]) == wilson_interval(10, 40)
    # the same hits in 4 users whose episodes all agree: effectively 4 observations, a much wider interval
    clustered = hit_interval(hits, [f"u{i // 10}" for i in range(40)])
    assert (
        clustered[0] == 0.0
        and clustered[1] >= 0.5
        and clustered[1] - clustered[0] > 2 * (wilson_interval(10, 40)[1] - wilson_interval(10, 40)[0])
    )
