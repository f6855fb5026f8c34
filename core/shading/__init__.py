"""3D shading channel: face mesh -> SH lighting fit -> untextured shaded render (ShadingNet condition).

Flow: `reconstruct` (reconstruct.py, topology.py, pose.py) -> `fit_sh` (lighting.py) ->
`render` (render.py with render_cpu.py / render_pytorch3d.py) -> `make_condition`
(condition.py, cacheable with save_shading/load_shading); metrics in consistency.py.
"""

from .condition import ShadingResult, load_shading, make_condition, save_shading
from .consistency import light_error, pose_error_deg
from .lighting import fit_sh, sh_basis, shade
from .reconstruct import FaceMesh, available_reconstructors, reconstruct, register_reconstructor
from .render import pytorch3d_available, render

__all__ = [
    "FaceMesh", "ShadingResult", "available_reconstructors", "fit_sh", "light_error", "load_shading",
    "make_condition", "pose_error_deg", "pytorch3d_available", "reconstruct", "register_reconstructor",
    "render", "save_shading", "sh_basis", "shade",
]
