"""`coars-fast data download` against a local HTTP server on 127.0.0.1 that serves the upstream
layout (no test reaches the internet): success, a corrupted file, a truncated transfer that a second
run resumes with a Range request, a server that is down."""

import gzip
import http.server
import io
import socket
import threading
import zipfile

import pytest

from coars_fast.cli import main
from coars_fast.data import load_dataset

pytestmark = pytest.mark.data
ZIP_PATH = "/files.grouplens.org/datasets/movielens/ml-100k.zip"


def _zip_bytes(data_dir, corrupt=False):
    """ml-100k.zip as GroupLens lays it out, from the shared data's copies of its files."""
    folder = data_dir / "movielens" / "ml-100k"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.data", gzip.decompress((folder / "u.data.gz").read_bytes()))
        item = bytearray((folder / "u.item").read_bytes())
        if corrupt:
            item[100] ^= 1  # one bit
        zf.writestr("ml-100k/u.item", bytes(item))
        zf.writestr("ml-100k/README", (folder / "README").read_bytes())
    return buffer.getvalue()


class Server:
    """Serves `files` {path: bytes}; `cut` stops a response after that many bytes (closing the
    connection with the length promised); honours Range requests and records them."""

    def __init__(self, files):
        self.files, self.cut, self.ranges = files, None, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if "Range" in self.headers:
                    server.ranges.append(self.headers["Range"])
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.cut is not None:
                    payload = payload[: server.cut]
                    server.cut = None
                self.wfile.write(payload)
                self.wfile.flush()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def upstream(data_dir, monkeypatch):
    server = Server({ZIP_PATH: _zip_bytes(data_dir)})
    monkeypatch.setenv("COARS_FAST_MIRROR", server.url)
    yield server
    server.close()


def _error_lines(err):
    """The command's own lines on stderr (the progress bar shares the stream)."""
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("coars-fast:")]


def _download(target):
    return main(["data", "download", "--dataset", "movielens", "--data-dir", str(target)])


def test_download_verifies_and_the_loader_reads_it(upstream, data_dir, tmp_path, capsys):
    assert _download(tmp_path) == 0
    assert "verified" in capsys.readouterr().out
    ours, shared = load_dataset("movielens", tmp_path), load_dataset("movielens", data_dir)
    assert [i.title for i in ours.items] == [i.title for i in shared.items]
    assert [(e.history, e.target) for e in ours.split("val")] == [(e.history, e.target) for e in shared.split("val")]
    assert _download(tmp_path) == 0  # a complete folder is kept, nothing fetched again


def test_a_corrupted_file_is_refused_and_nothing_is_installed(upstream, data_dir, tmp_path, capsys):
    upstream.files[ZIP_PATH] = _zip_bytes(data_dir, corrupt=True)
    assert _download(tmp_path) == 2
    (err,) = _error_lines(capsys.readouterr().err)
    assert "u.item has SHA-256" in err and "not the pinned" in err
    assert not (tmp_path / "movielens").exists()  # no half dataset where the loader looks


def test_a_truncated_transfer_resumes_with_a_range_request(upstream, tmp_path, capsys):
    size = len(upstream.files[ZIP_PATH])
    upstream.cut = size // 3
    assert _download(tmp_path) == 2
    (err,) = _error_lines(capsys.readouterr().err)
    assert "stopped after" in err and "run the command again to resume" in err
    assert (tmp_path / ".downloads" / "ml-100k.zip.part").stat().st_size == size // 3
    assert _download(tmp_path) == 0
    assert upstream.ranges == [f"bytes={size // 3}-"]  # the second run asked for the rest only
    assert (tmp_path / "movielens" / "ml-100k" / "u.item").is_file()


def test_a_server_that_is_down_is_one_line(monkeypatch, tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("COARS_FAST_MIRROR", f"http://127.0.0.1:{port}")
    assert _download(tmp_path) == 2
    (err,) = _error_lines(capsys.readouterr().err)
    assert "cannot reach" in err and "run the command again" in err


# -- LastFM: LLaRA's DataFrame pickles, converted through the restricted unpickler -----------------


def _llara_pickle(path):
    """A DataFrame pickle (written by this machine's pandas) of a shared LLaRA split."""
    import json
    import pickle

    import pandas as pd

    rows = [json.loads(line) for line in gzip.open(path, "rt")]
    columns = pd.Index(["seq", "len_seq", "next"], dtype=object)  # as LLaRA's pandas stored them
    return pickle.dumps(pd.DataFrame(rows, columns=columns), protocol=4)


def _split_for_upload(text: bytes, at: int) -> tuple[bytes, bytes]:
    """A CRLF table cut in two the way it was uploaded: the header repeated, a blank line after part 1."""
    header, body = text.split(b"\r\n", 1)
    rows = body.split(b"\r\n")
    first = header + b"\r\n" + b"\r\n".join(rows[:at]) + b"\r\n\r\n"
    return first, header + b"\r\n" + b"\r\n".join(rows[at:])


@pytest.fixture
def lastfm_upstream(data_dir, monkeypatch):
    """The upstream layout with files made from the shared data: this machine's pickles of the LLaRA
    splits, HetRec's tagging table cut in two. The fetched files' pins are those of these bytes (the
    real upstream files are not shipped with the tests); the pins of what download writes (the
    converted and joined files) stay the real ones."""
    import dataclasses
    import hashlib
    import urllib.parse

    from coars_fast.data import sources

    llara, hetrec = data_dir / "lastfm" / "llara", data_dir / "lastfm" / "hetrec2011-lastfm-2k"
    tagged = _split_for_upload(gzip.decompress((hetrec / "user_taggedartists.dat.gz").read_bytes()), 108469)
    bodies = {
        "train_data.df": _llara_pickle(llara / "train.jsonl.gz"),
        "Val_data.df": _llara_pickle(llara / "val.jsonl.gz"),
        "id2name.txt": (llara / "id2name.txt").read_bytes(),
        "artists.dat": gzip.decompress((hetrec / "artists.dat.gz").read_bytes()),
        "user_taggedartists.dat": tagged[0],
        "user_taggedartists_2.dat": tagged[1],
    }
    files = {}

    def serve(url):
        body = bodies[url.rsplit("/", 1)[1]]
        parts = urllib.parse.urlsplit(url)
        files[f"/{parts.netloc}{parts.path}"] = body
        return hashlib.sha256(body).hexdigest()

    replaced = []
    for source in sources.SOURCES["lastfm"]:
        remotes = tuple(
            dataclasses.replace(r, sha256=serve(r.url), parts=tuple((u, serve(u)) for u, _ in r.parts))
            for r in source.files
        )
        replaced.append(dataclasses.replace(source, files=remotes))
    monkeypatch.setitem(sources.SOURCES, "lastfm", tuple(replaced))
    server = Server(files)
    monkeypatch.setenv("COARS_FAST_MIRROR", server.url)
    yield server
    server.close()


def test_lastfm_pickles_convert_to_the_shared_files_byte_for_byte(lastfm_upstream, data_dir, tmp_path):
    """The conversion's output pins are those of the shared data's files: matching them means the
    downloaded splits are the very rows the project was measured on."""
    assert main(["data", "download", "--dataset", "lastfm", "--data-dir", str(tmp_path)]) == 0
    ours, shared = load_dataset("lastfm", tmp_path), load_dataset("lastfm", data_dir)
    assert [(e.history, e.target) for e in ours.split("val")] == [(e.history, e.target) for e in shared.split("val")]
    assert len(ours.split("train")) == len(shared.split("train"))
    assert ours.user_sequences == shared.user_sequences  # HetRec joined back: the F1 users are there
    assert not (tmp_path / "lastfm" / "llara" / "test.jsonl").exists()  # the test split is never fetched


def test_a_pickle_that_fails_its_pin_is_never_unpickled(lastfm_upstream, tmp_path, monkeypatch, capsys):
    from coars_fast.data import download as download_module

    path = next(p for p in lastfm_upstream.files if p.endswith("train_data.df"))
    lastfm_upstream.files[path] = lastfm_upstream.files[path] + b"\x00"

    def never(path):
        raise AssertionError("unpickled unverified bytes")

    monkeypatch.setattr(download_module, "load_dataframe", never)
    assert main(["data", "download", "--dataset", "lastfm", "--data-dir", str(tmp_path)]) == 2
    (err,) = _error_lines(capsys.readouterr().err)
    assert "train_data.df: SHA-256" in err and "not the pinned" in err
    assert not (tmp_path / "lastfm").exists()


def test_the_unpickler_refuses_anything_but_a_plain_dataframe(tmp_path):
    import os
    import pickle

    from coars_fast.data.safe_pickle import load_dataframe
    from coars_fast.errors import DataError

    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.df").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(DataError, match="refused to load posix.system"):
        load_dataframe(tmp_path / "evil.df")
    assert not marker.exists()


def test_instruments_without_its_optional_titles_file(data_dir, tmp_path, monkeypatch, capsys):
    """The interaction files are the upstream bytes (their real pins hold); the unpinned, optional
    title file is missing upstream here (404): a warning, and the dataset still installs."""
    import urllib.parse

    from coars_fast.data.sources import SOURCES

    folder = data_dir / "instruments" / "lcrec-amazon2018-5core"
    bodies = {
        "Instruments.inter.json": gzip.decompress((folder / "Instruments.inter.json.gz").read_bytes()),
        "Instruments.item2id": (folder / "Instruments.item2id").read_bytes(),
    }
    files = {}
    for remote in SOURCES["instruments"][0].files:
        name = remote.url.rsplit("/", 1)[1]
        if name in bodies:
            parts = urllib.parse.urlsplit(remote.url)
            files[f"/{parts.netloc}{parts.path}"] = bodies[name]
    server = Server(files)
    monkeypatch.setenv("COARS_FAST_MIRROR", server.url)
    try:
        with pytest.warns(UserWarning, match="Instruments.item.json skipped"):
            assert main(["data", "download", "--dataset", "instruments", "--data-dir", str(tmp_path)]) == 0
    finally:
        server.close()
    with pytest.warns(UserWarning):  # titles fall back to ASINs, as with the shared copy
        ours = load_dataset("instruments", tmp_path)
        shared = load_dataset("instruments", data_dir)
    assert [(e.history, e.target) for e in ours.split("val")] == [(e.history, e.target) for e in shared.split("val")]
