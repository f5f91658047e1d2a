"""PNG pictures of the femur coloured by risk factor (pyvista/VTK adapter, off screen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from core.atomic import atomic_path

__all__ = ["render_risk_picture"]


def _quiet_vtk() -> None:
    import vtk

    # Off-screen rendering without a display logs a harmless X warning; keep stderr clean.
    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)
    vtk.vtkObject.GlobalWarningDisplayOff()


def render_risk_picture(
    path: str | Path,
    points: npt.NDArray[np.float64],
    faces: npt.NDArray[np.int64],
    node_risk: npt.NDArray[np.float64],
    critical_point: npt.NDArray[np.float64],
    load_centre: npt.NDArray[np.float64],
    load_direction: npt.NDArray[np.float64],
    frame_axes: npt.NDArray[np.float64],
    title: str,
    fixed_nodes: npt.NDArray[np.int64] | None = None,
) -> None:
    """Write a two-view PNG (anterior and medial views) of the risk-factor field.

    Args:
        path: Output PNG path (written atomically).
        points: (n, 3) node coordinates, mm.
        faces: (f, 3) boundary triangles.
        node_risk: (n,) risk factor (peak strain / limit) at the applied load.
        critical_point: (3,) where failure starts, mm.
        load_centre: (3,) point where the load arrow ends (head surface), mm.
        load_direction: (3,) unit direction of the force.
        frame_axes: (3, 3) anatomical axes (rows x, y, z) used to place the cameras.
        title: Caption.
        fixed_nodes: Optional node indices of the fixed support, drawn as grey dots.
    """
    import pyvista as pv

    _quiet_vtk()
    cells = np.hstack([np.full((faces.shape[0], 1), 3), faces]).ravel()
    surface = pv.PolyData(points, cells)
    surface.point_data["risk factor"] = node_risk
    scale = float(np.ptp(points, axis=0).max())
    arrow_length = 0.25 * scale
    arrow = pv.Arrow(start=load_centre - arrow_length * load_direction, direction=load_direction,
                     scale=arrow_length, tip_length=0.3, tip_radius=0.12, shaft_radius=0.05)
    marker = pv.Sphere(radius=0.025 * scale, center=critical_point)
    centre = points.mean(axis=0)
    up = frame_axes[2]
    views = [("anterior view", frame_axes[1]), ("medial view", -frame_axes[0])]
    plotter = pv.Plotter(off_screen=True, shape=(1, 2), window_size=[1400, 900], border=False)
    vmax = max(float(node_risk.max()), 1e-12)
    for col, (name, toward_camera) in enumerate(views):
        plotter.subplot(0, col)
        plotter.add_mesh(surface, scalars="risk factor", cmap="turbo", clim=(0.0, vmax),
                         smooth_shading=True, show_scalar_bar=(col == 1),
                         scalar_bar_args={"title": "risk factor (strain / limit)",
                                          "vertical": True, "color": "white",
                                          "position_x": 0.8, "width": 0.06})
        plotter.add_mesh(arrow, color="white")
        plotter.add_mesh(marker, color="magenta")
        if fixed_nodes is not None and fixed_nodes.size:
            plotter.add_points(points[fixed_nodes], color="grey", point_size=4)
        plotter.add_text(name, position="upper_left", font_size=10, color="white")
        plotter.camera.focal_point = centre
        plotter.camera.position = centre + 3.2 * scale * toward_camera
        plotter.camera.up = up
        plotter.set_background("black")  # type: ignore[arg-type]  # wrong pyvista stub
    plotter.subplot(0, 0)
    plotter.add_text(title, position="lower_left", font_size=9, color="white")
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            plotter.screenshot(str(tmp))
    finally:
        plotter.close()
