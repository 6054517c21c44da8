import pytest
import torch
import torch.nn.functional as F

from amodalize.errors import InputError
from amodalize.models.pcnet_c import (
    PartialConv2d,
    PatchDiscriminator,
    PConvUNet,
    VGG16Features,
    denormalize,
    load_pcnet_c,
    load_vgg16,
    normalize,
    pack_content_input,
)


def test_reference_sizes():
    assert sum(p.numel() for p in PConvUNet().parameters()) == 25_783_023  # reference: ~25.8M
    assert sum(p.numel() for p in PatchDiscriminator().parameters()) == 2_764_800  # reference: ~2.76M
    assert PatchDiscriminator(base=8)(torch.zeros(2, 4, 64, 64)).shape == (2, 1, 6, 6)


def test_partial_conv_sees_only_valid_pixels():
    torch.manual_seed(0)
    conv = PartialConv2d(3, 5, 3)
    x = torch.randn(1, 3, 8, 8)
    valid = torch.ones(1, 1, 8, 8)
    valid[..., 2:7, 2:7] = 0
    y, out_valid = conv([(x, valid)])
    noisy = x + 100 * (1 - valid) * torch.randn_like(x)
    assert torch.equal(conv([(noisy, valid)])[0], y)
    # the output is valid where the 3x3 window touched a valid pixel: the hole shrinks by one
    expected = torch.ones(1, 1, 8, 8)
    expected[..., 3:6, 3:6] = 0
    assert torch.equal(out_valid, expected)
    assert torch.all(y[..., 3:6, 3:6] == 0)
    # where every pixel is valid, it is the plain convolution (interior, away from zero padding)
    plain = F.conv2d(x, conv.conv.weight, conv.conv.bias, padding=1)
    full, _ = conv([(x, torch.ones(1, 1, 8, 8))])
    assert torch.allclose(full[..., 1:-1, 1:-1], plain[..., 1:-1, 1:-1], atol=1e-6)
    # a window half valid is rescaled by window size / valid count
    half = torch.ones(1, 1, 3, 3)
    half[..., :, 2] = 0
    small = PartialConv2d(1, 1, 3, bias=False)
    z = torch.ones(1, 1, 3, 3)
    out, _ = small([(z, half)])
    assert torch.isclose(out[0, 0, 1, 1], small.conv.weight[0, 0, :, :2].sum() * 9 / 6)


def test_generator_output_ignores_hole_content():
    torch.manual_seed(0)
    net = PConvUNet(base=8, depth=4, max_width=32).eval()
    rgb = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    hole = torch.zeros(2, 32, 32)
    hole[:, 8:20, 10:24] = 1
    modal = torch.ones(2, 32, 32)
    x, valid, image = pack_content_input(rgb, hole, modal)
    other = rgb.clone()
    other[:, :, 8:20, 10:24] = 255 - other[:, :, 8:20, 10:24]
    x2, _, image2 = pack_content_input(other, hole, modal)
    assert torch.equal(x, x2) and not torch.equal(image, image2)
    with torch.no_grad():
        assert torch.equal(net(x, valid), net(x2, valid))
    assert net(x, valid).shape == (2, 3, 32, 32)
    assert torch.allclose(denormalize(normalize(rgb.float() / 255)), rgb.float() / 255, atol=1e-6)


def test_vgg_weights_load_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    ref = VGG16Features()
    state = {**ref.state_dict(), "classifier.0.weight": torch.zeros(1)}  # torchvision keeps more keys
    torch.save(state, tmp_path / "vgg16.pth")
    vgg = load_vgg16(tmp_path / "vgg16.pth")
    x = torch.randn(1, 3, 32, 32)
    assert [f.shape[1:] for f in vgg(x)] == [(64, 16, 16), (128, 8, 8), (256, 4, 4)]
    assert all(torch.equal(a, b) for a, b in zip(vgg(x), ref(x)))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="not a VGG16 state dict"):
        load_vgg16(tmp_path / "bad.pth")
    with pytest.raises(InputError, match="not a PCNet-C checkpoint"):
        load_pcnet_c(tmp_path / "vgg16.pth")
