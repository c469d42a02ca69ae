"""Every method, imported explicitly (no directory scan): importing this module fills the registry.

Kept out of the package `__init__` so that importing one method's pure-torch parts does not import
every method (and their callbacks) first.
"""

from lightning_modules.asr import module as _asr  # noqa: F401
from lightning_modules.deeplens import module as _deeplens  # noqa: F401
from lightning_modules.deeplens.edof import module as _deeplens_edof  # noqa: F401
from lightning_modules.face_emotion import analysis_job as _face_emotion_analysis  # noqa: F401
from lightning_modules.face_emotion import module as _face_emotion  # noqa: F401
from lightning_modules.loraprune import module as _loraprune  # noqa: F401
from lightning_modules.loraprune import vit_module as _loraprune_vit  # noqa: F401
from lightning_modules.rdnet import module as _rdnet  # noqa: F401
