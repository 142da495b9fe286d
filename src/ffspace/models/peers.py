"""The peer families: other projects' models, wrapped so that ffspace's trainer, data and budget apply to them.

They are optional extras. Each registers only when its package is installed; ``ffspace bench`` reports an
uninstalled peer as "not installed" with the command that installs it, and never counts a peer as "ours".
"""

from __future__ import annotations

from importlib.util import find_spec

# family → (the module it needs, how to install it without replacing ffspace's torch or e3nn).
PEERS = {
    "mace_torch": ("mace", "bash scripts/install_peers.sh (mace-torch with --no-deps: it pins e3nn 0.4.4 and "
                           "runs with ffspace's e3nn; then torch-ema, torchmetrics, pandas)"),
    "torchani": ("torchani", "bash scripts/install_peers.sh (torchani with --no-deps)"),
}


def is_peer(family: str) -> bool:
    return family in PEERS


# family → why it failed to import although installed (set by ffspace.models at import).
broken: dict[str, str] = {}


def installed(family: str) -> bool:
    return find_spec(PEERS[family][0]) is not None and family not in broken


def install_hint(family: str) -> str:
    if family in broken:
        return f"installed but does not import ({broken[family]}); reinstall: {PEERS[family][1]}"
    return PEERS[family][1]
