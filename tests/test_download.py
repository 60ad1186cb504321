"""Download against a loopback HTTP server: md5 check, Range resume, unpacking, offline errors."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mfspark.commands.main import main
from mfspark.data.download import download_dataset
from mfspark.errors import DownloadError

RATINGS = b"userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n"


def release_zip(top: str = "ml-latest-small") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr(f"{top}/ratings.csv", RATINGS)
        bundle.writestr(f"{top}/movies.csv", b"movieId,title,genres\r\n1,Toy Story (1995),Comedy\r\n" * 200)
    return buffer.getvalue()


class Server:
    """Serves `files` on 127.0.0.1 with Range support; can cut the first zip response in half."""

    def __init__(self, files: dict[str, bytes], cut_first: bool = False):
        self.files, self.cut_first, self.requests = files, cut_first, []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.requests.append((self.path, self.headers.get("Range")))
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if owner.cut_first and self.path.endswith(".zip"):
                    owner.cut_first = False
                    self.wfile.write(body[start:len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served():
    servers = []

    def start(files, cut_first=False):
        servers.append(Server(files, cut_first))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def zip_files(name: str, body: bytes, md5_text: str | None = None) -> dict[str, bytes]:
    md5_text = md5_text if md5_text is not None else f"{hashlib.md5(body).hexdigest()}  {name}.zip\n"
    return {f"/{name}.zip": body, f"/{name}.zip.md5": md5_text.encode()}


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_download_verifies_and_unpacks(served, tmp_path):
    server = served(zip_files("ml-latest-small", release_zip()))
    path = download_dataset("ml-latest-small", tmp_path, server.url, timeout=5)
    assert path == tmp_path / "ml-latest-small"
    assert (path / "ratings.csv").read_bytes() == RATINGS
    assert (tmp_path / "ml-latest-small.zip").is_file()
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*unpack*"))
    # Second call: served from the cache without any request.
    count = len(server.requests)
    assert download_dataset("ml-latest-small", tmp_path, server.url, timeout=5) == path
    assert len(server.requests) == count


def test_interrupted_download_resumes_with_range(served, tmp_path):
    body = release_zip()
    server = served(zip_files("ml-latest-small", body), cut_first=True)
    with pytest.raises(DownloadError, match="partial download"):
        download_dataset("ml-latest-small", tmp_path, server.url, timeout=5)
    part = tmp_path / "ml-latest-small.zip.part"
    assert 0 < part.stat().st_size < len(body)
    path = download_dataset("ml-latest-small", tmp_path, server.url, timeout=5)
    assert (path / "ratings.csv").read_bytes() == RATINGS
    assert server.requests[-1] == ("/ml-latest-small.zip", f"bytes={len(body) // 2}-")


def test_checksum_mismatch_is_an_error_and_deletes_the_part(served, tmp_path):
    server = served(zip_files("ml-100k", release_zip("ml-100k"), md5_text="0" * 32))
    with pytest.raises(DownloadError, match="does not match"):
        download_dataset("ml-100k", tmp_path, server.url, timeout=5)
    assert not (tmp_path / "ml-100k").exists()
    assert not list(tmp_path.glob("ml-100k.zip*"))


def test_zip_top_directory_is_renamed_to_the_release_name(served, tmp_path):
    server = served(zip_files("ml-10m", release_zip("ml-10M100K")))
    assert (download_dataset("ml-10m", tmp_path, server.url, timeout=5) / "ratings.csv").is_file()


def test_md5_given_on_the_command_line_skips_the_md5_file(served, tmp_path, capsys):
    body = release_zip()
    server = served({"/ml-latest-small.zip": body})
    status = main(["download", "--dataset", "ml-latest-small", "--cache-dir", str(tmp_path),
                   "--base-url", server.url, "--md5", hashlib.md5(body).hexdigest(), "--timeout", "5"])
    assert status == 0
    assert str(tmp_path / "ml-latest-small") in capsys.readouterr().out


def test_offline_is_a_clear_download_error(tmp_path, capsys):
    with pytest.raises(DownloadError, match=r"could not fetch the checksum .*\.md5"):
        download_dataset("ml-25m", tmp_path, closed_port_url(), timeout=5)
    status = main(["download", "--dataset", "ml-25m", "--cache-dir", str(tmp_path), "--base-url", closed_port_url(),
                   "--md5", "0" * 32, "--timeout", "5"])
    assert status == 2
    assert "mfspark download: error: could not download" in capsys.readouterr().err
    assert not Path(tmp_path / "ml-25m").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--base-url", "notaurl", "--base-url 'notaurl' is not an http://, https:// or file:// URL"),
    ("--base-url", "http://", "--base-url 'http://' is not an http://, https:// or file:// URL"),
    ("--md5", "abc123", "--md5 'abc123' is not an md5 checksum (32 hex digits)"),
    ("--md5", "g" * 32, f"--md5 '{'g' * 32}' is not an md5 checksum (32 hex digits)"),
    ("--timeout", "0", "--timeout 0 must be a positive number of seconds"),
    ("--timeout", "-5", "--timeout -5 must be a positive number of seconds"),
])
def test_bad_option_is_one_line_before_any_work(tmp_path, capsys, option, value, message):
    cache = tmp_path / "cache"
    status = main(["download", "--dataset", "ml-latest-small", "--cache-dir", str(cache), option, value])
    assert status == 2
    assert capsys.readouterr().err == f"mfspark download: error: {message}\n"
    assert not cache.exists()  # nothing created, nothing fetched


def test_failed_download_message_matches_the_part_file_on_disk(served, tmp_path, capsys):
    body = release_zip()
    md5 = hashlib.md5(body).hexdigest()
    status = main(["download", "--dataset", "ml-latest-small", "--cache-dir", str(tmp_path),
                   "--base-url", closed_port_url(), "--md5", md5, "--timeout", "5"])
    assert status == 2
    err = capsys.readouterr().err
    assert "nothing was downloaded" in err and ".part" not in err
    assert not list(tmp_path.glob("*.part"))

    server = served({"/ml-latest-small.zip": body}, cut_first=True)
    status = main(["download", "--dataset", "ml-latest-small", "--cache-dir", str(tmp_path),
                   "--base-url", server.url, "--md5", md5, "--timeout", "5"])
    assert status == 2
    part = tmp_path / "ml-latest-small.zip.part"
    assert f"the partial download {part} ({part.stat().st_size:,} bytes) is kept" in capsys.readouterr().err
