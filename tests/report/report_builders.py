"""Hostile texts the report tests plant in a warehouse (HTML, script and spreadsheet formulas)."""

HOSTILE_PATIENT = '<script>alert("p")</script>"onload="x'
HOSTILE_PREFIX = '=HYPERLINK("x")<script>'
HOSTILE_REASON = "<img src=x onerror=alert(1)> reason"
