"""3D shading channel: face mesh -> SH lighting fit -> untextured shaded render (ShadingNet condition),
and the pose/light consistency of an image with the condition it was made from.

Flow: `reconstruct` (reconstruct.py with mesh.py, topology.py, pose.py; deca.py as a plug-in) ->
`fit_sh` (light_fit.py on lighting.py's SH math and render.py's normal map) -> `render` (render.py
with render_cpu.py / render_pytorch3d.py) -> `make_condition` (condition.py, cacheable with
save_shading/load_shading). consistency.py: Pose/Light errors and `ConsistencyScorer`, which
`fmu generate` and `fmu score` both use. controls.py (with expression.py, light_presets.py): the
pose, expression and light a user asks for instead of the fitted ones. compose.py: several people's renders placed
in their boxes of one condition.
"""

from .condition import ShadingResult, load_shading, make_condition, save_shading
from .consistency import ConsistencyScorer, light_error, pose_error_deg
from .light_fit import fit_sh
from .lighting import sh_basis, shade
from .mesh import FaceMesh
from .reconstruct import available_reconstructors, reconstruct, register_reconstructor
from .render import pytorch3d_available, render

__all__ = [
    "ConsistencyScorer", "FaceMesh", "ShadingResult", "available_reconstructors", "fit_sh", "light_error",
    "load_shading", "make_condition", "pose_error_deg", "pytorch3d_available", "reconstruct",
    "register_reconstructor", "render", "save_shading", "sh_basis", "shade",
]
