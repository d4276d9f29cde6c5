"""`--dataset synthetic`: a learnability benchmark generated from a seed, no files.

Every album has a genre and a decade, written at the start of its title ("Jazz 1970s: Velvet Harbor":
an agent that names a candidate commits to its genre with the first token). Every
user has one hidden taste, a (genre, decade) pair: each item of their sequence is an album of that
taste, except that with probability `noise` a history item is any other album. The validation and
test targets (the last two items, leave-last-out as for the real datasets) always follow the taste,
so the rule "pick the candidate whose genre and decade dominate the history" is the best policy, and
a random negative shares the taste with probability 1 / (genres x decades). The User's true likes are
the albums of the taste (`Dataset.user_likes`), which gives user-agent F1 a ground truth.

Difficulty knobs (config `data.synthetic.*`): fewer genres or decades make more negatives share the
taste (a lower ceiling); more `noise` hides the taste in the history; `tags_in_title: false` keeps
only the made-up name, so the taste can be learnt from co-occurrence (as SASRec does) but not read.
Documented in docs/SYNTHETIC.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coars_fast.data.dataset import HISTORY_LEN, MIN_HISTORY, Dataset, Item, leave_last_out
from coars_fast.errors import DataError

GENRES = (
    "jazz",
    "rock",
    "folk",
    "techno",
    "classical",
    "hip hop",
    "reggae",
    "metal",
    "blues",
    "pop",
    "soul",
    "country",
)
DECADES = ("1950s", "1960s", "1970s", "1980s", "1990s", "2000s", "2010s", "2020s")
ADJECTIVES = (
    "Velvet",
    "Golden",
    "Silent",
    "Electric",
    "Broken",
    "Hidden",
    "Crimson",
    "Endless",
    "Midnight",
    "Paper",
    "Silver",
    "Wild",
    "Quiet",
    "Burning",
    "Frozen",
    "Lonely",
    "Bright",
    "Distant",
    "Hollow",
    "Restless",
    "Sleepy",
    "Northern",
    "Scarlet",
    "Gentle",
    "Iron",
    "Amber",
    "Falling",
    "Secret",
    "Neon",
    "Wandering",
    "Hungry",
    "Painted",
    "Southern",
    "Borrowed",
    "Glass",
    "Early",
    "Rusty",
    "Sudden",
    "Tender",
    "Open",
)
NOUNS = (
    "Harbor",
    "Garden",
    "River",
    "Mirror",
    "Highway",
    "Lantern",
    "Meadow",
    "Station",
    "Orchard",
    "Canyon",
    "Window",
    "Island",
    "Compass",
    "Feather",
    "Valley",
    "Engine",
    "Horizon",
    "Thunder",
    "Cathedral",
    "Desert",
    "Ocean",
    "Pocket",
    "Ladder",
    "Signal",
    "Summer",
    "Winter",
    "Carnival",
    "Shadow",
    "Anchor",
    "Voyage",
    "Bridge",
    "Forest",
    "Letter",
    "Circle",
    "Kingdom",
    "Fever",
    "Diamond",
    "Railway",
    "Balloon",
    "Tower",
)


@dataclass(frozen=True)
class SyntheticSettings:
    seed: int = 0
    users: int = 3000
    genres: int = 8  # the first N of GENRES
    decades: int = 6  # the first N of DECADES
    items_per_taste: int = 24  # albums of each (genre, decade)
    min_length: int = 14  # items per user sequence (>= 13 for the user-agent F1 protocol)
    max_length: int = 20
    noise: float = 0.2  # chance that a history item is any album instead of one of the taste
    tags_in_title: bool = True

    def __post_init__(self):
        problems = []
        if not 1 <= self.genres <= len(GENRES):
            problems.append(f"genres must lie in [1, {len(GENRES)}], got {self.genres}")
        if not 1 <= self.decades <= len(DECADES):
            problems.append(f"decades must lie in [1, {len(DECADES)}], got {self.decades}")
        if self.users < 1:
            problems.append(f"users must be >= 1, got {self.users}")
        if not MIN_HISTORY + 2 <= self.min_length <= self.max_length:
            problems.append(
                f"need {MIN_HISTORY + 2} <= min_length <= max_length, got {self.min_length} and {self.max_length}"
            )
        if self.items_per_taste < self.max_length:
            problems.append(f"items_per_taste ({self.items_per_taste}) must be >= max_length ({self.max_length})")
        if self.genres * self.decades * self.items_per_taste > len(ADJECTIVES) * len(NOUNS):
            problems.append(
                f"at most {len(ADJECTIVES) * len(NOUNS)} albums have distinct names; "
                f"{self.genres} x {self.decades} x {self.items_per_taste} asked"
            )
        if not 0.0 <= self.noise < 1.0:
            problems.append(f"noise must lie in [0, 1), got {self.noise}")
        if problems:
            raise DataError("synthetic dataset: " + "; ".join(problems))

    @property
    def tastes(self) -> int:
        return self.genres * self.decades


def generate(
    settings: SyntheticSettings = SyntheticSettings(), history_len: int = HISTORY_LEN, min_history: int = MIN_HISTORY
) -> Dataset:
    rng = np.random.default_rng(settings.seed)
    names = [f"{a} {n}" for a in ADJECTIVES for n in NOUNS]
    order = rng.permutation(len(names))
    items, members = [], []  # members[t]: the albums of taste t
    for t in range(settings.tastes):
        genre, decade = GENRES[t // settings.decades], DECADES[t % settings.decades]
        members.append(range(len(items), len(items) + settings.items_per_taste))
        for _ in range(settings.items_per_taste):
            name = names[order[len(items)]]
            title = f"{genre.title()} {decade}: {name}" if settings.tags_in_title else name
            items.append(Item(item_id=f"a{len(items)}", title=title, attrs={"genre": genre, "decade": decade}))

    sequences, likes, tastes = {}, {}, {}
    for u in range(settings.users):
        user = f"u{u}"
        taste = int(rng.integers(settings.tastes))
        length = int(rng.integers(settings.min_length, settings.max_length + 1))
        own = [int(i) for i in rng.permutation(members[taste])]
        seq: list[int] = []
        for position in range(length):
            # the last two positions are the validation and test targets: always of the taste
            if position < length - 2 and rng.random() < settings.noise:
                other = int(rng.integers(len(items)))
                if other not in seq and other not in members[taste]:
                    seq.append(other)
                    continue
            seq.append(own.pop())
        sequences[user], likes[user], tastes[user] = tuple(seq), frozenset(members[taste]), taste
    return Dataset(
        name="synthetic",
        items=items,
        splits=leave_last_out(sequences, history_len, min_history),
        user_sequences=sequences,
        user_note=f"generated: seed {settings.seed}, {settings.tastes} tastes, noise {settings.noise}",
        source_rows={"generated": sum(len(s) for s in sequences.values())},
        user_likes=likes,
    )
