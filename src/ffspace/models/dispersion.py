"""A DFT-D4 dispersion prior through the dftd4 library (Caldeweyher et al. 2019), for molecules.

dftd4 returns energies and analytic gradients; a custom autograd function hands them to torch. The prior
has no trainable parameters, so its forces enter a force loss as constants and no second derivative is
needed. Periodic cells are refused: dftd4's lattice sums are truncated, which makes stress by strain
derivatives inconsistent at the level our physics suite checks.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import units
from ..errors import ConfigError
from .base import FFModel, register


class _D4Energy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, positions, numbers, method):
        from dftd4.interface import DampingParam, DispersionModel

        pos = positions.detach().cpu().numpy().astype(np.float64) / units.bohr
        model = DispersionModel(numbers.cpu().numpy(), pos)
        param = DampingParam(method=method)
        res = model.get_dispersion(param, grad=True)
        pair = model.get_pairwise_dispersion(param)
        per_atom = 0.5 * sum(v.sum(axis=0) + v.sum(axis=1) for v in pair.values()) * units.hartree
        grad = torch.as_tensor(res["gradient"] * units.hartree / units.bohr, dtype=positions.dtype,
                               device=positions.device)
        ctx.save_for_backward(grad)
        return torch.as_tensor(per_atom, dtype=positions.dtype, device=positions.device)

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        # dftd4 gives the gradient of the total energy only, not of each atom's share: valid because every
        # consumer (Potential, losses) differentiates a structure's total, so grad_out is uniform.
        if not torch.allclose(grad_out, grad_out.mean().expand_as(grad_out)):
            raise RuntimeError("the D4 prior can only differentiate whole-structure energies")
        return grad_out.mean() * grad, None, None


@register("d4")
class D4Dispersion(FFModel):
    """E_disp from DFT-D4 with the damping parameters of ``method`` (the functional of the reference data)."""

    long_range = True

    def __init__(self, elements=(), method: str = "pbe"):
        super().__init__()
        try:  # an unknown functional is a settings error now, not a failure in the first force call
            from dftd4.interface import DampingParam

            DampingParam(method=str(method))
        except ImportError:
            raise ConfigError("the D4 dispersion prior needs the dftd4 package: pip install 'ffspace[dispersion]'") \
                from None
        except RuntimeError as exc:
            raise ConfigError(f"dispersion={method!r}: dftd4 has no damping parameters for it ({exc}); give the "
                              "functional of your reference data, e.g. pbe, b3lyp, wb97x") from None
        self.config = dict(elements=sorted(int(z) for z in elements), method=str(method))
        self._init_elements(elements)
        self.method = str(method)
        self.cutoff = 0.0

    def forward(self, batch) -> torch.Tensor:
        if bool(batch.pbc.any()):
            raise ValueError("the D4 dispersion prior handles molecules only (no periodic cells)")
        out = batch.positions.new_zeros(batch.numbers.shape[0])
        offsets = torch.cumsum(batch.n_atoms, 0) - batch.n_atoms
        for g in range(batch.n_graphs):
            lo, n = int(offsets[g]), int(batch.n_atoms[g])
            e = _D4Energy.apply(batch.positions[lo:lo + n], batch.numbers[lo:lo + n], self.method)
            out = out.index_add(0, torch.arange(lo, lo + n, device=out.device), e)
        return out
