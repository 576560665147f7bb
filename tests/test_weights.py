"""``nclsm models fetch`` / ``list`` against an HTTP server on the loopback interface."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import pytest

from nclsm_utils.cli import main
from nclsm_utils.segmenters import weights
from nclsm_utils.segmenters.weights import WeightsError, fetch

PAYLOAD = bytes(range(256)) * 400          # 102,400 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server name
        if self.path == "/weights":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/broken":       # announces everything, sends a third, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_writes_the_verified_file(server, tmp_path):
    path, digest = fetch("2D_versatile_fluo", dest=tmp_path, url=f"{server}/weights",
                         sha256=SHA)
    assert path == tmp_path / "2D_versatile_fluo.zip"
    assert path.read_bytes() == PAYLOAD and digest == SHA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2D_versatile_fluo.zip"]


def test_fetch_refuses_a_checksum_mismatch_in_one_line(server, tmp_path, capsys):
    # the pinned SHA-256 of the real 2D_versatile_fluo.zip does not match these bytes
    code = main(["models", "fetch", "2D_versatile_fluo", "--dest", str(tmp_path),
                 "--url", f"{server}/weights"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "SHA-256 mismatch" in err and SHA in err
    assert weights.WEIGHTS["2D_versatile_fluo"].sha256 in err
    assert list(tmp_path.iterdir()) == []                     # nothing kept


def test_interrupted_transfer_leaves_nothing(server, tmp_path):
    with pytest.raises(WeightsError, match="broke off") as info:
        fetch("cyto3", dest=tmp_path, url=f"{server}/broken")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
    # an earlier good file is not touched by a failed download
    good = tmp_path / "cyto3"
    good.write_bytes(b"earlier")
    with pytest.raises(WeightsError):
        fetch("cyto3", dest=tmp_path, url=f"{server}/broken")
    assert good.read_bytes() == b"earlier" and list(tmp_path.iterdir()) == [good]


def test_unreachable_server_says_what_to_download_and_where(tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/cyto3"
    code = main(["models", "fetch", "cyto3", "--dest", str(tmp_path), "--url", url])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert f"download {url}" in err and str(tmp_path / "cyto3") in err
    assert list(tmp_path.iterdir()) == []


def test_cli_fetch_prints_where_and_list_shows_it(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "cp"))
    import sys

    if "cellpose.models" in sys.modules:
        monkeypatch.setattr(sys.modules["cellpose.models"], "MODEL_DIR", tmp_path / "cp")
    code = main(["models", "fetch", "cyto3", "--url", f"{server}/weights"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"cyto3: {tmp_path / 'cp' / 'cyto3'} (sha256 {SHA}, not verified" in out
    assert main(["models", "list", "--json"]) == 0
    import json

    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cyto3"]["present"] and rows["cyto3"]["bytes"] == len(PAYLOAD)
    # with cyto3 on disk the plain cellpose row starts from it
    from nclsm_utils.segmenters import get_segmenter

    assert get_segmenter("cellpose", workdir=tmp_path).weights_description().startswith(
        "fine-tuned from cyto3")


def test_urls_and_pinned_hash_are_the_libraries_own():
    """The addresses are where the installed libraries download from; the pinned SHA-256 is
    the one StarDist registers for its file (Cellpose registers none for cyto3)."""
    from cellpose import models as cp_models
    from csbdeep.models.pretrained import get_model_details
    from stardist.models import StarDist2D

    assert weights.WEIGHTS["cyto3"].url == f"{cp_models._MODEL_URL}/cyto3"
    assert weights.WEIGHTS["cyto3"].sha256 is None
    _, _, published = get_model_details(StarDist2D, "2D_versatile_fluo")
    assert weights.WEIGHTS["2D_versatile_fluo"].url == published["url"]
    assert weights.WEIGHTS["2D_versatile_fluo"].sha256 == published["hash"]
