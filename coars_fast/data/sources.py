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
class Remote:
    """One file: fetched, verified, then saved as `save_as` (converted first when `convert` says)."""

    url: str
    sha256: str  # of the fetched bytes: always pinned (a pickle is unpickled only once verified)
    save_as: str
    convert: str | None = None  # "llara": a LLaRA DataFrame pickle -> JSON lines (download.py)
    output_sha256: str | None = None  # of the saved file, where a conversion is pinned too


@dataclass(frozen=True)
class Source:
    folder: str  # under the data directory, where the loader looks
    expect: tuple[str, ...]  # files that make the folder complete
    archives: tuple[Archive, ...] = ()
    files: tuple[Remote, ...] = ()


_AFL = "https://raw.githubusercontent.com/Lanyu0303/AFL/4622a1e163df5db669a56ade4d7db334bc109d06/data/lastfm"
_NAPO = "https://raw.githubusercontent.com/acoding-xuan/NAPO/7d8c38e3b9e63db5e8cc83d884abc8feb3544a1b/data/ref/lastfm"

SOURCES = {
    # GroupLens' official zip. Its own bytes are not pinned here (GroupLens publishes an MD5 of the
    # ratings, not of the zip); the two members the loader reads are: u.data is the file whose MD5
    # GroupLens gives (6e47046882bad158b0efbb84cd5cb987).
    "movielens": Source(
        folder="movielens/ml-100k",
        expect=("u.data", "u.item"),
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
    ),
    # LLaRA's LastFM split as AFL (train, names) and NAPO (the full validation file) publish it, at
    # pinned commits; the matching test split is deliberately not fetched. The pickles' SHA-256 is
    # checked before they are unpickled (safe_pickle.py); their JSON-lines conversion is pinned too.
    # Without HetRec's files (not fetched yet) the user-agent F1 protocol is unavailable on LastFM.
    "lastfm": Source(
        folder="lastfm/llara",
        expect=("train.jsonl", "val.jsonl", "id2name.txt"),
        files=(
            Remote(
                url=f"{_AFL}/train_data.df",
                sha256="7db71a60d3da4c449091fbc254efc9602f81eec6eb9a60534811ccd61974dbc1",
                save_as="train.jsonl",
                convert="llara",
                output_sha256="7cf1a790f9483b1018b4c17c92765f2339015310d07aea1e9959e86e73a39f34",
            ),
            Remote(
                url=f"{_NAPO}/Val_data.df",
                sha256="7ce8819d4c3cefc285cb34836ebf0e5cea2e88b27d4374b29f137933e78a2836",
                save_as="val.jsonl",
                convert="llara",
                output_sha256="b42e83dcaf157af78353c9e611e58ecdf0fb409954be8bde45ce93446c249267",
            ),
            Remote(
                url=f"{_AFL}/id2name.txt",
                sha256="b608bcf14300b1608ccd88f4fe240e6345125201ecdb55157395c19787fe4eaf",
                save_as="id2name.txt",
            ),
        ),
    ),
}
