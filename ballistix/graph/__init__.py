"""The crime-linkage graph: `LinkageGraph` and the analyses over it."""

from .linkage import LinkageGraph, node_key

__all__ = ["LinkageGraph", "node_key"]
