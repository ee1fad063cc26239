"""PluckerNet: features aligned with Wan's tokens, local receptive field, wrapped seam."""

from __future__ import annotations

import torch

from panowan.models.plucker_net import PluckerNet
from panowan.models.replicas import random_plucker


def _token_change(net, base, perturbed, grid):
    with torch.no_grad():
        diff = (net(perturbed) - net(base)).abs().amax(dim=-1)  # B,S
    return diff[0].reshape(grid)  # T, H/16, W/16


def _circular_distance(a: torch.Tensor, b: int, n: int) -> torch.Tensor:
    d = (a - b).abs()
    return torch.minimum(d, n - d)


def test_output_shape_and_token_order():
    torch.manual_seed(0)
    net = PluckerNet(pose_dim=8, hidden=8)
    x = random_plucker(2, 9, 64, 128, torch.Generator().manual_seed(0))
    out = net(x)
    assert out.shape == (2, 3 * 4 * 8, 8)


def test_change_in_one_patch_stays_in_its_neighbourhood():
    torch.manual_seed(1)
    net = PluckerNet(pose_dim=8, hidden=8)
    frames, height, width = 13, 128, 256  # T = 4, token grid 8 x 16
    grid = (4, 8, 16)
    base = random_plucker(1, frames, height, width, torch.Generator().manual_seed(1))
    t, i, j = 3, 4, 7
    perturbed = base.clone()
    perturbed[:, :, 4 * t - 3 : 4 * t + 1, 16 * i : 16 * i + 16, 16 * j : 16 * j + 16] += 0.5
    change = _token_change(net, base, perturbed, grid)
    assert change[t, i, j] > 0
    tt, ii, jj = torch.meshgrid(torch.arange(4), torch.arange(8), torch.arange(16), indexing="ij")
    outside = ((tt - t).abs() > 1) | ((ii - i).abs() > 2) | ((jj - j).abs() > 2)
    assert change[outside].max().item() == 0.0
    # Changing pixel frame 4t-3+c (one slot of latent frame t) is seen by latent frame t, not t-2.
    only_frame = base.clone()
    only_frame[:, :, 4 * 2 - 3 + 2, 16 * i : 16 * i + 16, 16 * j : 16 * j + 16] -= 0.5
    change = _token_change(net, base, only_frame, grid)
    assert change[2, i, j] > 0 and change[0].max().item() == 0.0


def test_seam_columns_are_neighbours():
    torch.manual_seed(2)
    net = PluckerNet(pose_dim=8, hidden=8)
    grid = (2, 4, 8)
    base = random_plucker(1, 5, 64, 128, torch.Generator().manual_seed(2))
    perturbed = base.clone()
    perturbed[..., 16:32, -1] += 1.0  # only pixel column u = W - 1
    change = _token_change(net, base, perturbed, grid)
    # Token column 0 sees u = W-1 through the wrapped padding; the middle columns see nothing.
    assert change[:, :, 0].max() > 0
    assert change[:, :, 3:6].max().item() == 0.0
    perturbed = base.clone()
    perturbed[..., 16:32, 0] += 1.0  # only u = 0
    change = _token_change(net, base, perturbed, grid)
    assert change[:, :, -1].max() > 0
