"""One settings object for every path and threshold.

This is the only module that reads the environment. Values come, in increasing priority, from
the defaults below, a TOML file (``CHIMERA_CONFIG`` or ``<home>/chimera.toml``) and environment
variables (``CHIMERA_HOME``, ``CHIMERA_WAREHOUSE``, ``CHIMERA_INBOX``). Command-line options are
applied by the CLI with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from chimera.alerts.config import AlertSettings, load_alert_settings, packaged_alert_settings

SEX_MARKERS = ("AMEL", "AMELOGENIN", "DYS391", "Y INDEL", "Y-INDEL", "YINDEL")


@dataclass(frozen=True)
class StrSettings:
    """STR (GeneMapper) chimerism options; defaults from methods.md section 2."""

    signal: str = "area"
    """Peak signal used in the formulas: ``area`` (Rchimerism, MD Anderson) or ``height``."""
    reference_filter_fraction: float = 0.5
    """Reference peaks below this fraction of the marker's largest called peak are dropped (locSD.R)."""
    min_informative_loci: int = 3
    """Fewer informative loci than this gives QC ``review`` (UK NEQAS; methods.md 2.4)."""
    outlier_mad_factor: float = 3.0
    """Robust outlier rule: exclude |f - median| > max(k * 1.4826 * MAD, delta) (methods.md 2.7)."""
    outlier_delta_pct: float = 5.0
    """Outlier floor delta in percentage points; also the spread limit for n <= 2 (methods.md 2.7)."""
    spread_review_pct: float = 10.0
    """SD of retained loci above this (percentage points) gives QC ``review``."""
    stutter_correction: bool = True
    """Subtract expected stutter before the per-locus formulas (methods.md 2.6). False reproduces
    published uncorrected numbers (Rchimerism)."""
    stutter_ratios: Mapping[str, float] = field(default_factory=dict)
    """Configured back-stutter ratio per locus (stutter / parent signal), used where the lab's
    single-source profiles give no measurement."""
    default_stutter_ratio: float | None = None
    """Configured ratio for loci neither measured nor in ``stutter_ratios``; None = the published
    average for the locus's repeat length (``chimera.calculate.stutter_ratios.PUBLISHED_BACK_STUTTER``)."""
    forward_stutter_correction: bool = True
    """Also subtract forward (n+1) stutter where the lab's profiles measure it (methods.md 2.6:
    rarer and smaller than back stutter, but it lands on minority alleles just the same)."""
    max_forward_stutter_ratio: float = 0.05
    """Single-source n+1 observations above this fraction of the parent are not forward stutter
    (tetranucleotide forward stutter is about 0.5-2 %)."""
    min_stutter_observations: int = 1
    """Single-source observations needed before a measured ratio replaces the configured one."""
    assumed_stutter_cv: float = 0.3
    """Sample-to-sample CV of a stutter ratio measured fewer than 3 times or configured."""
    published_stutter_cv: float = 0.5
    """CV of a published ratio applied to this lab (Identifiler locus means span 3.1-10.7 %)."""
    stutter_uncertainty_limit: float = 0.25
    """A genome-unique allele at a stutter position whose correction uncertainty exceeds this
    fraction of its expected signal makes the locus unreliable for that genome: it is excluded
    while at least ``min_informative_loci`` remain (Nollet 2001; methods.md 2.4)."""
    stutter_sigmas: float = 3.0
    """A genome-unique allele counts as detected only with more corrected signal than this many
    SDs of the stutter expected there (no false iNK from stutter residue)."""
    unexpected_allele_sigmas: float = 4.0
    """A peak in no genotype is stutter up to SR * exp(z * CV) of its neighbour (log-normal
    stutter variation; z this high because every stutter position of a run is tested)."""
    lod_pct: float = 1.0
    """STR limit of detection, % iNK (Children's Mercy 1-5 %, Stahl 2016 >= 1 %)."""
    loq_pct: float = 5.0
    """STR limit of quantification, % iNK (methods.md section 7: STR LoQ ~5 %)."""
    sex_markers: tuple[str, ...] = SEX_MARKERS
    """Markers used only as identity checks, never in the autosomal mean."""
    min_unexpected_allele_fraction: float = 0.05
    """An unexpected allele counts as possible contamination when its signal exceeds this share."""
    area_height_ratio_factor: float = 2.5
    """A called peak whose area/height ratio is this many times off the sample's median is a
    broad artefact: QC ``review`` (methods.md 2.8: D7S820 ratio 23 vs 6-7)."""
    max_stutter_ratio: float = 0.15
    """A peak one repeat from an expected allele and at most this fraction of it is stutter, not a
    foreign allele (Identifiler stutter 3-11 %, methods.md 2.6; margin for n-1 of a homozygote).
    Single-source observations above it are not used to measure stutter."""
    missing_allele_fraction: float = 0.1
    """Three genomes: a genome-unique allele below this fraction of the signal the genome's share
    predicts is missing (methods.md 2.8 D, "DD example")."""
    missing_allele_min_pct: float = 10.0
    """Three genomes: look for missing unique alleles only for genomes at or above this share."""


@dataclass(frozen=True)
class QpcrSettings:
    """qPCR (ΔΔCt) chimerism options; defaults from methods.md section 3 and 4."""

    reference_genes: tuple[str, ...] = ("RPP30", "RNASEP", "RNase P", "RPPH1", "ALB", "HBB")
    """Target names treated as the reference gene (case-insensitive)."""
    min_replicates: int = 2
    """Valid replicates needed per target for a quantified result."""
    max_replicate_sd: float = 0.5
    """Replicate Ct SD above this (cycles) triggers the outlier rule or QC review."""
    ct_cutoff: float = 40.0
    """Ct above this counts as not amplified."""
    reference_ct_min: float = 15.0
    reference_ct_max: float = 32.0
    """Reference-gene Ct outside [min, max] = DNA input failure (result ``failed``)."""
    ntc_ct_min: float = 38.0
    """An NTC amplifying earlier than this Ct fails the plate."""
    lod_pct: float = 0.1
    """Assay LoD in % iNK (methods.md 3.2: sensitivity ~0.1 %)."""
    loq_pct: float = 0.5
    """Assay LoQ in % iNK (CV <= 25 % goal, methods.md section 4)."""


@dataclass(frozen=True)
class DdpcrSettings:
    """ddPCR chimerism options; defaults from methods.md section 5."""

    droplet_volume_nl: Mapping[str, float] = field(
        default_factory=lambda: {"quantasoft_old": 0.91, "quantasoft": 0.85, "qx_manager": 0.85}
    )
    """Droplet volume per software version in nL (recomputed from the real exports)."""
    reference_genes: tuple[str, ...] = ("RPP30", "RNASEP", "RNase P", "RPPH1", "ALB", "HBB")
    min_accepted_droplets: int = 10_000
    """Wells with fewer accepted droplets are excluded (common Bio-Rad practice)."""
    lod_positive_droplets: int = 3
    """Poisson floor: 3 positive droplets for 95 % detection (e^-3 = 0.0498)."""
    loq_positive_droplets: int = 16
    """Positive droplets giving a Poisson CV <= 25 % (1/sqrt(16))."""
    reference_saturation_fraction: float = 0.95
    """Reference positive fraction above this flags saturation."""
    lod_pct: float = 0.05
    """Fallback assay LoD in % iNK when the sample-specific LoD cannot be computed."""
    loq_pct: float = 0.2
    """Fallback assay LoQ in % iNK."""
    confidence: float = 0.95
    validated_lod_pct: float | None = None
    """Assay LoD floor from a dilution series (set by the pipeline from ``dilution_standard``s)."""
    validated_loq_pct: float | None = None
    """Assay LoQ floor from a dilution series."""
    reference_gene_copies: int = 2
    """Reference-gene copies per genome n_ref (RPP30: diploid, 2; methods.md 5.2)."""
    product_marker_copies: Mapping[str, int] = field(default_factory=dict)
    """Expected copies per iNK genome of a marker (e.g. a transgene), overriding the copy
    number read from the product reference; k = n_ref / n_M (methods.md 5.2)."""


@dataclass(frozen=True)
class ReconcileSettings:
    """Which method gives the headline value per sample (methods.md section 7)."""

    str_headline_above_pct: float = 5.0
    """STR is the headline only when quantified at or above this % iNK (STR LoQ)."""
    pcr_preference: tuple[str, ...] = ("ddPCR", "qPCR", "STR")
    """Preference order below the STR threshold."""


@dataclass(frozen=True)
class InboxSettings:
    """Watched-folder behaviour (issue 5)."""

    settle_seconds: float = 5.0
    """A file is read only when two looks this far apart saw the same size and mtime."""
    poll_interval_seconds: int = 60
    waiting_timeout_hours: float = 72.0
    """A waiting file is quarantined after this long."""
    ignore_patterns: tuple[str, ...] = ("~$*", "*.part", "*.tmp", ".~lock*", ".*", "*.problems.txt")
    max_file_bytes: int | None = 200_000_000
    """Larger files are refused unread (``chimera.textio.check_size``); None = no limit."""
    incomplete_settle_seconds: float = 30.0
    """A file whose end looks cut off (no final line end) is read only once unchanged this long."""


MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """The CPUs this process may run on, at most :data:`MAX_DEFAULT_WORKERS`."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    return max(1, min(count, MAX_DEFAULT_WORKERS))


@dataclass(frozen=True)
class ScaleSettings:
    """Task runner and object storage for a deployment past one machine (issue 15).

    Set in the ``[scale]`` section of ``chimera.toml``; every URL is an fsspec URL
    (``s3://bucket/prefix``). With no URL, Chimera works on the local folders alone.
    """

    task_runner: str = "threads"
    """``"threads"`` (Prefect's ThreadPoolTaskRunner) or ``"dask"`` (prefect-dask)."""
    max_workers: int | None = None
    """Threads of the thread pool; None = Prefect's default."""
    parse_tasks: int = 16
    """At most this many parse tasks per poll, the files spread evenly over them: Prefect's
    bookkeeping of one task costs more than parsing one small export."""
    dask_address: str | None = None
    """Scheduler of an existing Dask cluster (``tcp://host:8786``); None = a temporary
    ``LocalCluster`` of ``dask_workers`` workers for the flow run."""
    dask_workers: int = 2
    dask_processes: bool = True
    """Temporary cluster workers are processes (True) or threads of one process (False)."""
    inbox_url: str | None = None
    """Object-storage inbox: objects there are copied into the local inbox and read."""
    archive_url: str | None = None
    quarantine_url: str | None = None
    warehouse_url: str | None = None
    """Shared warehouse: pulled before a poll, published after it, under a lease object."""
    staging_url: str | None = None
    """Where parallel parses leave their Parquet (shared by every worker); None =
    ``<warehouse>/.staging``."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options of every URL (s3fs: ``key``, ``secret``, ``client_kwargs.endpoint_url``)."""
    lease_seconds: float = 900.0
    """A site's hold on the shared warehouse expires after this long (a crashed site's lease
    is broken then); longer than the longest poll."""
    workers: int = field(default_factory=default_workers)
    """Processes of the in-process batch's worker pool (:mod:`chimera.workers`): the CPUs this
    process may use, at most 4; 1 = no pool, everything in this process."""
    pool_min_files: int = 200
    """A batch of at least this many files parses them in the pool (and starts it early, so
    the workers' imports overlap reading the files): a worker costs ~2-3 s CPU to start."""
    pool_min_patients: int = 40
    """A rebuild of at least this many patients computes them in the pool."""

    def write_threads(self, files: int, at_least: int) -> int:
        """Threads that write ``files`` independent Parquet files: ``workers`` from ``at_least``."""
        return min(self.workers, files) if files >= at_least else 1


@dataclass(frozen=True)
class Settings:
    """Every path and threshold Chimera uses."""

    home: Path = Path("chimera-data")
    warehouse: Path = Path("chimera-data/warehouse")
    inbox: Path = Path("chimera-data/inbox")
    archive: Path = Path("chimera-data/archive")
    quarantine: Path = Path("chimera-data/quarantine")
    alerts: AlertSettings = field(default_factory=packaged_alert_settings)
    """Alert rules, channels and critical differences (``chimera.alerts.config``): the packaged
    ``defaults/alert_rules.toml``, then ``alert_rules = "<file>"`` and the ``[alerts]`` section of
    ``chimera.toml`` laid over it."""
    qpcr: QpcrSettings = field(default_factory=QpcrSettings)
    ddpcr: DdpcrSettings = field(default_factory=DdpcrSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    inbox_rules: InboxSettings = field(default_factory=InboxSettings)
    scale: ScaleSettings = field(default_factory=ScaleSettings)
    prefect_api_url: str | None = None
    """Prefect API of the local server; None = ``http://127.0.0.1:4200/api``."""
    prefect_port: int = 4200
    alert_notification_block: str | None = None
    """Prefect notification block (``slack-webhook/lab-alerts``) that ``chimera serve`` wires to
    ``chimera.alert.opened`` events with an automation; None = no automation."""
    smtp_password: str | None = field(default=None, repr=False)
    """SMTP password for alert e-mail (from ``CHIMERA_SMTP_PASSWORD``; never in a file)."""
    str: StrSettings = field(default_factory=StrSettings)
    """STR options (last: the name shadows the builtin inside the class body)."""

    def with_home(self, home: Path) -> Settings:
        """Return settings whose every data folder sits under ``home``."""
        return replace(
            self,
            home=home,
            warehouse=home / "warehouse",
            inbox=home / "inbox",
            archive=home / "archive",
            quarantine=home / "quarantine",
        )


def _merge(obj: Any, overrides: Mapping[str, Any]) -> Any:
    """Return a copy of dataclass ``obj`` with ``overrides`` applied, recursing into sections."""
    known = {f.name: f for f in fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in known:
            msg = f"unknown setting {key!r} in section {type(obj).__name__}; expected one of {sorted(known)}"
            raise ValueError(msg)
        current = getattr(obj, key)
        if is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = _merge(current, value)
        elif isinstance(current, Path) or (current is None and key.endswith(("rules", "path"))):
            changes[key] = Path(value)
        elif isinstance(current, tuple):
            changes[key] = tuple(value)
        else:
            changes[key] = value
    return replace(obj, **changes)


def _alert_settings(data: Mapping[str, Any], config_file: Path) -> AlertSettings:
    """Alert settings from ``alert_rules = "<file>"`` and ``[alerts]`` of ``chimera.toml``."""
    rules_file = data.get("alert_rules")
    section = data.get("alerts")
    if rules_file is None and section is None:
        return packaged_alert_settings()
    return load_alert_settings(
        None if rules_file is None else Path(rules_file),
        overrides=section,
        overrides_source=f"{config_file.name} [alerts]",
    )


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    config_file: Path | None = None,
    home: Path | None = None,
) -> Settings:
    """Build the settings from defaults, an optional TOML file and the environment.

    Parameters
    ----------
    env
        Environment mapping; ``os.environ`` when None.
    config_file
        TOML file; else ``CHIMERA_CONFIG``; else ``<home>/chimera.toml`` when it exists.
    home
        Data root, overriding ``CHIMERA_HOME`` (the CLI's ``--home``).
    """
    env = os.environ if env is None else env
    home = home if home is not None else Path(env.get("CHIMERA_HOME", "chimera-data"))
    settings = Settings().with_home(home)
    path = config_file or (Path(env["CHIMERA_CONFIG"]) if "CHIMERA_CONFIG" in env else None)
    if path is None and (home / "chimera.toml").is_file():
        path = home / "chimera.toml"
    if path is not None:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        settings = replace(settings, alerts=_alert_settings(data, path))
        data = {k: v for k, v in data.items() if k not in {"alerts", "alert_rules"}}
        settings = _merge(settings, data)
        if "home" in data:
            settings = settings.with_home(Path(data["home"]))
            settings = _merge(settings, {k: v for k, v in data.items() if k != "home"})
    if "CHIMERA_WAREHOUSE" in env:
        settings = replace(settings, warehouse=Path(env["CHIMERA_WAREHOUSE"]))
    if "CHIMERA_INBOX" in env:
        settings = replace(settings, inbox=Path(env["CHIMERA_INBOX"]))
    if "CHIMERA_SMTP_PASSWORD" in env:
        settings = replace(settings, smtp_password=env["CHIMERA_SMTP_PASSWORD"])
    if "CHIMERA_PREFECT_API_URL" in env:
        settings = replace(settings, prefect_api_url=env["CHIMERA_PREFECT_API_URL"])
    return settings
