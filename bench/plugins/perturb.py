"""Perturbation arithmetic shared by attacks and by the inner loops of defenses.

Inputs are images in [0, 1] (pixel space), shape (N, C, H, W); ε is in pixel units.
Norms are "linf" or "l2". Nothing here synchronises with the host.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Literal

import torch
from torch import nn

Norm = Literal["linf", "l2"]
NORMS = ("linf", "l2")


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def norms(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-sample ℓ∞ or ℓ2 norm of a batch of perturbations."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    raise ValueError(f"unknown norm {norm!r}")


def project_delta(delta: torch.Tensor, eps: float | torch.Tensor, norm: Norm) -> torch.Tensor:
    """Project perturbations onto the ε-ball (eps may be a per-sample tensor)."""
    if norm == "linf":
        if isinstance(eps, torch.Tensor):
            e = _view(eps, delta)
            return torch.maximum(torch.minimum(delta, e), -e)
        return delta.clamp(-eps, eps)
    n = norms(delta, "l2")
    e = eps if isinstance(eps, torch.Tensor) else torch.full_like(n, float(eps))
    factor = torch.where(n > e, e / n.clamp_min(1e-12), torch.ones_like(n))
    return delta * _view(factor, delta)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor,
            norm: Norm) -> torch.Tensor:
    """Project x_adv onto the ε-ball around x, then onto the image box [0, 1].

    Clamping after the ℓ2 projection cannot leave the ball: x is inside the box, so the
    clamp only shrinks each coordinate of x_adv − x.
    """
    return (x + project_delta(x_adv - x, eps, norm)).clamp(0.0, 1.0)


def random_init(x: torch.Tensor, eps: float | torch.Tensor, norm: Norm,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform random start in the ε-ball (ℓ∞: uniform in the box; ℓ2: uniform in
    the ball, as foolbox's L2 random start), clamped to [0, 1]."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        e = _view(eps, x) if isinstance(eps, torch.Tensor) else eps
        delta = (2 * u - 1) * e
    else:
        d = x[0].numel()
        g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        g = g / _view(norms(g, "l2").clamp_min(1e-12), x)
        r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / d)
        e = eps if isinstance(eps, torch.Tensor) else torch.full_like(r, float(eps))
        delta = g * _view(r * e, x)
    return (x + delta).clamp(0.0, 1.0)


def ascent_step(x_adv: torch.Tensor, grad: torch.Tensor, step: float | torch.Tensor,
                norm: Norm) -> torch.Tensor:
    """One steepest-ascent step: sign of the gradient (ℓ∞) or the ℓ2-normalised gradient."""
    s = _view(step, x_adv) if isinstance(step, torch.Tensor) else step
    if norm == "linf":
        return x_adv + s * grad.sign()
    g = grad / _view(norms(grad, "l2").clamp_min(1e-12), grad)
    return x_adv + s * g


def pgd_ascent(loss_fn, x: torch.Tensor, x_start: torch.Tensor, *, eps: float, step: float,
               steps: int, norm: Norm, box: bool = True) -> torch.Tensor:
    """`steps` projected steepest-ascent steps on `loss_fn(x_adv)` (a scalar) from x_start.

    The one inner loop of PGD, PGD-AT, MART and TRADES-ℓ∞: gradient with respect to the
    input only, `ascent_step`, then projection onto the ε-ball around x and (unless
    `box=False`) onto [0, 1]. No host synchronisation.
    """
    x_adv = x_start.detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(x_adv), x_adv)
        x_adv = ascent_step(x_adv.detach(), grad, step, norm)
        x_adv = project(x_adv, x, eps, norm) if box else x + project_delta(x_adv - x, eps, norm)
    return x_adv.detach()


def within(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm,
           rtol: float = 1e-5, atol: float = 1e-6) -> torch.Tensor:
    """Per-sample: is x_adv inside the ε-ball around x and inside [0, 1]?"""
    in_ball = norms(x_adv - x, norm) <= eps * (1 + rtol) + atol
    flat = x_adv.flatten(1)
    in_box = (flat.amin(dim=1) >= -atol) & (flat.amax(dim=1) <= 1 + atol)
    return in_ball & in_box


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Parameters do not require grad inside the block (restored on exit): gradients
    then reach inputs only, which is all an attack needs, and compiled graphs skip the
    weight gradients they would otherwise compute."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)
