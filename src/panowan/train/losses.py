"""Training losses of one stream. Each returns a scalar; the trainer weights and logs each separately.

Shapes: latents `B,z,T,h,w` (h rows of the ERP latent grid, w columns; columns wrap), packed masks
`B,4,T,h,w` (1 = known), decoded video `B,3,F,H,W`.

ERP latitude weighting (optional everywhere, `latitude=True`): an ERP row at latitude theta covers a
solid angle proportional to cos(theta), so a latitude-weighted loss is the loss per unit of sphere
instead of per pixel (the poles are no longer over-counted). Weights are `geometry.erp.latitude_weights`
of the grid at hand (latent rows, pooled rows or pixel rows), and every weighted mean divides by the
sum of the weights it used, so with all weights equal it reduces to the plain mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from panowan.geometry.erp import latitude_weights


def _row_weights(height: int, latitude: bool, like: torch.Tensor) -> torch.Tensor:
    """`w_H`: cos(latitude) of each row centre, or ones."""
    if not latitude:
        return torch.ones(height, dtype=like.dtype, device=like.device)
    return latitude_weights(height, dtype=like.dtype, device=like.device)


def flow_matching_loss(
    pred_BzThw: torch.Tensor,
    target_BzThw: torch.Tensor,
    sample_weight_B: torch.Tensor,
    *,
    known_B4Thw: torch.Tensor | None = None,
    hole_weight: float = 0.0,
    valid_B4Thw: torch.Tensor | None = None,
    latitude: bool = False,
) -> torch.Tensor:
    """Weighted flow-matching MSE between predicted and target velocity.

    Per sample b: `sum_e w_e (pred_e - target_e)^2 / sum_e l_e`, where `l_e` is the latitude weight of
    element e's row (1 without latitude weighting) and
    `w_e = l_e * (1 + hole_weight * (1 - known)) * valid`:
    - `known` is the fraction of known pixels behind the latent position (mean over the 4 packed-mask
      channels, which are the 4 pixel frames of the latent frame), so fully unknown positions weigh
      `1 + hole_weight` and known ones 1;
    - `valid` (optional, depth) is the fraction of valid ground-truth pixels there; positions without
      any ground truth do not count.
    The batch loss is the mean over b of `sample_weight_b * loss_b` (SD3 loss weighting).
    """
    if pred_BzThw.shape != target_BzThw.shape or pred_BzThw.dim() != 5:
        raise ValueError(
            f"prediction {tuple(pred_BzThw.shape)} and target {tuple(target_BzThw.shape)} must be equal B,z,T,h,w"
        )
    err = (pred_BzThw.float() - target_BzThw.float()) ** 2
    lat = _row_weights(err.shape[-2], latitude, err).view(1, 1, 1, -1, 1)
    weight = lat.expand(err.shape[0], 1, *err.shape[2:])
    if known_B4Thw is not None and hole_weight:
        weight = weight * (1 + hole_weight * (1 - known_B4Thw.float().mean(dim=1, keepdim=True)))
    if valid_B4Thw is not None:
        weight = weight * valid_B4Thw.float().mean(dim=1, keepdim=True)
    per_sample = (weight * err).sum(dim=(1, 2, 3, 4)) / (lat.sum() * err[0].numel() / err.shape[-2])
    return (sample_weight_B.to(per_sample) * per_sample).mean()


def _patch_features(x_BzThw: torch.Tensor, pool: int) -> torch.Tensor:
    """`B,z,T,h,w` -> `(B*T), N, z` patch features (average-pooled `pool` x `pool` patches, N = h/pool * w/pool)."""
    b, z, t, h, w = x_BzThw.shape
    if h % pool or w % pool:
        raise ValueError(f"latent grid {h}x{w} is not divisible by the structural patch size {pool}")
    frames = x_BzThw.float().transpose(1, 2).reshape(b * t, z, h, w)
    pooled = F.avg_pool2d(frames, pool) if pool > 1 else frames
    return pooled.flatten(2).transpose(1, 2)  # (B*T), N, z


def self_similarity(features_BNz: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between every pair of patches, `B,N,N`: each patch's feature vector is centred
    over channels and normalised, i.e. the Pearson correlation of two patches' latent channels."""
    f = features_BNz - features_BNz.mean(dim=-1, keepdim=True)
    f = F.normalize(f, dim=-1, eps=1e-6)
    return f @ f.transpose(1, 2)


def structural_consistency_loss(
    x0_pred_BzThw: torch.Tensor, x0_target_BzThw: torch.Tensor, *, pool: int = 2, latitude: bool = False
) -> torch.Tensor:
    """Latent structural consistency: per latent frame, the patch-level self-similarity (correlation)
    matrix of the predicted x0 must match the target's.

    `S[i, j]` = correlation of pooled patches i and j (`self_similarity`); the loss is the mean over
    frames of `sum_ij a_i a_j (S_pred - S_gt)_ij^2 / sum_ij a_i a_j` with `a_i` the latitude weight of
    patch i's row (1 without latitude weighting). It constrains which regions look alike (layout,
    walls vs furniture) independent of absolute intensity, which the per-position MSE does not see.
    """
    if x0_pred_BzThw.shape != x0_target_BzThw.shape:
        raise ValueError(
            f"x0 prediction {tuple(x0_pred_BzThw.shape)} and target {tuple(x0_target_BzThw.shape)} differ"
        )
    s_pred = self_similarity(_patch_features(x0_pred_BzThw, pool))
    s_gt = self_similarity(_patch_features(x0_target_BzThw, pool))
    h, w = x0_pred_BzThw.shape[-2] // pool, x0_pred_BzThw.shape[-1] // pool
    a = _row_weights(h, latitude, s_pred)[:, None].expand(h, w).reshape(-1)  # N, row-major like flatten
    pair = a[:, None] * a[None, :]
    return ((s_pred - s_gt) ** 2 * pair).sum(dim=(1, 2)).mean() / pair.sum()


def frame_statistics(x_BzThw: torch.Tensor, *, latitude: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of every latent channel of every latent frame over its h x w grid, `B,z,T` each,
    latitude-weighted when asked (weighted mean and weighted population std)."""
    x = x_BzThw.float()
    a = _row_weights(x.shape[-2], latitude, x).view(-1, 1).expand(x.shape[-2], x.shape[-1])
    a = a / a.sum()
    mean = (x * a).sum(dim=(-2, -1))
    var = ((x - mean[..., None, None]) ** 2 * a).sum(dim=(-2, -1))
    return mean, torch.sqrt(var + 1e-8)


def global_consistency_loss(
    x0_pred_BzThw: torch.Tensor, x0_target_BzThw: torch.Tensor, *, latitude: bool = False
) -> torch.Tensor:
    """Latent global consistency: the per-frame channel statistics of the predicted x0 must match the
    target's: `mean_{b,c,t} [(mu_pred - mu_gt)^2 + (sd_pred - sd_gt)^2]` with (mu, sd) from
    `frame_statistics`.

    Why this definition: the views of one room share exposure, white balance and (after the room's
    single depth normalisation) depth scale; a view that drifts in global colour or depth level is the
    most visible cross-view inconsistency, yet it hides in a per-position MSE as a small error spread
    over every position, and at high noise the per-position target is mostly unpredictable anyway.
    Frame-level first and second moments pin exactly those global quantities per view, cost O(z T),
    and, because every view is matched to its own ground truth, the views agree with each other too.
    """
    if x0_pred_BzThw.shape != x0_target_BzThw.shape:
        raise ValueError(
            f"x0 prediction {tuple(x0_pred_BzThw.shape)} and target {tuple(x0_target_BzThw.shape)} differ"
        )
    mu_p, sd_p = frame_statistics(x0_pred_BzThw, latitude=latitude)
    mu_g, sd_g = frame_statistics(x0_target_BzThw, latitude=latitude)
    return ((mu_p - mu_g) ** 2 + (sd_p - sd_g) ** 2).mean()


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=like.dtype, device=like.device)


def ssim_map(
    x_NCHW: torch.Tensor,
    y_NCHW: torch.Tensor,
    *,
    data_range: float = 2.0,
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """SSIM map (Wang et al. 2004; Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, population
    covariances), 'valid' region only: `N,C,H-window+1,W-window+1`. Matches
    `skimage.metrics.structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)`,
    whose mean also ignores the border."""
    if x_NCHW.shape != y_NCHW.shape or x_NCHW.dim() != 4:
        raise ValueError(
            f"SSIM needs two N,C,H,W images of one shape; got {tuple(x_NCHW.shape)}, {tuple(y_NCHW.shape)}"
        )
    if min(x_NCHW.shape[-2:]) < window:
        raise ValueError(f"SSIM images {tuple(x_NCHW.shape[-2:])} are smaller than the {window}-pixel window")
    c = x_NCHW.shape[1]
    g = _gaussian_window(window, sigma, x_NCHW)
    kh = g.view(1, 1, window, 1).expand(c, 1, window, 1)
    kw = g.view(1, 1, 1, window).expand(c, 1, 1, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x_NCHW), blur(y_NCHW)
    vx = blur(x_NCHW * x_NCHW) - mx * mx
    vy = blur(y_NCHW * y_NCHW) - my * my
    cov = blur(x_NCHW * y_NCHW) - mx * my
    return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim_loss(
    x_NCHW: torch.Tensor,
    y_NCHW: torch.Tensor,
    *,
    row_weights_H: torch.Tensor | None = None,
    data_range: float = 2.0,
    window: int = 11,
) -> torch.Tensor:
    """`1 - mean SSIM`; with `row_weights_H` (one weight per image row, e.g. cos latitude) the mean over
    the valid map is weighted by the weight of each map row's centre image row."""
    m = ssim_map(x_NCHW.float(), y_NCHW.float(), data_range=data_range, window=window)
    if row_weights_H is None:
        return 1 - m.mean()
    pad = (window - 1) // 2
    rows = row_weights_H.to(m)[pad : pad + m.shape[-2]].view(-1, 1)
    return 1 - (m * rows).sum(dim=(-2, -1)).mean() / (rows.sum() * m.shape[-1])


def decode_crop(
    codec,
    latents_BzThw: torch.Tensor,
    *,
    latent_frames: int,
    rows: tuple[int, int],
    col_offset: int,
    cols: int,
    checkpoint: bool,
) -> torch.Tensor:
    """Decode a budgeted piece of a latent video: the first `latent_frames` latent frames (the codec is
    causal in time, so a prefix decodes as it would inside the full video), latent rows
    `rows[0]:rows[1]` and `cols` columns from `col_offset` (wrapping over the ERP seam). `checkpoint`
    recomputes the decoder's activations in backward instead of storing them."""
    x = latents_BzThw[:, :, :latent_frames, rows[0] : rows[1]]
    x = torch.roll(x, -col_offset, dims=-1)[..., :cols]
    if checkpoint and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(codec.decode, x, use_reentrant=False)
    return codec.decode(x)


def decoded_ssim_loss(
    codec,
    x0_pred_BzThw: torch.Tensor,
    x0_target_BzThw: torch.Tensor,
    *,
    depth: bool,
    latent_frames: int = 2,
    crop_hw: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
    latitude: bool = False,
    checkpoint: bool = True,
) -> torch.Tensor:
    """SSIM loss between the decoded x0 prediction and the decoded target latents, on a budget.

    Both sides go through the same frozen codec, so the loss measures the model's error and not the
    codec's reconstruction error. Budget: the first `latent_frames` latent frames (1 + 4 (k - 1) pixel
    frames) and, if `crop_hw` = (rows, cols) in latent cells is given, a crop at a random offset
    (`generator`; columns wrap over the seam, rows stay inside the panorama). Depth streams compare the
    channel mean of the decoded grey video. Pixel rows keep their true latitude for the weighting.
    """
    _, _, t, h, w = x0_pred_BzThw.shape
    k = max(1, min(latent_frames, t))
    ch, cw = (h, w) if crop_hw is None else (min(crop_hw[0], h), min(crop_hw[1], w))
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    r0 = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    c0 = int(torch.randint(0, w, (1,), generator=gen)) if cw < w else 0
    kwargs = {
        "latent_frames": k,
        "rows": (r0, r0 + ch),
        "col_offset": c0,
        "cols": cw,
        "checkpoint": checkpoint,
    }
    pred = decode_crop(codec, x0_pred_BzThw, **kwargs)
    with torch.no_grad():
        target = decode_crop(codec, x0_target_BzThw, **{**kwargs, "checkpoint": False})
    if depth:
        pred, target = pred.mean(dim=1, keepdim=True), target.mean(dim=1, keepdim=True)
    b, c, f, hh, ww = pred.shape
    scale = hh // ch  # pixels per latent row
    weights = None
    if latitude:
        weights = latitude_weights(h * scale, dtype=torch.float32, device=pred.device)[
            r0 * scale : r0 * scale + hh
        ]
    flat = lambda v: v.transpose(1, 2).reshape(b * f, c, hh, ww)  # noqa: E731
    return ssim_loss(flat(pred), flat(target), row_weights_H=weights)
