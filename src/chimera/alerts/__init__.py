"""Alerts a clinician can trust (methods.md 9.3): each rule states what it compares, with which error.

Modules: ``config`` (rules, channels and critical-difference settings, part of
``chimera.settings.Settings``), ``evidence`` (what every alert cites), ``growth`` (persistence,
accumulation, unexpected expansion), ``loss`` (early loss, never detected, falling exposure),
``relapse`` (recipient rising), ``qc`` (repeated QC failure), ``detect`` (all rules over the
trend and kinetics tables) and ``states`` (open / ongoing / resolved episodes).
"""
