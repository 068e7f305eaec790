"""Instrument exports, manifests and infusion logs to validated tidy frames.

Entry points: :func:`chimera.detect.detect` (read and decode a file once), then
:func:`chimera.parsers.dispatch.parse_export` and
:func:`chimera.parsers.dispatch.check_plausible`.
"""
