"""Droplet-count cells of Bio-Rad ddPCR well exports: numbers, counts, sums, channel labels.

Shared by the row-by-row and the column-by-column readers of :mod:`chimera.parsers.quantasoft`
(formats.md sections 9, 10 and 13).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

from chimera.errors import Problem
from chimera.textio import clean_cell, parse_number

CountSum = tuple[str, tuple[str, ...], bool]
COUNT_SUMS: tuple[CountSum, ...] = (
    ("Positives + Negatives", ("positives", "negatives"), False),
    ("the Ch1/Ch2 quadrant counts", ("ch1+ch2+", "ch1+ch2-", "ch1-ch2+", "ch1-ch2-"), True),
)
"""Sums that equal Accepted Droplets on every row (formats.md 9-10); ``True``: an empty part
while the others are filled breaks the sum (a row cut inside its last count leaves it empty)."""
QUADRANT_PARTS = ("accepted", *COUNT_SUMS[1][1])
"""The counts the quadrant sum reads (Accepted Droplets and the four Ch1/Ch2 quadrants)."""
MAX_DROPLETS = 10_000_000
"""No well or merged row holds more droplets (a QX200 well ~20,000; 16 merged wells ~400,000)."""
_MAX_DIGITS = len(str(MAX_DROPLETS))
"""A count of fewer digits is below :data:`MAX_DROPLETS` (and a float that prints as it)."""
_CHANNEL_PREFIX = re.compile(r"^\s*(ch\s*\d+)\s*(.*)$", re.IGNORECASE)
_SAMPLE_TYPES = {
    "unknown": "unknown",
    "reference": "unknown",
    "ntc": "ntc",
    "no template control": "ntc",
    "posctrl": "positive_control",
    "positive control": "positive_control",
    "poscontrol": "positive_control",
    "negctrl": "negative_control",
    "negative control": "negative_control",
    "negcontrol": "negative_control",
    "blank": "blank",
}
# Written in number columns to mean "no value" (formats.md section 13); never parsed as 0.
NO_VALUE = frozenset({"no call", "nan", "n/a", "na", "undetermined", "-", "--", "none"})
_DOT_DECIMAL = re.compile(r"^-?\d+\.\d+$")
REEXPORT = "re-export the plate from the instrument software; do not edit the CSV."


class DropletNumbers:
    """Convert number cells, collecting a problem for every cell that is not a number."""

    def __init__(self, *, decimal_comma: bool) -> None:
        self.decimal_comma = decimal_comma
        self.problems: list[Problem] = []

    def _reject(
        self, rule: str, message: str, *, column: str, row: int, value: str, fix: str = REEXPORT
    ) -> None:
        """Record one cell that cannot be read."""
        self.problems.append(
            Problem(rule=rule, message=message, row=row, column=column, value=value, fix=fix)
        )

    def real(self, value: str, *, column: str, row: int) -> float | None:
        """A number cell (empty and no-value words: None); a bad cell is recorded."""
        text = value.strip()
        if not text or text.casefold() in NO_VALUE:
            return None
        if self.decimal_comma and _DOT_DECIMAL.match(text):
            self._reject(
                "mixed_decimal_marks",
                "this ';'-separated file writes decimals with a comma elsewhere",
                column=column,
                row=row,
                value=text,
                fix="re-export with one decimal convention (a dot decimal sign is safest).",
            )
            return None
        number = parse_number(text, decimal_comma=self.decimal_comma)
        if number is None:
            self._reject(
                "not_a_number",
                f"{column!r} must be a number or empty",
                column=column,
                row=row,
                value=text,
            )
        return number

    def count(self, value: str, *, column: str, row: int) -> int | None:
        """A whole droplet count (at most :data:`MAX_DROPLETS`); a bad cell is recorded."""
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) < _MAX_DIGITS:
            return int(text)  # what the reading below gives for plain digits, without it
        number = self.real(value, column=column, row=row)
        if number is None:
            return None
        if not number.is_integer() or abs(number) > MAX_DROPLETS:
            self._reject(
                "not_a_count",
                f"{column!r} must be a whole number of droplets (at most {MAX_DROPLETS:,})",
                column=column,
                row=row,
                value=value.strip(),
            )
            return None
        return int(number)

    def sum_part(self, text: str | None) -> float | None:
        """A count cell as the sums read it (as written; empty: None, nothing recorded)."""
        value = (text or "").strip().strip('"')
        if value.isascii() and value.isdigit() and len(value) < _MAX_DIGITS:
            return float(value)  # what parse_number gives for plain digits
        return parse_number(value, decimal_comma=self.decimal_comma) if value else None

    def counts_add_up(
        self, cells: Mapping[str, str], *, row: int, sums: Sequence[CountSum] | None = None
    ) -> Problem | None:
        """Each of ``sums`` (default: all of :data:`COUNT_SUMS`) must equal Accepted Droplets.

        Returns the first sum that does not add up as a problem, or None when they all agree.
        """
        chosen = COUNT_SUMS if sums is None else sums
        names = {"accepted"} | {name for _, parts, _ in chosen for name in parts}
        return unbalanced({n: self.sum_part(cells.get(n)) for n in names}, row=row, sums=chosen)


def unbalanced(
    counts: Mapping[str, float | None], *, row: int, sums: Sequence[CountSum] | None = None
) -> Problem | None:
    """The first of ``sums`` (default :data:`COUNT_SUMS`) not equal to ``counts["accepted"]``.

    ``counts`` are read by :meth:`DropletNumbers.sum_part`; the sum comes back as a problem.
    """
    accepted = counts["accepted"]
    if accepted is None:
        return None
    for label, names, empty_breaks in COUNT_SUMS if sums is None else sums:
        parts = [counts[name] for name in names]
        known = [part for part in parts if part is not None]
        if not known or (len(known) < len(parts) and not empty_breaks):
            continue
        if len(known) < len(parts) or sum(known) != accepted:
            return Problem(
                rule="droplet_counts_add_up",
                message=f"{label} do not add up to the accepted droplets ({accepted:.0f})",
                row=row,
                fix=REEXPORT,
            )
    return None


@lru_cache(maxsize=4096)
def merged_members(value: str | None) -> str | None:
    """``"(A01,B01,C01)"`` → ``"A01,B01,C01"``; empty → None."""
    text = clean_cell(value)
    if text is None:
        return None
    members = [m.strip() for m in re.split(r"[,;\s]+", text.strip("()[] ")) if m.strip()]
    return ",".join(members) or None


@lru_cache(maxsize=1024)
def roles(
    target_type: str | None, dye: str | None, sample_type: str | None, *, software: str
) -> tuple[str | None, str | None, str | None]:
    """Return (channel, target_role, sample_type) from the export's own labels."""
    channel: str | None = None
    kind = (target_type or "").strip()
    match = _CHANNEL_PREFIX.match(kind)
    if match:
        channel = match.group(1).replace(" ", "").capitalize()
        kind = match.group(2)
    kind = kind.strip().casefold()
    channel = dye or channel
    role: str | None = None
    if kind == "reference":
        role = "reference"
    elif kind == "unknown" and software == "qx_manager":
        role = "marker"
    label = (sample_type or "").strip().casefold()
    resolved: str | None
    if label:
        resolved = _SAMPLE_TYPES.get(label, label)
    else:
        resolved = _SAMPLE_TYPES.get(kind) if kind else None
    return channel, role, resolved
