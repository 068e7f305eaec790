"""Pure chimerism arithmetic: no file I/O, no Prefect, no clock. Each formula beside its citation."""
