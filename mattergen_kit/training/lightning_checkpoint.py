"""Reading the kit's own Lightning checkpoints (``run_dir/checkpoints/*.ckpt``) without running code from them.

A ``*.ckpt`` is a pickle; a planted one can name any callable (``os.system``, ``builtins.exec``) for the unpickler
to call. Every read here is ``torch.load(weights_only=True)`` (torch's restricted unpickler: tensors, containers,
numbers, strings) plus :data:`LIGHTNING_CHECKPOINT_GLOBALS`, exactly the extra classes a checkpoint written by
``mattergen-kit train`` holds. Measured on Lightning 2.6 (plain and conditioned runs, ``last.ckpt`` and
``best.ckpt``, with and without ``properties``): none; the list is empty and stays explicit so that a future
addition is a reviewed line here. Any other global is refused by name *before* unpickling
(``torch.serialization.get_unsafe_globals_in_checkpoint`` only reads the pickle's opcodes), so nothing is executed.

Resume goes through the same reader: ``training/fit.py`` gives the Trainer a checkpoint IO whose ``load_checkpoint``
is :func:`load_lightning_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mattergen_kit.model.checkpoint import CheckpointError

LIGHTNING_CHECKPOINT_GLOBALS: list[type] = []
_ALLOWED_NAMES = {f"{cls.__module__}.{cls.__qualname__}" for cls in LIGHTNING_CHECKPOINT_GLOBALS}


def check_lightning_checkpoint(path: str | Path) -> None:
    """CheckpointError unless ``path`` is a readable torch zip file naming only allowed globals (nothing is run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no Lightning checkpoint at {path}")
    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # noqa: BLE001 - any failure to parse the zip/pickle means the same thing to the user
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint ({type(err).__name__}: "
                              f"{str(err).strip()[:200]}); if it is the last.ckpt of an interrupted run, delete it "
                              "to start again from the last good state") from None
    refused = sorted(set(named) - _ALLOWED_NAMES)
    if refused:
        raise CheckpointError(f"{path} names objects that could run code when unpickled ({', '.join(refused)}); "
                              "a checkpoint written by mattergen-kit train holds none: refused without unpickling "
                              "it. Delete it if you did not put it there.")


def load_lightning_checkpoint(path: str | Path, map_location="cpu", require_state_dict: bool = True) -> dict:
    """The checkpoint as a dict, read with ``weights_only=True`` and the allow-list above (CheckpointError if not).
    ``require_state_dict=False`` also accepts a bare weights dict (what ddp_spawn passes from its workers back to
    the main process through the same checkpoint IO)."""
    check_lightning_checkpoint(path)
    with torch.serialization.safe_globals(LIGHTNING_CHECKPOINT_GLOBALS):
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 - a torn file that passed the opcode scan
            raise CheckpointError(f"{path} could not be read ({type(err).__name__}: {str(err).strip()[:200]}); "
                                  "it is truncated or corrupted: delete it") from None
    if not isinstance(checkpoint, dict) or (require_state_dict and not isinstance(checkpoint.get("state_dict"), dict)):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict' dict inside)")
    return checkpoint
