"""Weights registry, cache state, and downloading (resume, checksum, unpack, offline failure)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import shutil
import time
import zipfile
import zlib
from pathlib import Path

import pytest

import launch
from builder import fetch as F
from builder import weights as W
from builder.errors import MissingWeightError
from builder.needs import needed_for
from tests.fixtures.weights import Served, closed_port, file_server

REQUIRED_NAMES = {
    "ghost_unet_1block", "ghost_unet_2blocks", "ghost_unet_3blocks", "ghost_arcface",
    "antelopev2", "buffalo_l", "codeformer", "gfpgan_v1.4", "parsing_bisenet",
    "parsing_parsenet", "blip_large", "blip_base", "sd15", "epicrealism", "realistic_vision",
}
PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 B: crosses the 1 MiB read chunk


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No proxies (the local server must be hit directly) and a private hub cache."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv(W.ENV_VAR, raising=False)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _register(monkeypatch: pytest.MonkeyPatch, name: str, **changes: object) -> W.WeightSpec:
    spec = dataclasses.replace(W.REGISTRY[name], **changes)
    monkeypatch.setitem(W.REGISTRY, name, spec)
    return spec


# ---- registry -------------------------------------------------------------------------

def test_registry_has_every_agreed_name_with_plausible_facts() -> None:
    assert set(W.REGISTRY) >= REQUIRED_NAMES
    for name, spec in W.REGISTRY.items():
        assert spec.name == name
        assert spec.kind in ("file", "zip", "hf")
        assert spec.license and spec.purpose
        assert spec.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.sha256), name
        if spec.kind == "hf":
            assert re.fullmatch(r"[\w.-]+/[\w.-]+", spec.url), name
        else:
            assert spec.url.startswith("https://") and spec.url.endswith("/" + spec.filename), name
        if spec.kind == "zip":
            assert spec.members and all(m.endswith(".onnx") for m in spec.members)
    # Facts every loader relies on: the official names and where they come from.
    assert W.REGISTRY["ghost_unet_2blocks"].filename == "G_unet_2blocks.pth"
    assert "/sber-swap-v2.0/" in W.REGISTRY["ghost_unet_2blocks"].url
    assert W.REGISTRY["ghost_arcface"].url.endswith("/arcface/backbone.pth")
    assert W.REGISTRY["codeformer"].url.endswith("/v0.1.0/codeformer.pth")
    assert W.REGISTRY["parsing_bisenet"].url.endswith("/v0.2.0/parsing_bisenet.pth")
    assert W.REGISTRY["parsing_parsenet"].url.endswith("/v0.2.2/parsing_parsenet.pth")
    assert W.REGISTRY["blip_large"].url == "Salesforce/blip-image-captioning-large"


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(W.BuilderError, match="did you mean 'codeformer'"):
        W.require("codefromer")


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "env"))
    assert W.cache_dir() == tmp_path / "env"
    assert W.cache_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert W.weight_path("codeformer", str(tmp_path)) == tmp_path / "codeformer" / "codeformer.pth"


# ---- require ----------------------------------------------------------------------------

def test_require_missing_file_names_url_and_path(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightError) as err:
        W.require("gfpgan_v1.4", str(tmp_path))
    msg = str(err.value)
    assert W.REGISTRY["gfpgan_v1.4"].url in msg
    assert str(tmp_path / "gfpgan" / "GFPGANv1.4.pth") in msg
    assert "--fetch gfpgan_v1.4" in msg


def test_require_missing_pack_and_hub_repo_say_where(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightError) as err:
        W.require("antelopev2", str(tmp_path))
    assert str(tmp_path / "insightface/models/antelopev2/scrfd_10g_bnkps.onnx") in str(err.value)
    assert W.REGISTRY["antelopev2"].url in str(err.value)
    with pytest.raises(MissingWeightError) as err:
        W.require("blip_large", str(tmp_path))
    assert "huggingface-cli download Salesforce/blip-image-captioning-large" in str(err.value)
    assert str(tmp_path / "hub") in str(err.value)


def test_require_present_file(tmp_path: Path) -> None:
    path = W.weight_path("codeformer", str(tmp_path))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert W.require("codeformer", str(tmp_path)) == path


@pytest.mark.parametrize("nested", [False, True])
def test_require_pack_returns_the_folder_holding_the_onnx_files(tmp_path: Path, nested: bool) -> None:
    folder = W.weight_path("antelopev2", str(tmp_path))
    inner = folder / "antelopev2" if nested else folder
    inner.mkdir(parents=True)
    for member in W.REGISTRY["antelopev2"].members:
        (inner / member).write_bytes(b"onnx")
    assert W.require("antelopev2", str(tmp_path)) == inner


def test_require_hub_snapshot(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--Salesforce--blip-image-captioning-large"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (snap / "config.json").write_text("{}")
    with pytest.raises(MissingWeightError):  # a config without weights is not a usable snapshot
        W.require("blip_large", str(tmp_path))
    (snap / "model.safetensors").write_bytes(b"w")
    assert W.require("blip_large", str(tmp_path)) == snap
    assert W.state("blip_large", str(tmp_path)).state == W.PRESENT


# ---- state ------------------------------------------------------------------------------

def test_state_missing_unverified_present_and_bad(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wd = str(tmp_path)
    data = b"official bytes"
    _register(monkeypatch, "parsing_bisenet", size=len(data), sha256=_sha(data))
    path = W.weight_path("parsing_bisenet", wd)
    assert W.state("parsing_bisenet", wd).state == W.MISSING
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    assert W.state("parsing_bisenet", wd).state == W.UNVERIFIED  # not hashed yet
    assert W.state("parsing_bisenet", wd, verify=True).state == W.PRESENT
    assert W.state("parsing_bisenet", wd).state == W.PRESENT  # remembered, no rehash
    path.write_bytes(b"X" + data[1:])  # same size, other content: only the hash can tell
    st = W.state("parsing_bisenet", wd, verify=True)
    assert st.state == W.BAD and _sha(b"X" + data[1:]) in st.detail
    path.write_bytes(data + b"!")
    st = W.state("parsing_bisenet", wd)
    assert st.state == W.BAD and "size" in st.detail


def test_state_without_known_checksum_is_unverified(tmp_path: Path) -> None:
    path = W.weight_path("ghost_arcface", str(tmp_path))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert W.state("ghost_arcface", str(tmp_path)).state == W.UNVERIFIED


# ---- download ---------------------------------------------------------------------------

def test_download_whole_file_verifies_and_moves_into_place(tmp_path: Path) -> None:
    served = Served(files={"/w.pth": PAYLOAD})
    dest = tmp_path / "w.pth"
    with file_server(served) as base:
        digest = F.download_file(f"{base}/w.pth", dest, size=len(PAYLOAD), sha256=_sha(PAYLOAD), label="w")
    assert digest == _sha(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "w.pth.part").exists()
    assert served.requests == [{"path": "/w.pth", "range": ""}]


def test_download_resumes_from_part_with_a_range_request(tmp_path: Path) -> None:
    served = Served(files={"/w.pth": PAYLOAD})
    dest = tmp_path / "w.pth"
    (tmp_path / "w.pth.part").write_bytes(PAYLOAD[:300_000])
    with file_server(served) as base:
        F.download_file(f"{base}/w.pth", dest, size=len(PAYLOAD), sha256=_sha(PAYLOAD), label="w")
    assert served.requests[-1]["range"] == "bytes=300000-"
    assert dest.read_bytes() == PAYLOAD


def test_download_restarts_when_the_server_ignores_range(tmp_path: Path) -> None:
    served = Served(files={"/w.pth": PAYLOAD}, ignore_range=True)
    dest = tmp_path / "w.pth"
    (tmp_path / "w.pth.part").write_bytes(PAYLOAD[:1000])
    with file_server(served) as base:
        F.download_file(f"{base}/w.pth", dest, size=len(PAYLOAD), sha256=_sha(PAYLOAD), label="w")
    assert dest.read_bytes() == PAYLOAD  # not the first 1000 bytes twice


def test_interrupted_download_keeps_part_and_next_call_resumes(tmp_path: Path) -> None:
    served = Served(files={"/w.pth": PAYLOAD}, cut_after=200_000)
    dest = tmp_path / "w.pth"
    part = tmp_path / "w.pth.part"
    with file_server(served) as base:
        with pytest.raises(F.DownloadError, match="resumes"):
            F.download_file(f"{base}/w.pth", dest, size=len(PAYLOAD), sha256=_sha(PAYLOAD), label="w")
        assert not dest.exists()
        kept = part.stat().st_size
        assert 0 < kept < len(PAYLOAD) and part.read_bytes() == PAYLOAD[:kept]
        served.cut_after = None
        F.download_file(f"{base}/w.pth", dest, size=len(PAYLOAD), sha256=_sha(PAYLOAD), label="w")
    assert served.requests[-1]["range"] == f"bytes={kept}-"
    assert dest.read_bytes() == PAYLOAD


def test_cut_off_download_of_unknown_size_is_not_taken_as_complete(tmp_path: Path) -> None:
    served = Served(files={"/g.pth": PAYLOAD}, cut_after=500_000)
    dest = tmp_path / "g.pth"
    with file_server(served) as base:
        with pytest.raises(F.DownloadError, match="resumes"):
            F.download_file(f"{base}/g.pth", dest, size=None, sha256=None, label="g")
        assert not dest.exists()
        served.cut_after = None
        F.download_file(f"{base}/g.pth", dest, size=None, sha256=None, label="g")
    assert served.requests[-1]["range"] == "bytes=500000-"
    assert dest.read_bytes() == PAYLOAD


def test_resume_follows_redirects_like_github_releases(tmp_path: Path) -> None:
    served = Served(files={"/objects/w.pth": PAYLOAD}, redirects={"/releases/w.pth": "/objects/w.pth"})
    dest = tmp_path / "w.pth"
    (tmp_path / "w.pth.part").write_bytes(PAYLOAD[:4096])
    with file_server(served) as base:
        F.download_file(f"{base}/releases/w.pth", dest, size=len(PAYLOAD), sha256=_sha(PAYLOAD), label="w")
    assert [r["range"] for r in served.requests] == ["bytes=4096-", "bytes=4096-"]
    assert dest.read_bytes() == PAYLOAD


def test_checksum_bad_download_is_deleted_not_installed(tmp_path: Path) -> None:
    corrupt = b"Z" + PAYLOAD[1:]
    served = Served(files={"/w.pth": corrupt})
    dest = tmp_path / "w.pth"
    with file_server(served) as base, pytest.raises(F.DownloadError) as err:
        F.download_file(f"{base}/w.pth", dest, size=len(PAYLOAD), sha256=_sha(PAYLOAD), label="w")
    assert "checksum bad" in str(err.value) and _sha(corrupt) in str(err.value)
    assert not dest.exists() and not (tmp_path / "w.pth.part").exists()


def test_whole_part_is_verified_without_downloading_again(tmp_path: Path) -> None:
    served = Served(files={"/w.pth": PAYLOAD})
    dest = tmp_path / "w.pth"
    (tmp_path / "w.pth.part").write_bytes(PAYLOAD)
    with file_server(served) as base:
        F.download_file(f"{base}/w.pth", dest, size=len(PAYLOAD), sha256=_sha(PAYLOAD), label="w")
    assert served.requests == [] and dest.read_bytes() == PAYLOAD


# ---- fetch (registry level) -------------------------------------------------------------

def _pack_zip(nested: bool) -> bytes:
    buf = io.BytesIO()
    prefix = "antelopev2/" if nested else ""
    with zipfile.ZipFile(buf, "w") as zf:
        for member in (*W.REGISTRY["antelopev2"].members, "genderage.onnx"):
            zf.writestr(prefix + member, f"onnx {member}".encode())
    return buf.getvalue()


def test_fetch_file_records_verification(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    served = Served(files={"/codeformer.pth": PAYLOAD})
    with file_server(served) as base:
        _register(monkeypatch, "codeformer", url=f"{base}/codeformer.pth", size=len(PAYLOAD), sha256=_sha(PAYLOAD))
        [path] = F.fetch(["codeformer"], str(tmp_path))
        assert path.read_bytes() == PAYLOAD
        assert W.state("codeformer", str(tmp_path)).state == W.PRESENT  # remembered without rehash
        F.fetch(["codeformer"], str(tmp_path))  # already present: no second request
    assert len(served.requests) == 1


def test_fetch_replaces_a_bad_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    served = Served(files={"/codeformer.pth": PAYLOAD})
    path = W.weight_path("codeformer", str(tmp_path))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"Z" + PAYLOAD[1:])
    with file_server(served) as base:
        _register(monkeypatch, "codeformer", url=f"{base}/codeformer.pth", size=len(PAYLOAD), sha256=_sha(PAYLOAD))
        F.fetch(["codeformer"], str(tmp_path))
    assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("nested", [False, True])
def test_fetch_zip_unpacks_either_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, nested: bool) -> None:
    blob = _pack_zip(nested)
    served = Served(files={"/antelopev2.zip": blob})
    with file_server(served) as base:
        _register(monkeypatch, "antelopev2", url=f"{base}/antelopev2.zip", size=len(blob), sha256=_sha(blob))
        [folder] = F.fetch(["antelopev2"], str(tmp_path))
    assert folder == tmp_path / "insightface" / "models" / "antelopev2"
    assert (folder / "scrfd_10g_bnkps.onnx").read_bytes() == b"onnx scrfd_10g_bnkps.onnx"
    assert (folder / "genderage.onnx").exists()
    assert not W.download_path("antelopev2", str(tmp_path)).exists()  # zip removed after unpacking
    assert W.require("antelopev2", str(tmp_path)) == folder


def test_zip_with_unsafe_paths_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.onnx", b"x")
    blob = buf.getvalue()
    with file_server(Served(files={"/a.zip": blob})) as base:
        _register(monkeypatch, "antelopev2", url=f"{base}/a.zip", size=len(blob), sha256=_sha(blob))
        with pytest.raises(MissingWeightError, match="unsafe path"):
            F.fetch(["antelopev2"], str(tmp_path))
    assert not (tmp_path / "insightface" / "evil.onnx").exists()


def test_offline_fetch_fails_fast_naming_file_url_and_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port = closed_port()
    for name in ("codeformer", "gfpgan_v1.4", "antelopev2"):
        spec = W.REGISTRY[name]
        _register(monkeypatch, name, url=f"http://127.0.0.1:{port}/{spec.filename}")
    start = time.monotonic()
    with pytest.raises(MissingWeightError) as err:
        F.fetch(["codeformer", "gfpgan_v1.4", "antelopev2"], str(tmp_path))
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "could not fetch 3" in msg and "cannot reach 127.0.0.1" in msg
    for name in ("codeformer", "gfpgan_v1.4"):
        spec = W.REGISTRY[name]
        assert spec.filename in msg and spec.url in msg
        assert str(W.weight_path(name, str(tmp_path))) in msg
    assert str(W.weight_path("antelopev2", str(tmp_path)) / "scrfd_10g_bnkps.onnx") in msg


def test_cli_offline_fetch_exits_nonzero(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    _register(monkeypatch, "codeformer", url=f"http://127.0.0.1:{closed_port()}/codeformer.pth")
    rc = launch.main(["weights", "--fetch", "codeformer", "--weights-dir", str(tmp_path)])
    assert rc != 0
    assert "codeformer.pth" in capsys.readouterr().err


def test_cli_list_shows_every_entry_with_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = W.weight_path("ghost_arcface", str(tmp_path))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert launch.main(["weights", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name, spec in W.REGISTRY.items():
        assert name in out and W.page_url(spec) in out
    assert re.search(r"ghost_arcface present \(unverified\)", out)
    assert re.search(r"codeformer missing", out)
    assert "376,637,898 B" in out


def test_needed_for_follows_the_config() -> None:
    from builder.config import Config

    cfg = Config()
    assert set(needed_for(cfg)) == {
        "ghost_unet_2blocks", "ghost_arcface", "antelopev2", "codeformer", "parsing_bisenet", "blip_large",
        "clip_bpe", "epicrealism", "modnet",
    }
    cfg.dataset.masks = False  # the loss masks' segmenter is needed only with masks on
    assert "modnet" not in needed_for(cfg)
    cfg.paths.base_model = "/models/my_sd15.safetensors"  # the user's own base model: no download
    assert "epicrealism" not in needed_for(cfg)
    cfg.swap.restorer, cfg.faces.insightface_pack, cfg.caption.backend = "gfpgan", "buffalo_l", "none"
    assert {"gfpgan_v1.4", "buffalo_l"} <= set(needed_for(cfg)) and "blip_large" not in needed_for(cfg)
    cfg.caption.backend, cfg.caption.model = "blip", "blip_large"  # a registry name, as blip.py accepts
    assert "blip_large" in needed_for(cfg)
    cfg.runtime.random_weights = True
    assert needed_for(cfg) == ["clip_bpe"]  # the tokenizer is data: random-weight runs read it too


def _fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: tuple[str, ...]) -> list[tuple]:
    """Stand-ins for the hub's download calls that write the cache layout they would."""
    import huggingface_hub
    from huggingface_hub import constants

    calls: list[tuple] = []
    repo_dir = tmp_path / "hub" / "models--Salesforce--blip-image-captioning-large"
    snap = repo_dir / "snapshots" / "0123abcd"

    def snapshot_download(repo_id: str, allow_patterns: list[str]) -> str:
        calls.append(("snapshot", repo_id, tuple(allow_patterns)))
        snap.mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / "main").write_text("0123abcd")
        for f in files:
            (snap / f).write_text("x")
        return str(snap)

    def hf_hub_download(repo_id: str, filename: str) -> str:
        calls.append(("file", repo_id, filename))
        (snap / filename).write_text("x")
        return str(snap / filename)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(F.HostProbe, "error", lambda self, url: None)
    return calls


def test_fetch_hub_repo_gets_json_and_safetensors_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _fake_hub(monkeypatch, tmp_path, ("config.json", "model.safetensors"))
    [snap] = F.fetch(["blip_large"], str(tmp_path))
    assert snap == W.require("blip_large", str(tmp_path))
    assert calls == [("snapshot", "Salesforce/blip-image-captioning-large", tuple(W.HF_ALLOW))]


def test_fetch_hub_repo_without_safetensors_gets_the_pickle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _fake_hub(monkeypatch, tmp_path, ("config.json",))
    [snap] = F.fetch(["blip_large"], str(tmp_path))
    assert (snap / "pytorch_model.bin").exists()
    assert calls[-1] == ("file", "Salesforce/blip-image-captioning-large", "pytorch_model.bin")


def test_offline_hub_fetch_fails_fast_with_by_hand_steps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    with pytest.raises(MissingWeightError) as err:
        F.fetch(["blip_large"], str(tmp_path))
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "cannot reach 127.0.0.1" in msg
    assert "huggingface-cli download Salesforce/blip-image-captioning-large" in msg
    assert "https://huggingface.co/Salesforce/blip-image-captioning-large" in msg


def test_zip_put_there_by_hand_is_verified_and_unpacked_offline(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    blob = _pack_zip(nested=True)
    _register(monkeypatch, "antelopev2", url=f"http://127.0.0.1:{closed_port()}/antelopev2.zip",
              size=len(blob), sha256=_sha(blob))
    zip_path = W.download_path("antelopev2", str(tmp_path))
    zip_path.parent.mkdir(parents=True)
    zip_path.write_bytes(blob)
    [folder] = F.fetch(["antelopev2"], str(tmp_path))
    assert (folder / "glintr100.onnx").is_file() and not zip_path.exists()
    zip_path.write_bytes(b"not the zip")  # a bad hand-placed zip is refused, not unpacked
    shutil.rmtree(folder)
    with pytest.raises(MissingWeightError, match="checksum bad"):
        F.fetch(["antelopev2"], str(tmp_path))


# ---- mirrors and FaceFusion's CRC32 .hash (ONNX swappers) ------------------------------

FF_SWAPPERS = {
    "inswapper_128": "models-3.0.0", "hyperswap_1a_256": "models-3.3.0", "hyperswap_1b_256": "models-3.3.0",
    "hyperswap_1c_256": "models-3.3.0", "simswap_256": "models-3.0.0", "crossface_simswap": "models-3.4.0",
}


def _crc(data: bytes) -> bytes:
    return f"{zlib.crc32(data):08x}".encode()


def test_facefusion_assets_follow_its_url_pattern_with_the_hub_mirror() -> None:
    for name, base in FF_SWAPPERS.items():
        spec = W.REGISTRY[name]
        assert spec.url == f"https://github.com/facefusion/facefusion-assets/releases/download/{base}/{name}.onnx"
        assert spec.mirrors == (f"https://huggingface.co/facefusion/{base}/resolve/main/{name}.onnx",)
        assert spec.crc32_file == f"{name}.hash" and spec.crc32 is None
    assert "non-commercial" in W.REGISTRY["inswapper_128"].license
    assert "non-commercial" in W.REGISTRY["simswap_256"].license
    assert "ResearchRAIL" in W.REGISTRY["hyperswap_1a_256"].license


def test_bad_crc32_at_the_first_url_falls_back_to_the_mirror(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    served = Served(files={
        "/gh/inswapper_128.onnx": b"Z" + PAYLOAD[1:],  # damaged on the first host
        "/gh/inswapper_128.hash": _crc(PAYLOAD),
        "/hf/inswapper_128.onnx": PAYLOAD,
        "/hf/inswapper_128.hash": _crc(PAYLOAD) + b"\n",
    })
    with file_server(served) as base:
        _register(monkeypatch, "inswapper_128", url=f"{base}/gh/inswapper_128.onnx",
                  mirrors=(f"{base}/hf/inswapper_128.onnx",), size=len(PAYLOAD), sha256=None)
        [path] = F.fetch(["inswapper_128"], str(tmp_path))
    assert path.read_bytes() == PAYLOAD
    assert [r["path"] for r in served.requests] == [
        "/gh/inswapper_128.hash", "/gh/inswapper_128.onnx", "/hf/inswapper_128.hash", "/hf/inswapper_128.onnx",
    ]
    assert not path.with_name(path.name + ".part").exists()


def test_crc32_mismatch_everywhere_installs_nothing_and_says_why(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    served = Served(files={"/gh/simswap_256.onnx": PAYLOAD, "/gh/simswap_256.hash": b"00000000",
                           "/hf/simswap_256.onnx": PAYLOAD, "/hf/simswap_256.hash": b"not-hex!"})
    with file_server(served) as base:
        _register(monkeypatch, "simswap_256", url=f"{base}/gh/simswap_256.onnx",
                  mirrors=(f"{base}/hf/simswap_256.onnx",))
        with pytest.raises(MissingWeightError) as err:
            F.fetch(["simswap_256"], str(tmp_path))
    msg = str(err.value)
    assert f"CRC32 {_crc(PAYLOAD).decode()}, expected 00000000" in msg
    assert "/hf/simswap_256.hash: not a CRC32 hash file" in msg
    assert f"mirror: {base}/hf/simswap_256.onnx" in msg
    assert not W.weight_path("simswap_256", str(tmp_path)).exists()
    assert not list(W.weight_path("simswap_256", str(tmp_path)).parent.glob("*.part"))


def test_known_crc32_needs_no_hash_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    served = Served(files={"/crossface_simswap.onnx": PAYLOAD})
    with file_server(served) as base:
        _register(monkeypatch, "crossface_simswap", url=f"{base}/crossface_simswap.onnx", mirrors=(),
                  crc32=_crc(PAYLOAD).decode())
        [path] = F.fetch(["crossface_simswap"], str(tmp_path))
    assert path.read_bytes() == PAYLOAD and [r["path"] for r in served.requests] == ["/crossface_simswap.onnx"]
