"""The synthetic trial generator: designed patients, recurring plate controls, instrument exports.

``sample_data/generate.py`` writes the committed sample trial; ``bench/history.py`` reuses the same
code for a large cohort history. Everything is deterministic (seeded ``random.Random`` streams,
stdlib + openpyxl only).
"""
