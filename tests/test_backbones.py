import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from skpatch._backbones import WeightsUnavailableError, build_backbone, efficientnet_lite0_state_dict

# ImageNet-1k class indices.
CAT_CLASSES = {281, 282, 283, 285}  # tabby, tiger cat, Persian cat, Egyptian cat
ESPRESSO_CLASSES = {967, 968}  # espresso, cup


def _top_class(model, image):
    x = torch.from_numpy(image[..., :3]).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
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
