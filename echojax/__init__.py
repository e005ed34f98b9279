"""echojax: echocardiography segmentation from partially labelled, multi-dataset data.

Reimplements and extends Islam et al., "Comparison of Loss Functions for Robust Deep
Learning-based Echocardiography Segmentation when Learning with Partially Labelled Data
from Multiple Domains", MELBA 2026 (doi:10.59275/j.melba.2026-3bfa).

Submodules are imported on demand (``echojax.losses``, ``echojax.models``, ...) so that
``import echojax`` stays cheap.
"""

__version__ = "0.1.0"
