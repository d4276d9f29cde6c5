"""Where each dataset comes from on the internet, with the SHA-256 of every file whose exact
upstream bytes are known (`coars-fast data download`, download.py)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str | None  # of the archive itself; None where its exact upstream bytes are not pinned
    members: dict[str, str | None] = field(default_factory=dict)  # member -> SHA-256 of its bytes


@dataclass(frozen=True)
class Source:
    folder: str  # under the data directory, where the loader looks
    archives: tuple[Archive, ...]
    expect: tuple[str, ...]  # files that make the folder complete
    note: str = ""


SOURCES = {
    # GroupLens' official zip. Its own bytes are not pinned here (GroupLens publishes an MD5 of the
    # ratings, not of the zip); the two members the loader reads are: u.data is the file whose MD5
    # GroupLens gives (6e47046882bad158b0efbb84cd5cb987).
    "movielens": Source(
        folder="movielens/ml-100k",
        archives=(
            Archive(
                url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                sha256=None,
                members={
                    "ml-100k/u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
                    "ml-100k/u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
                    "ml-100k/README": None,
                },
            ),
        ),
        expect=("u.data", "u.item"),
    ),
}
