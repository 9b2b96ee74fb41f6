"""The crime-linkage graph: `LinkageGraph` and the analyses over it; its tables as pandas
DataFrames (`frames`, optional) and its figures (`plot_timeline`, `plot_map`, `plot_flows`)."""

from .figures import plot_flows, plot_map, plot_timeline
from .linkage import LinkageGraph, node_key

__all__ = ["LinkageGraph", "node_key", "plot_timeline", "plot_map", "plot_flows"]
