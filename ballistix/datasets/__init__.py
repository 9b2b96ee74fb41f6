"""Labelled data: the synthetic cartridge-case simulator and simulated casework."""

from .casework import Casework, simulate_casework
from .simulate import DIFFICULTIES, MODELS, RESOLUTIONS, Firearm, fire, iter_simulate, make_firearm, simulate

__all__ = ["simulate", "iter_simulate", "make_firearm", "fire", "Firearm", "DIFFICULTIES", "MODELS",
           "RESOLUTIONS", "simulate_casework", "Casework"]
