"""MatterGen's nine released models in the kit (docs/mattergen_compat.md).

* :mod:`~mattergen_kit.mattergen_models.files`: published fingerprints, safe checkpoint loading, where models are
  (``$MATTERGEN_KIT_MODELS``, the cache), ``fetch_model`` and ``mattergen-kit fetch-model``;
* :mod:`~mattergen_kit.mattergen_models.loader`: ``load_mattergen`` → the kit's ``GenerativeModel``.

The network itself (MatterGen's GemNet-T denoiser, ported) is in ``mattergen_kit/model/gemnet.py`` and
``mattergen_kit/model/mattergen.py``.
"""

from mattergen_kit.generation import EXTERNAL_LOADERS
from mattergen_kit.mattergen_models.files import (KNOWN_CHECKPOINTS, MODELS_ENV, FingerprintError, ModelFetchError,
                                                  UnsafeCheckpointError, fetch_model, fetch_model_cli,
                                                  is_mattergen_reference, load_lightning_checkpoint, resolve_model)
from mattergen_kit.mattergen_models.loader import MatterGenKitDenoiser, MatterGenModel, load_mattergen

# mk.load_model / mk.generate / the CLI / Dask workers: a MatterGen name or released-layout folder loads here
if not any(load is load_mattergen for _, load in EXTERNAL_LOADERS):
    EXTERNAL_LOADERS.append((is_mattergen_reference, load_mattergen))

__all__ = ["KNOWN_CHECKPOINTS", "MODELS_ENV", "FingerprintError", "ModelFetchError", "UnsafeCheckpointError",
           "fetch_model", "fetch_model_cli", "is_mattergen_reference", "load_lightning_checkpoint", "resolve_model",
           "MatterGenKitDenoiser", "MatterGenModel", "load_mattergen"]
