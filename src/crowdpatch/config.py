"""Typed project configuration, stored as ``crowdpatch.toml`` in the project directory.

Every default is a field here, with a description saying where it comes from, so that no number
that changes a result hides in code.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field

CONFIG_FILENAME = "crowdpatch.toml"
DB_FILENAME = "crowdpatch.db"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SaliencyConfig(_Section):
    """Step 1: salient-object proposals that a human verifies with one yes/no."""

    backend: str = Field("spectral", description="Saliency backend name: spectral | finegrained | gt.")
    weights: str | None = Field(None, description="Model file for backends that need one.")
    scales: list[int] = Field([256, 512], description="Longest-side sizes the map is computed at, then fused (mean).")
    threshold: str = Field("adaptive", description="'adaptive' (2x the map's mean) or a number in [0, 1].")
    min_area: float = Field(0.01, description="Clusters smaller than this share of the image are dropped.")
    top_k: int = Field(3, ge=1, description="Keep at most this many clusters, by saliency mass.")
    padding: float = Field(0.15, ge=0, description="Each cluster box grows by this share of its side on every side.")
    proposer: Literal["clusters", "bing"] = Field(
        "clusters",
        description="Regions to verify: 'clusters' of the saliency map, or 'bing' objectness boxes (OpenCV contrib).",
    )
    proposer_model: str | None = Field(
        None, description="Folder of the BING model files (ObjNessB2W8*.yml.gz) for proposer 'bing'."
    )
    finetune_every: int = Field(
        0,
        ge=0,
        description="Fine-tune the csnet backend on the crowd's finished masks after every this many finished "
        "images, and recompute the maps of images not started yet (0: off; see README, 'Precise masks').",
    )
    finetune_epochs: int = Field(3, ge=1, description="Epochs of each fine-tuning run.")
    finetune_learning_rate: float = Field(2e-5, gt=0, le=0.1, description="Adam's learning rate when fine-tuning.")


class PatchConfig(_Section):
    """Step 2: which windows (or grid cells) of a region workers are asked about."""

    presentation: Literal["single", "grid"] = Field(
        "grid",
        description="'grid': one screen of cells, click all with the target "
        "(default: cheaper per unit of mask quality, see docs/benchmarks.md). "
        "'single': one window per screen, yes/no (the paper).",
    )
    max_depth: int = Field(
        2, ge=1, le=8, description="Deepest lattice level asked (level 1 = 3 x 3 windows of half the region's side)."
    )
    min_side: int = Field(
        8, ge=2, description="A window is not subdivided when its children would be narrower than this (pixels)."
    )
    grid_size: int = Field(8, ge=2, le=32, description="Cells per side of one grid screen.")
    combine: Literal["min", "mean"] = Field(
        "min", description="How the finest windows covering a pixel combine: 'min' = object only where they agree."
    )
    mask_threshold: float = Field(
        0.5, gt=0, lt=1, description="Soft-mask value at or above which a pixel is object in the binary mask."
    )
    refine: Literal["none", "grabcut"] = Field(
        "grabcut",
        description="'grabcut': snap the mask to the image's edges within one cell of the crowd's boundary "
        "(OpenCV GrabCut, no human time); 'none': the crowd's cells and windows as they are.",
    )


class CrowdConfig(_Section):
    """Task planning and quality control."""

    planner: Literal["fixed", "adaptive", "precise"] = Field(
        "fixed",
        description="Which questions are asked: "
        "'fixed' (the paper: every region's lattice or grid, fixed redundancy) or "
        "'adaptive' (saliency prior + answers so far decide what is worth asking next; see [adaptive]) or "
        "'precise' (the target's extreme points, then a pick among masks computed from them; [adaptive] applies).",
    )
    votes: int = Field(3, ge=1, description="Votes wanted per question.")
    early_stop: bool = Field(True, description="Stop asking a question once its first two votes agree.")
    gold_rate: float = Field(
        0.05, ge=0, le=1, description="Share of a worker's questions that are gold (known-answer) checks."
    )
    lease_seconds: int = Field(
        120, ge=1, description="How long a worker holds a question before it is offered to others."
    )
    spammer_gold_accuracy: float = Field(
        0.5, gt=0, lt=1, description="Gold accuracy of a worker who does not look (yes/no at random)."
    )
    honest_gold_accuracy: float = Field(0.85, gt=0, lt=1, description="Gold accuracy expected of an honest worker.")
    false_ban_rate: float = Field(
        0.01,
        gt=0,
        lt=0.5,
        description="Accepted chance of banning an honest worker (Wald's sequential test between the two accuracies).",
    )
    min_seconds_per_answer: float = Field(0.3, ge=0, description="Answers faster than this are flagged as too fast.")
    too_fast_stop_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A worker whose share of too-fast answers reaches this is stopped (after too_fast_min_answers).",
    )
    too_fast_min_answers: int = Field(
        10, ge=1, description="Answers a worker gives before the too-fast rule can stop it."
    )
    constant_run_answers: int = Field(
        12,
        ge=2,
        description="A worker whose last this-many yes/no answers (gold aside) are all the same "
        "is checked against the crowd.",
    )
    constant_run_grid_answers: int = Field(
        5,
        ge=2,
        description="The same for grid screens: this many identical cell sets in a row (e.g. always none, always all).",
    )
    constant_min_crowd_answers: int = Field(
        5,
        ge=1,
        description="Questions of the run that other workers answered, "
        "needed before the constant rule may stop anyone.",
    )
    constant_min_disagreement: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A constant run stops the worker when on at least this share of its questions the other workers' "
        "majority answered differently: the crowd saw different things where the worker kept answering the same.",
    )


class AdaptiveConfig(_Section):
    """The adaptive planner: which answer is worth buying next (crowd.planner = 'adaptive')."""

    confidence: float = Field(
        0.95, gt=0.5, lt=1, description="A grid cell is decided once its posterior is this sure either way."
    )
    region_confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1,
        description="A verification or outline check (a whole region rides on it) "
        "is decided once this sure either way.",
    )
    max_votes: int = Field(
        3, ge=1, description="Most answers bought for one question (or cell) while it stays uncertain."
    )
    prior_weight: float = Field(
        4.0,
        gt=0,
        description="Pseudo-answers behind a worker's assumed accuracy (crowd.honest_gold_accuracy) "
        "before its gold says more.",
    )
    outline: bool = Field(
        True,
        description="Ask 'does this outline cover the <target> well?' "
        "about the saliency mask of a verified region first.",
    )
    outline_min_rate: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Stop asking outline questions once fewer than this share of them is accepted "
        "(after outline_min_seen).",
    )
    outline_min_seen: int = Field(
        10, ge=1, description="Outline decisions seen before their acceptance rate can switch them off."
    )
    saliency_prior: float = Field(
        0.3,
        ge=0,
        lt=0.5,
        description="How far the saliency map moves a grid cell's prior from 0.5 (0 = ignore the map).",
    )
    neighbour_prior: float = Field(
        0.35, ge=0, lt=0.5, description="How far a cell's 8 neighbours' current verdicts move its prior from 0.5."
    )
    first_look: int = Field(
        4,
        ge=2,
        le=32,
        description="Cells per side of the first, coarse grid vote; the boundary rounds use patches.grid_size.",
    )
    coarse_weight: float = Field(
        0.75,
        gt=0,
        le=1,
        description="Share of an answer's weight a coarse cell's vote lends to each finer cell under it.",
    )
    max_rounds: int = Field(
        4, ge=0, description="Most boundary rounds (grid screens of only the uncertain cells) per region."
    )
    max_cell_questions: int = Field(16, ge=0, description="Most single-cell yes/no follow-ups per region.")
    budget_seconds: float | None = Field(
        None, gt=0, description="Human seconds per image the planner may spend (modeled or measured); none = no budget."
    )


class PreciseConfig(_Section):
    """The precise planner: extreme points, a pick among candidate masks, clicks on its errors (crowd.planner =
    'precise')."""

    correction_rounds: int = Field(
        1,
        ge=0,
        le=5,
        description="Rounds of 'click where the outline is wrong' after a pick (each by another worker; "
        "a round answered 'fits' ends them). One round buys most of the precision: a second added "
        "0.00-0.03 IoU for 3-8 s per image on every real set (docs/benchmarks.md).",
    )


class AggregationConfig(_Section):
    """Votes -> per-question posteriors (crowd-kit) -> masks."""

    method: Literal["ds", "mv", "glad"] = Field(
        "ds", description="crowd-kit aggregator: Dawid-Skene, majority vote or GLAD."
    )
    drop_banned: bool = Field(
        True, description="Ignore the answers of banned workers (else they are kept and weighted by the model)."
    )


class TimeModel(_Section):
    """Median human seconds per action, from the literature.

    The fields name their sources (Papadopoulos et al. 2016, Searles et al. 2023, Lin et al. 2014); simulated
    answer times are drawn from a lognormal around these medians.
    """

    yes_no: float = Field(1.6, description="Yes/no verification of one item (Papadopoulos et al. 2016).")
    grid_screen: float = Field(
        10.3, description="One grid-selection screen of up to grid_base_cells cells (Searles et al. 2023, reCAPTCHAv2)."
    )
    grid_base_cells: int = Field(16, description="Cells covered by grid_screen.")
    grid_extra_cell: float = Field(0.64, description="Seconds per cell beyond grid_base_cells (our assumption).")
    polygon: float = Field(79.0, description="One polygon per object (COCO, Lin et al. 2014).")
    box_extreme: float = Field(
        7.0, description="The four extreme points of one object (Papadopoulos et al. 2017, extreme clicking)."
    )
    pick_option: float = Field(
        1.6, description="Judging one outline of a pick screen: a yes/no verification per outline shown."
    )
    click: float = Field(2.4, description="One click on a point of an object (Bearman et al. 2016).")
    box_drawn: float = Field(34.5, description="Drawn bounding box.")
    sigma: float = Field(0.5, gt=0, description="Lognormal sigma of simulated answer times.")

    def correction_median(self, clicks: int) -> float:
        """Median seconds to judge an outline (a yes/no) and click ``clicks`` of its errors."""
        return self.yes_no + self.click * clicks

    def pick_median(self, options: int) -> float:
        """Median seconds for a pick among ``options`` outlines."""
        return self.pick_option * options

    def grid_median(self, cells: int) -> float:
        """Median seconds for one grid screen with ``cells`` cells."""
        return self.grid_screen + max(0, cells - self.grid_base_cells) * self.grid_extra_cell


class SimulationConfig(_Section):
    """Simulated crowd: workers who answer from the ground-truth masks, and a share of spammers."""

    workers: int = Field(20, ge=1, description="Simulated workers answering in parallel.")
    worker_error: float = Field(0.1, ge=0, le=0.5, description="Mean per-worker probability of flipping an answer.")
    spammers: float = Field(0.1, ge=0, le=1, description="Share of workers who are spammers (of the spammer_kinds).")
    threshold_low: float = Field(
        0.05, ge=0, le=1, description="Lowest per-worker 'yes' threshold (share of a window covered by the object)."
    )
    threshold_high: float = Field(0.3, ge=0, le=1, description="Highest per-worker 'yes' threshold.")
    seed: int = Field(0, description="Seed for workers, answers and times.")
    rounds: int = Field(
        0,
        ge=0,
        description="Propose and finish the images in rounds of this many, in their order (0: all at once; "
        "[saliency] finetune_every sets it when it is 0).",
    )
    spammer_kinds: list[Literal["random", "always_yes", "always_no", "too_fast"]] = Field(
        ["random", "always_yes"],
        min_length=1,
        description="Kinds the spammers are drawn from, in turn: random, always_yes, always_no (constant answers), "
        "too_fast (random answers at a superhuman TOO_FAST_MEDIAN_SECONDS).",
    )


def _secret() -> str:
    return secrets.token_urlsafe(24)


def _default_api_key() -> str | None:
    # With CROWDPATCH_API_KEY set, the key lives in the environment only, never in the project file.
    return None if os.environ.get("CROWDPATCH_API_KEY") else _secret()


class ServerConfig(_Section):
    """`crowdpatch serve`: the requester's key, the platforms' completion codes, and the signing secrets."""

    api_key: str | None = Field(
        default_factory=_default_api_key,
        description="Requester API key (dashboard, progress, exports). "
        "CROWDPATCH_API_KEY overrides it; generated at init otherwise.",
    )
    session_secret: str = Field(
        default_factory=_secret, description="Signs worker session tokens and image links (HMAC-SHA256)."
    )
    invite_secret: str = Field(
        default_factory=_secret, description="Signs local invite tokens and local completion codes."
    )
    prolific_completion_code: str = Field(
        default_factory=lambda: secrets.token_hex(4).upper(),
        description="Completion code of the Prolific study (set it to the study's).",
    )
    prolific_complete_url: str = Field(
        "https://app.prolific.com/submissions/complete?cc={code}",
        description="Where a finished Prolific worker is sent.",
    )
    answers_per_session: int = Field(20, ge=1, description="Answers one worker session gives before it is completed.")
    pay_stopped_workers: bool = Field(
        False,
        description="Whether a worker stopped by quality control still gets the completion code, "
        "so the platform pays for the answers given "
        "(Prolific: prolific_completion_code behind a button on the stop page; MTurk: a button that submits the HIT). "
        "false: the stop page says they were stopped, without a code, and /sessions/complete refuses them. "
        "Local invites always show their code: the dashboard lists it beside 'stopped by'.",
    )
    complete_without_answers: bool = Field(
        False,
        description="Whether a worker session that gave no answer may still be completed (a Prolific code, "
        "an MTurk submit with answers 0, a local code). false: POST /sessions/complete refuses it (409) "
        "and the worker page says why.",
    )
    polygon_votes: int = Field(1, ge=1, description="Polygons wanted per image in polygon mode (the baseline study).")
    session_hours: float = Field(12.0, gt=0, description="How long a worker's session token stays valid.")
    max_body_bytes: int = Field(
        65_536,
        ge=1_024,
        description="Largest request body accepted (bytes, streamed or not); larger ones get 413. "
        "A 1,000-point polygon is ~25 KB.",
    )
    rate_limit_worker_per_second: float = Field(
        10.0,
        ge=0,
        description="Sustained requests per second one worker session may make (0: no limit). "
        "A real worker makes ~3 per answer; simulated workers (opened with the API key) are not limited.",
    )
    rate_limit_worker_burst: int = Field(
        30, ge=1, description="Requests one worker may make at once before the per-second rate applies."
    )
    rate_limit_ip_per_second: float = Field(
        50.0,
        ge=0,
        description="Sustained requests per second from one IP address that carry no worker token or API key "
        "(0: no limit).",
    )
    rate_limit_ip_burst: int = Field(
        200, ge=1, description="Burst allowed per IP address: a lab behind one NAT opening its sessions together."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser page served elsewhere; "
        "empty: same origin only (no CORS headers).",
    )

    def effective_api_key(self) -> str:
        key = os.environ.get("CROWDPATCH_API_KEY") or self.api_key
        if not key:
            raise ValueError("no requester API key: set CROWDPATCH_API_KEY or [server].api_key in crowdpatch.toml")
        return key


class ProjectConfig(_Section):
    """Everything one project needs to know; lives in ``crowdpatch.toml``."""

    name: str
    target: str = Field("object", description="What workers look for: 'Is part of the <target> here?'.")
    db_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file crowdpatch.db in the project directory."
    )
    images_dir: str | None = Field(None, description="Folder the image paths are relative to.")
    masks_dir: str | None = Field(None, description="Optional folder of ground-truth masks (same file stem).")
    saliency: SaliencyConfig = SaliencyConfig()
    patches: PatchConfig = PatchConfig()
    crowd: CrowdConfig = CrowdConfig()
    adaptive: AdaptiveConfig = AdaptiveConfig()
    precise: PreciseConfig = PreciseConfig()
    aggregation: AggregationConfig = AggregationConfig()
    time_model: TimeModel = TimeModel()
    simulation: SimulationConfig = SimulationConfig()
    server: ServerConfig = Field(default_factory=ServerConfig)

    def resolved_db_url(self, project_dir: Path) -> str:
        return self.db_url or f"sqlite:///{(project_dir / DB_FILENAME).resolve()}"


class ConfigError(ValueError):
    """The project's configuration is missing or invalid."""


def load_config(project_dir: Path) -> ProjectConfig:
    path = Path(project_dir) / CONFIG_FILENAME
    if not path.is_file():
        raise ConfigError(f"{path}: not a crowdpatch project (no {CONFIG_FILENAME}); create one with 'crowdpatch init'")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return ProjectConfig.model_validate(data)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def save_config(project_dir: Path, config: ProjectConfig) -> Path:
    """Write the config file, unless it already says the same.

    A config that did not change is not written again: `crowdpatch serve` saves it at every start
    (to keep secrets it generated), and a server restarted on a full disk must start without
    writing anything, answering 503 until space is freed.
    """
    path = Path(project_dir) / CONFIG_FILENAME
    data = config.model_dump(mode="json", exclude_none=True)
    text = tomli_w.dumps(data)
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass  # missing or unreadable: written below
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
