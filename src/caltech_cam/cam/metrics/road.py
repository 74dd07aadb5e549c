"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci, Kasneci, ICML 2022).

Remove a fraction of the pixels, most relevant first (MoRF) or least relevant first (LeRF), fill them by noisy
linear imputation, and track the target-class probability. Imputation and forwards run batched over images ×
fractions on the images' device: every removed pixel is the weighted mean of its 8 neighbours (weights 1/6 for
the 4 edge neighbours, 1/12 for the 4 diagonal ones, renormalized over those inside the image), a sparse
symmetric positive definite system per image and channel, solved by conjugate gradients to a relative residual
`tol`, then `noise` · N(0, 1) is added to each imputed value.

Which pixels go: fraction p removes the k = round(p · H · W) pixels of highest saliency (MoRF) or lowest (LeRF),
ties broken in raster order; p runs over ROAD_FRACTIONS = 0.1, 0.2, …, 0.9. pytorch-grad-cam's
`ROADMostRelevantFirst(percentile=q)` removes the pixels at or above the map's q-th percentile, i.e. the top
(100 − q) %: its default `percentile=80` is our MoRF at p = 0.2. Its `ROADLeastRelevantFirst(percentile=q)` takes
the percentile of 1 − map, so it removes the bottom (100 − q) %: its default `percentile=20` removes 80 %.

Tolerance: CG stops at a relative residual ‖b − A x‖₂ / ‖b‖₂ ≤ `tol` (default 1e-4) in every image × channel
system; preconditioned by a multigrid V-cycle it needs 7 to 9 iterations from 32 to 224 px. Against
pytorch-grad-cam's sparse direct solve (scipy) the imputed pixels then agree to ~1e-3 of the image's scale (tests:
2e-3 at tol 1e-4, 1e-4 at tol 1e-6), far below the imputation noise 0.01 the paper adds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caltech_cam.cam.engine import check_range, check_targets, evaluating
from caltech_cam.models.outputs import logits_of

ROAD_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# Multigrid: halve the grid while its shorter side exceeds this, then relax the coarsest level this many times.
_COARSEST = 4
_COARSE_SWEEPS = 24


def _blur121(x: Tensor) -> Tensor:
    """Σ over the 3×3 window (zero outside the image) of [1, 2, 1] ⊗ [1, 2, 1] · x: two separable 3-tap passes."""
    padded = F.pad(x, (1, 1, 1, 1))
    rows = padded[..., :, :-2] + padded[..., :, 2:]
    rows.add_(padded[..., :, 1:-1], alpha=2)
    both = rows[..., :-2, :] + rows[..., 2:, :]
    return both.add_(rows[..., 1:-1, :], alpha=2)


def _neighbour_sum(x: Tensor) -> Tensor:
    """Σ_j w_ij x_j over the 8 neighbours inside the image, per channel: (N, C, H, W) -> (N, C, H, W).

    Rong et al.'s weights (their code, as in pytorch-grad-cam and Quantus): 1/6 edge, 1/12 diagonal neighbours.
    The stencil [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12 is [1, 2, 1] ⊗ [1, 2, 1] / 12 less 4/12 of the centre.
    """
    return (_blur121(x) - 4 * x) / 12


def _upsample(c: Tensor, out: Tensor) -> Tensor:
    """P: bilinear ×2 (as F.interpolate with align_corners=False, edges clamped) into `out` (N, C, 2h, 2w).

    Per axis, 3/4 of the nearer coarse pixel + 1/4 of the farther, written straight into the interleaved output:
    upsample_bilinear2d (and a stack of slices) were the slowest calls of the solve on the CPU. Odd fine sides
    use `out` cropped.
    """
    n, ch, hc, wc = c.shape
    c = F.pad(c / 16, (1, 1, 1, 1), mode="replicate")
    rows = c.new_empty(n, ch, hc + 2, wc, 2)
    middle = c[..., :, 1:-1]
    torch.add(c[..., :, :-2], middle, alpha=3, out=rows[..., 0])
    torch.add(c[..., :, 2:], middle, alpha=3, out=rows[..., 1])
    rows = rows.view(n, ch, hc + 2, 2 * wc)
    out = out.view(n, ch, hc, 2, 2 * wc)
    middle = rows[..., 1:-1, :]
    torch.add(rows[..., :-2, :], middle, alpha=3, out=out[..., 0, :])
    torch.add(rows[..., 2:, :], middle, alpha=3, out=out[..., 1, :])
    return out.view(n, ch, 2 * hc, 2 * wc)


def _downsample(r: Tensor) -> Tensor:
    """R = Pᵀ: the exact adjoint of `_upsample` (zero-pad odd sides, replicate edges, [1, 3, 3, 1]/4 per axis)."""
    h, w = r.shape[-2:]
    if h % 2 or w % 2:
        r = F.pad(r, (0, w % 2, 0, h % 2))
    r = F.pad(r, (1, 1, 1, 1), mode="replicate")
    # Strided slices, not a strided conv2d: on one-channel planes the convolution was the solve's slowest call.
    n = r.shape[-1] // 2 - 1
    r = (r[..., 0 : 2 * n : 2] + r[..., 3 : 2 * n + 3 : 2]).add_(
        r[..., 1 : 2 * n + 1 : 2] + r[..., 2 : 2 * n + 2 : 2], alpha=3
    )
    n = r.shape[-2] // 2 - 1
    r = (r[..., 0 : 2 * n : 2, :] + r[..., 3 : 2 * n + 3 : 2, :]).add_(
        r[..., 1 : 2 * n + 1 : 2, :] + r[..., 2 : 2 * n + 2 : 2, :], alpha=3
    )
    return r.div_(16)


class _Level:
    """One grid of the hierarchy: its unknowns m (removed pixels) and A v = m ⊙ (d ⊙ v − N(v)) for v = 0 off m.

    With N(v) = ([1, 2, 1] ⊗ [1, 2, 1] v − 4 v) / 12 this is (m ⊙ (d + 1/3)) ⊙ v − (m / 12) ⊙ blur(v): both
    coefficient maps are precomputed. The work buffers are allocated once per solve and written in place: on the
    CPU a fresh multi-megabyte tensor per operation costs more in page faults than the arithmetic.
    """

    def __init__(self, mask: Tensor, channels: int) -> None:
        self.mask = mask  # (N, 1, h, w) float, 1 = unknown
        n, _, h, w = mask.shape
        ones = torch.ones(1, 1, h, w, dtype=mask.dtype, device=mask.device)
        degree = _neighbour_sum(ones)  # Σ of the weights inside the image: 1 inside, less on the border
        self.centre = mask * (degree + 1 / 3)
        self.minus_side = -mask / 12
        self.inverse_degree = mask / degree
        self.size = (h, w)
        self.padded = mask.new_zeros(n, channels, h + 2, w + 2)  # the border stays 0: zero outside the image
        self.rows = mask.new_empty(n, channels, h + 2, w)
        self.scratch = mask.new_empty(n, channels, h + h % 2, w + w % 2)
        self.e = mask.new_empty(n, channels, h, w)  # this level's V-cycle result

    def apply(self, v: Tensor, out: Tensor) -> Tensor:
        """out = A v, for v zero outside the unknowns (every vector of the solve is); out must not be v."""
        padded, rows = self.padded, self.rows
        padded[..., 1:-1, 1:-1].copy_(v)
        torch.add(padded[..., :, :-2], padded[..., :, 2:], out=rows)
        rows.add_(padded[..., :, 1:-1], alpha=2)
        torch.add(rows[..., :-2, :], rows[..., 2:, :], out=out)
        out.add_(rows[..., 1:-1, :], alpha=2)
        return out.mul_(self.minus_side).addcmul_(self.centre, v)

    def relax(self, e: Tensor, r: Tensor) -> Tensor:
        """One Jacobi sweep on A e = r, in place (ω = 1: the stencil's high frequencies shrink ≥ 3× a sweep)."""
        h, w = self.size
        residual = self.apply(e, self.scratch[..., :h, :w])
        torch.sub(r, residual, out=residual)
        return e.addcmul_(self.inverse_degree, residual)


def _hierarchy(mask: Tensor, channels: int) -> list[_Level]:
    """Grids down to a side of `_COARSEST`; a coarse pixel is unknown only when its whole 2×2 block is, so every
    level keeps known pixels around each hole (nonsingular) and the coarse operator is A rediscretized."""
    levels = [_Level(mask, channels)]
    while min(levels[-1].size) > _COARSEST:
        coarse = 1 - F.max_pool2d(1 - levels[-1].mask, 2, ceil_mode=True)
        levels.append(_Level(coarse, channels))
    return levels


def _v_cycle(levels: Sequence[_Level], r: Tensor) -> Tensor:
    """Symmetric V(1, 1) cycle from a zero guess: an SPD approximation of A⁻¹ r, the preconditioner of CG.

    Returns the level's own buffer `e` (overwritten by the next cycle)."""
    level = levels[0]
    e = torch.mul(level.inverse_degree, r, out=level.e)  # one Jacobi sweep from zero
    if len(levels) == 1:
        for _ in range(_COARSE_SWEEPS - 1):
            level.relax(e, r)
        return e
    h, w = level.size
    residual = level.apply(e, level.scratch[..., :h, :w])
    torch.sub(r, residual, out=residual)
    coarse = levels[1]
    correction = _v_cycle(levels[1:], _downsample(residual).mul_(coarse.mask)).mul_(coarse.mask)
    e.addcmul_(level.mask, _upsample(correction, level.scratch)[..., :h, :w])
    return level.relax(e, r)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Σ over the pixels of a ⊙ b, per image and channel: (N, C, H, W) -> (N, C, 1, 1), in one pass."""
    return torch.linalg.vecdot(a.flatten(2), b.flatten(2))[..., None, None]


def _solve(images: Tensor, removed: Tensor, tol: float, max_iter: int) -> Tensor:
    """The noise-free imputation: multigrid-preconditioned conjugate gradients, one system per image × channel.

    Unknowns are the removed pixels; the known ones enter the right-hand side b = m ⊙ N((1 − m) ⊙ x). Stops when
    every system has ‖b − A x‖₂ ≤ tol · ‖b‖₂ (checked on the host each iteration: the solve's only syncs) and
    raises RuntimeError after `max_iter` iterations.
    """
    mask = removed[:, None].to(images.dtype)
    levels = _hierarchy(mask, images.shape[1])
    b = mask * _neighbour_sum((1 - mask) * images)
    x = torch.zeros_like(images)
    r = b.clone()
    ap = torch.empty_like(images)
    z = _v_cycle(levels, r)
    p = z.clone()
    rz = _dot(r, z)
    rr = _dot(r, r)
    limit = tol * tol * _dot(b, b)
    for _ in range(max_iter):
        if bool((rr <= limit).all()):
            return torch.where(removed[:, None], x, images)
        levels[0].apply(p, ap)
        pap = _dot(p, ap)
        # A finished system (rr ≤ limit; b = 0 included) takes no step, so it cannot put 0/0 into the batch.
        active = (rr > limit) & (pap > 0)
        alpha = torch.where(active, rz / torch.where(active, pap, 1.0), 0.0)
        x.addcmul_(p, alpha)
        r.addcmul_(ap, alpha, value=-1)
        z = _v_cycle(levels, r)
        rz_new = _dot(r, z)
        beta = torch.where(active, rz_new / torch.where(active, rz, 1.0), 0.0)
        p.mul_(beta).add_(z)
        rz = torch.where(active, rz_new, rz)
        rr = torch.where(active, _dot(r, r), rr)
    if bool((rr <= limit).all()):
        return torch.where(removed[:, None], x, images)
    worst = ((rr / limit.clamp_min(torch.finfo(rr.dtype).tiny)).max().sqrt() * tol).item()
    raise RuntimeError(
        f"noisy_linear_impute: conjugate gradients reached max_iter={max_iter} with a relative residual of "
        f"{worst:.3g} > tol={tol}; raise max_iter or tol"
    )


def noisy_linear_impute(
    images: Tensor,
    removed: Tensor,
    *,
    noise: float = 0.01,
    tol: float = 1e-4,
    max_iter: int = 200,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Noisy linear imputation (Rong et al. 2022): x_i = Σ_j w_ij x_j / Σ_j w_ij + noise · ε_i, ε_i ~ N(0, 1).

    `images` (B, C, H, W) float, `removed` (B, H, W) bool (True: impute). The weighted neighbour mean is solved
    jointly for all removed pixels (conjugate gradients, relative residual ≤ `tol` per image and channel); kept
    pixels are returned unchanged. An image whose pixels are all removed has no solution and is an error.
    """
    if images.dim() != 4 or not images.dtype.is_floating_point:
        raise ValueError(f"images must be float (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if removed.dtype != torch.bool or removed.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"removed must be bool (B, H, W) = {(images.shape[0], *images.shape[2:])}, got {removed.dtype} "
            f"{tuple(removed.shape)}"
        )
    if not tol > 0 or max_iter < 1 or noise < 0:
        raise ValueError(
            f"need tol > 0, max_iter >= 1, noise >= 0; got tol={tol}, max_iter={max_iter}, noise={noise}"
        )
    everything = removed.flatten(1).all(dim=1)
    if everything.any():
        raise ValueError(
            f"images {everything.nonzero().flatten().tolist()} have every pixel removed: nothing is left to impute "
            "from (remove fewer than H·W pixels)"
        )
    removed = removed.to(images.device)
    filled = _solve(images, removed, tol, max_iter)
    if noise > 0:
        eps = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        filled = torch.where(removed[:, None], filled + noise * eps, filled)
    return filled


def removal_counts(fractions: Sequence[float], pixels: int) -> list[int]:
    """Pixels removed at each fraction p: k = round(p · pixels) (Python's round, half to even)."""
    bad = [p for p in fractions if not 0 < p < 1]
    if bad or not fractions:
        raise ValueError(f"fractions must be a non-empty sequence in (0, 1), got {list(fractions)}")
    return [round(p * pixels) for p in fractions]


def road_curve(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    targets: Tensor | Sequence[int] | None = None,
    *,
    order: str = "morf",
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = 0.01,
    tol: float = 1e-4,
    max_iter: int = 200,
    chunk_size: int = 64,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ROAD curve (Rong et al., ICML 2022), (B, F): p_c(x with the fraction f of pixels removed and imputed).

    order "morf" removes the round(f·H·W) most salient pixels, "lerf" the least salient (ties in raster order);
    removed pixels are filled by `noisy_linear_impute`. The B·F imputed images are built and scored as one batch
    of masks, `chunk_size` at a time. Class c = `targets` (default: the predicted class, one extra forward).
    Costs B·F forwards (+ B without targets).
    """
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")
    if saliency.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"saliency of shape {tuple(saliency.shape)}; expected (B, H, W) of the images")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    batch, _, height, width = images.shape
    counts = torch.tensor(removal_counts(fractions, height * width), device=images.device)
    wanted = check_targets(targets, batch)
    # Rank 0 = first removed; stable sorts break ties in raster order for both orders.
    flat = saliency.to(images.device).flatten(1)
    order_ = flat.argsort(dim=1, descending=order == "morf", stable=True)
    ranks = torch.empty_like(order_).scatter_(
        1, order_, torch.arange(order_.shape[1], device=order_.device).expand_as(order_)
    )
    steps = len(counts)
    with evaluating(model, grad=False, device_type=images.device.type):
        if wanted is None:
            classes = torch.cat([logits_of(model(c)).argmax(dim=1) for c in images.split(chunk_size)])
        else:
            classes = wanted.to(images.device)
        out = []
        for index in torch.arange(batch * steps, device=images.device).split(chunk_size):
            image, step = index // steps, index % steps
            removed = (ranks[image] < counts[step, None]).view(-1, height, width)
            filled = noisy_linear_impute(
                images[image], removed, noise=noise, tol=tol, max_iter=max_iter, generator=generator
            )
            logits = logits_of(model(filled)).float()
            if wanted is not None and not out:
                check_range(wanted, logits.shape[1])
            out.append(logits.softmax(dim=1).gather(1, classes[image, None])[:, 0])
    return torch.cat(out).view(batch, steps)


def road_scores(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    targets: Tensor | Sequence[int] | None = None,
    **kwargs: object,
) -> dict[str, Tensor]:
    """ROAD per image (B,): "road_morf" = mean_f MoRF curve (lower is better), "road_lerf" = mean_f LeRF curve
    (higher is better), "road" = (road_lerf − road_morf) / 2 (Rong et al. 2022). kwargs as `road_curve`'s."""
    if "order" in kwargs:
        raise ValueError("road_scores runs both orders; pass no 'order'")
    if targets is None:
        # Both orders must score the same class: fix the predicted one once.
        chunk: int = kwargs.get("chunk_size", 64)  # type: ignore[assignment]
        with evaluating(model, grad=False, device_type=images.device.type):
            targets = torch.cat([logits_of(model(c)).argmax(dim=1) for c in images.split(chunk)])
    morf = road_curve(model, images, saliency, targets, order="morf", **kwargs).mean(dim=1)  # type: ignore[arg-type]
    lerf = road_curve(model, images, saliency, targets, order="lerf", **kwargs).mean(dim=1)  # type: ignore[arg-type]
    return {"road_morf": morf, "road_lerf": lerf, "road": (lerf - morf) / 2}
