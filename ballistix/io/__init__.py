"""Reading and writing scans: x3p (ISO 25178-72), 2-D images, ballistix .npz."""

from ._units import check_units
from .formats import read_image, read_npz, read_scan, write_npz
from .x3p import read_x3p, write_x3p

__all__ = ["read_scan", "read_x3p", "write_x3p", "read_image", "read_npz", "write_npz", "check_units"]
