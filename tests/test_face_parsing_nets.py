"""Our BiSeNet and ParseNet against facexlib 0.3.0's (a test-only dependency), same random weights."""

from __future__ import annotations

import pytest
import torch

from builder.models.face_parsing import BiSeNet, ParseNet

facexlib_bisenet = pytest.importorskip("facexlib.parsing.bisenet")
facexlib_parsenet = pytest.importorskip("facexlib.parsing.parsenet")


def _randomise(net: torch.nn.Module, seed: int) -> None:
    """Every parameter and BatchNorm statistic random, so an unused or misplaced one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                values = torch.rand(t.shape, generator=g) + 0.5 if "running_var" in name else torch.randn(t.shape, generator=g) * 0.1
                t.copy_(values)


@pytest.mark.parametrize("kind", ["bisenet", "parsenet"])
def test_same_weights_same_logits_as_facexlib(kind):
    if kind == "bisenet":
        theirs, ours, size = facexlib_bisenet.BiSeNet(num_class=19), BiSeNet(19), 128
    else:
        theirs, ours, size = facexlib_parsenet.ParseNet(in_size=128, out_size=128, parsing_ch=19), ParseNet(128, 128, 19), 128
    _randomise(theirs, 3)
    assert list(ours.state_dict()) == list(theirs.state_dict())  # the release checkpoints load strictly
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = theirs.eval()(x)[0]
        got = ours.eval()(x)
    assert got.shape == want.shape == (2, 19, size, size)
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


def test_parsenet_at_512_has_facexlib_layout():
    theirs = facexlib_parsenet.ParseNet(in_size=512, out_size=512, parsing_ch=19)
    ours = ParseNet(512, 512, 19)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
