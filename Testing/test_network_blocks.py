"""The plain-torch U-Net blocks load MONAI's weights unchanged and compute what MONAI's blocks compute."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import ChannelSELayer, UnetBasicBlock, UnetOutBlock, UnetResBlock, UnetUpBlock

from MedSegExtension.networks.blocks import BasicBlock, OutBlock, ResidualBlock, SqueezeExcitation, UpBlock

ACT = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})
NORMS = {"instance": ("instance", {"affine": True}), "batch": ("batch", {})}


def _same(ours: torch.nn.Module, theirs: torch.nn.Module, *inputs: torch.Tensor) -> None:
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same keys, same shapes
    with torch.no_grad():
        for parameter in theirs.parameters():  # non-trivial affine norms too
            parameter.add_(torch.randn_like(parameter) * 0.1)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(*inputs), theirs(*inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_blocks_match_monai(norm: str, stride: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 10, 6)
    _same(BasicBlock(3, 5, stride, norm), UnetBasicBlock(3, 3, 5, 3, stride, NORMS[norm], ACT, dropout=0.0), x)
    _same(ResidualBlock(3, 5, stride, norm), UnetResBlock(3, 3, 5, 3, stride, NORMS[norm], ACT, dropout=0.0), x)
    _same(ResidualBlock(3, 3, 1, norm), UnetResBlock(3, 3, 3, 3, 1, NORMS[norm], ACT, dropout=0.0), x)


def test_up_out_and_squeeze_blocks_match_monai() -> None:
    torch.manual_seed(0)
    low, skip = torch.randn(1, 8, 4, 5, 3), torch.randn(1, 4, 8, 10, 6)
    _same(UpBlock(8, 4, "instance"), UnetUpBlock(3, 8, 4, 3, 1, 2, NORMS["instance"], ACT, dropout=0.0), low, skip)
    _same(OutBlock(4, 7), UnetOutBlock(3, 4, 7), skip)
    _same(SqueezeExcitation(8, r=4), ChannelSELayer(3, 8, r=4), low)


def test_predicting_does_not_import_monai() -> None:
    import subprocess
    import sys

    code = ("import sys; from MedSegExtension.inference.pipeline import Segmenter; "
            "from MedSegExtension.networks import build_network; build_network(1, 3); "
            "print(any(m.startswith('monai') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
