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
    sha256: str | None  # of the fetched bytes; None only for plain data whose upstream bytes are unknown
    save_as: str
    convert: str | None = None  # "llara": a LLaRA DataFrame pickle -> JSON lines; "join": see `parts`
    output_sha256: str | None = None  # of the saved file, where a conversion is pinned too
    # "join": further (url, sha256) parts of one file split for upload, appended without their header
    parts: tuple[tuple[str, str], ...] = ()
    optional: bool = False  # a failed fetch is a warning, not an error (the loader copes without it)


@dataclass(frozen=True)
class Source:
    folder: str  # under the data directory, where the loader looks
    expect: tuple[str, ...]  # files that make the folder complete
    archives: tuple[Archive, ...] = ()
    files: tuple[Remote, ...] = ()


_AFL = "https://raw.githubusercontent.com/Lanyu0303/AFL/4622a1e163df5db669a56ade4d7db334bc109d06/data/lastfm"
_LETTER = (
    "https://raw.githubusercontent.com/HonghuiBao2000/LETTER/8d0154e28de37dbb6e24871c508ad8ddb1921cda/data/Instruments"
)
_GENREC = "https://raw.githubusercontent.com/WncFht/GenRec/6b50a813e071f6e31b4052319f1b723ea01a934f/data/Instruments"
_ADMUSIC = "https://raw.githubusercontent.com/rafaelpossas/admusic"
_NAPO = "https://raw.githubusercontent.com/acoding-xuan/NAPO/7d8c38e3b9e63db5e8cc83d884abc8feb3544a1b/data/ref/lastfm"

# dataset -> its sources, each a folder under the data directory
SOURCES: dict[str, tuple[Source, ...]] = {
    # GroupLens' official zip. Its own bytes are not pinned here (GroupLens publishes an MD5 of the
    # ratings, not of the zip); the two members the loader reads are: u.data is the file whose MD5
    # GroupLens gives (6e47046882bad158b0efbb84cd5cb987).
    "movielens": (
        Source(
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
    ),
    # LLaRA's LastFM split as AFL (train, names) and NAPO (the full validation file) publish it, at
    # pinned commits; the matching test split is deliberately not fetched. The pickles' SHA-256 is
    # checked before they are unpickled (safe_pickle.py); their JSON-lines conversion is pinned too.
    # Without HetRec's files (not fetched yet) the user-agent F1 protocol is unavailable on LastFM.
    "lastfm": (
        Source(
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
        # HetRec 2011's original files (the user-agent F1 users): artists.dat as uploaded at one commit;
        # user_taggedartists.dat, over GitHub's size limit there, was uploaded in two parts at another
        # and is joined back (pinned: the joined file has the original's rows but one lost at the seam).
        Source(
            folder="lastfm/hetrec2011-lastfm-2k",
            expect=("artists.dat", "user_taggedartists.dat"),
            files=(
                Remote(
                    url=f"{_ADMUSIC}/55baf454ea052547abfc7d787f8a9122be6b8c36/data/artists.dat",
                    sha256="c173881362c6b28551368fecb3c0be5a6a30a6cd859e1f5775413dfe46d48648",
                    save_as="artists.dat",
                ),
                Remote(
                    url=f"{_ADMUSIC}/afcc86fc14ec5d96091e6706c019889739896434/data/user_taggedartists.dat",
                    sha256="7d46ca9d9abfd2a5018d42e3f1ed21e04981d608c376cb12f7c7285a94c37f89",
                    save_as="user_taggedartists.dat",
                    convert="join",
                    parts=(
                        (
                            f"{_ADMUSIC}/afcc86fc14ec5d96091e6706c019889739896434/data/user_taggedartists_2.dat",
                            "e2dd14c47c66201662f593acb825ff7de6239a84acb1f24c6fa01ac1ad6909d6",
                        ),
                    ),
                    output_sha256="de5bb9566f0caff951834c444edc23a57f1a4f6c88d5c85b5941127d9aa6ebc4",
                ),
            ),
        ),
    ),
    # LC-Rec's Amazon 2018 Musical Instruments 5-core: interactions and ASINs at pinned commits. The
    # titles (Instruments.item.json, over 4 MiB) could never be fetched to pin them: fetched unpinned
    # (JSON, read as data only) and optional; without it the items are named by ASIN, with a warning.
    "instruments": (
        Source(
            folder="instruments/lcrec-amazon2018-5core",
            expect=("Instruments.inter.json", "Instruments.item2id"),
            files=(
                Remote(
                    url=f"{_LETTER}/Instruments.inter.json",
                    sha256="0a11d47791d90483005da93c36d826679e20e4592d1d2b86518d5f56f218e743",
                    save_as="Instruments.inter.json",
                ),
                Remote(
                    url=f"{_GENREC}/Instruments.item2id",
                    sha256="76380000fb809cf19e841c69163310ec2d32b7b578277e2b659fbd1e72714688",
                    save_as="Instruments.item2id",
                ),
                Remote(
                    url=f"{_LETTER}/Instruments.item.json", sha256=None, save_as="Instruments.item.json", optional=True
                ),
            ),
        ),
    ),
}
