import re

import pytest
import torch

from amodalize.errors import InputError
from amodalize.models.pcnet_m import pack_input, reference_state_dict
from amodalize.models.unet import UNet, fold_batchnorm, freeze_for_cpu


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_the_reference():
    assert n_params(UNet(2, 2, widen=2)) == 3_352_002
    assert n_params(UNet(2, 2, widen=1)) == 839_650


def test_output_shape_and_rgb_channels():
    model = UNet(5, 2, widen=0.25).eval()
    assert model(torch.zeros(3, 5, 48, 48)).shape == (3, 2, 48, 48)


def test_pack_input_erases_and_scales_by_category():
    modal = torch.tensor([[[1, 1], [1, 0]]])
    eraser = torch.tensor([[[0, 1], [0, 0]]])
    x = pack_input(modal, eraser, torch.tensor([3.0]))
    assert x.shape == (1, 2, 2, 2)
    assert x[0, 0].tolist() == [[3, 0], [3, 0]] and x[0, 1].tolist() == [[0, 1], [0, 0]]


def to_reference(name: str) -> str:
    """Our key -> the reference repository's (classic UNet parts), the inverse of the import."""
    name = re.sub(r"^inc\.", "inc.conv.conv.", name)
    name = re.sub(r"^(down\d)\.1\.", r"\1.mpconv.1.conv.", name)
    name = re.sub(r"^(up\d)\.conv\.", r"\1.conv.conv.", name)
    name = re.sub(r"^outc\.", "outc.conv.", name)
    return "module." + name


def test_reference_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    source = UNet(2, 2, widen=0.25)
    path = tmp_path / "COCOA_pcnet_m.pth.tar"
    torch.save({"step": 5, "state_dict": {to_reference(k): v for k, v in source.state_dict().items()}}, path)
    target = UNet(2, 2, widen=0.25)
    target.load_state_dict(reference_state_dict(path, target))
    for k, v in source.state_dict().items():
        assert torch.equal(v, target.state_dict()[k])


def test_reference_checkpoint_shape_and_key_checks(tmp_path):
    small = UNet(2, 2, widen=0.25)
    path = tmp_path / "x.pth.tar"
    torch.save({"state_dict": {to_reference(k): v for k, v in small.state_dict().items()}}, path)
    with pytest.raises(InputError, match="shape"):
        reference_state_dict(path, UNet(2, 2, widen=0.5))
    state = {to_reference(k): v for k, v in small.state_dict().items()}
    state.pop("module.outc.conv.bias")
    torch.save({"state_dict": state}, path)
    with pytest.raises(InputError, match="missing"):
        reference_state_dict(path, small)
    path.write_text("not a checkpoint")
    with pytest.raises(InputError, match="not a loadable"):
        reference_state_dict(path, small)


def test_folded_and_frozen_model_gives_the_eager_outputs():
    torch.manual_seed(0)
    model = UNet(2, 2, widen=0.25)
    with torch.no_grad():  # BatchNorm statistics other than the identity, so that folding them shows
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.rand(3, 2, 32, 32)
    with torch.no_grad():
        eager = model(x)
        frozen = freeze_for_cpu(fold_batchnorm(model), 32)(x.contiguous(memory_format=torch.channels_last))
    assert frozen.shape == eager.shape
    torch.testing.assert_close(frozen, eager, rtol=1e-4, atol=1e-4)
