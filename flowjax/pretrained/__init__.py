"""Small trained models that ship with flowjax: load them by name, checksum verified.

    model = fj.pretrained.load("digits_fm")              # class-conditional velocity, null label
    v = model.velocity_field(y, guidance=2.0)            # v(x, t), classifier-free guided
    x1, _ = fj.sampling.sample_ode(v, x0, solver="heun", num_steps=32)
    X = fj.pretrained.load("digits_map").flow_map(y)     # X(x, s, t)
    x1 = fj.flowmaps.sample(X, x0, num_steps=1)          # one network evaluation

Every model is a `.npz` of float32 arrays (read with `allow_pickle=False`) beside
`manifest.json`, which holds for each name its file, sha256, the network's config (rebuilt
through `fj.models.build_model`) and its measured quality. `load` refuses a file whose
sha256 or content does not match the manifest with one ValueError naming the file. Images
are (B, 8, 8, 1) in [-1, 1] (sklearn's digits, `v / 8 - 1`); labels 0..9, 10 is the null label.
The models were made by `experiments/make_pretrained.py` with `configs/pretrained_digits.py`.
"""

from flowjax.pretrained._load import DEFAULT_DIR as DEFAULT_DIR
from flowjax.pretrained._load import NAMES as NAMES
from flowjax.pretrained._load import Pretrained as Pretrained
from flowjax.pretrained._load import file_sha256 as file_sha256
from flowjax.pretrained._load import load as load
from flowjax.pretrained._load import read_arrays as read_arrays
from flowjax.pretrained._load import read_manifest as read_manifest
from flowjax.pretrained._load import save as save

__all__ = [
    "DEFAULT_DIR",
    "NAMES",
    "Pretrained",
    "file_sha256",
    "load",
    "read_arrays",
    "read_manifest",
    "save",
]
