"""Labelled data: the synthetic cartridge-case simulator and simulated casework."""

from .casework import Casework, simulate_casework
from .populations import (
    INSTRUMENTS,
    POPULATIONS,
    Session,
    iter_population,
    make_session,
    scan_in_session,
    simulate_population,
)
from .simulate import (
    CASE_HEAD_RESOLUTIONS,
    DIFFICULTIES,
    MODELS,
    RESOLUTIONS,
    VIEWS,
    Firearm,
    fire,
    iter_simulate,
    make_firearm,
    simulate,
)

__all__ = [
    "simulate",
    "iter_simulate",
    "make_firearm",
    "fire",
    "Firearm",
    "DIFFICULTIES",
    "MODELS",
    "RESOLUTIONS",
    "CASE_HEAD_RESOLUTIONS",
    "VIEWS",
    "simulate_casework",
    "Casework",
    "simulate_population",
    "iter_population",
    "POPULATIONS",
    "INSTRUMENTS",
    "Session",
    "make_session",
    "scan_in_session",
]
