"""The field response on CUDA against the CPU (issue 33): energy, forces, dipole and polarizability of one model in
float64 on both devices, and MD on CUDA in a time-dependent field. Needs a GPU.

    python benchmarks/field_cuda_check.py
"""
import numpy as np, torch
from ffspace.models import AtomicReference, FieldResponse, SchNet, Sum
from ffspace.potential import Potential
from ffspace.testing import physics
from ffspace.md import run_md
torch.manual_seed(0)
m = Sum([AtomicReference({1: -13.6, 6: -1029.0, 7: -1484.0, 8: -2041.0}), SchNet([1, 6, 7, 8], cutoff=4.0, features=16, layers=2), FieldResponse([1, 6, 7, 8], cutoff=3.5, features=16, layers=1)])
s = physics.molecule(); s.info["field"] = np.array([0.1, -0.2, 0.3])
res = {}
for dev in ("cpu", "cuda"):
    pot = Potential(m, dtype=torch.float64, device=dev)
    out = pot.compute(pot.batch([s]), forces=True, dipole=True, polarizability=True)
    res[dev] = {k: v.cpu().numpy() for k, v in out.items()}
for k in ("energy", "forces", "dipole", "polarizability"):
    print(k, "max |cpu - cuda| =", float(np.abs(res["cpu"][k] - res["cuda"][k]).max()))
pot = Potential(m, dtype=torch.float64, device="cuda")
r = run_md(pot, s, steps=200, timestep_fs=0.1, ensemble="nve", bond_tolerance=None, field=lambda t: np.array([0, 0, 0.3 if t > 5 else 0.0]))
print("MD on cuda in a time-dependent field:", r.status, "etot range (eV)", float(np.ptp(r.thermo["etot_eV"][60:])))
