"""Labelled data: the synthetic cartridge-case simulator and simulated casework."""

from .simulate import DIFFICULTIES, MODELS, Firearm, fire, iter_simulate, make_firearm, simulate

__all__ = ["simulate", "iter_simulate", "make_firearm", "fire", "Firearm", "DIFFICULTIES", "MODELS"]
