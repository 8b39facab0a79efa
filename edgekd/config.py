"""Typed configuration of every pipeline stage.

Defaults are what ``edgekd compress`` uses when an option is not given; the resolved config is
written into ``report.json`` so that a run can be reproduced exactly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Preprocessing:
    """What the device must do to a raw image before the model sees it (recorded in the report)."""

    image_size: int | None = None  # resize to N×N (bilinear, antialiased); None keeps the data's size
    mean: tuple[float, ...] = (0.5,)  # per channel, applied after scaling to [0, 1]; one value is broadcast
    std: tuple[float, ...] = (0.5,)  # per channel; one value is broadcast
    # Filled in by the data loader: "pixel/255 -> resize -> (x - mean) / std", channels, layout.
    channels: int | None = None  # input channels the model takes (1 grayscale, 3 RGB)
    layout: str = "NCHW"  # tensor layout fed to every runtime

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale"] = "x / 255"
        d["order"] = ["to_float", "scale", "resize", "normalize"]
        d["interpolation"] = "bilinear (antialias)"
        return d


@dataclass
class DataOptions:
    """How a manifest or DICOM dataset is read and split (edgekd/data/manifest.py, dicom.py, splits.py)."""

    window: tuple[float, float] | str | None = None  # DICOM VOI: (center, width), "minmax", or None: the file's VOI LUT / window, else the full stored range
    frame: int = 0  # the frame of a multi-frame DICOM object (0: the first)
    split_by: str | None = None  # manifest column that groups samples (patient_id) for seeded, stratified splits; "file": each image alone
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test shares when split_by makes the splits

    @classmethod
    def from_dict(cls, d: dict | None) -> DataOptions:
        """Back from report.json's ``config.data_options`` (lists become tuples; absent: the defaults)."""
        d = dict(d or {})
        if isinstance(d.get("window"), list):
            d["window"] = tuple(d["window"])
        if "split_fractions" in d:
            d["split_fractions"] = tuple(d["split_fractions"])
        return cls(**d)


@dataclass
class DistillConfig:
    """Knowledge distillation: loss = alpha·CE(labels) + (1 − alpha)·T²·KL(teacher ‖ student).

    The training budget is counted in optimizer steps, not epochs (a few hundred images get as many
    steps as a few thousand): see :func:`edgekd.distill.schedule.default_steps`.
    """

    student: str | None = None  # timm model name, or "from-teacher"; None: from-teacher when the teacher converts, else the profile's student
    student_weights: Path | None = None  # pretrained weights for a zoo student (safetensors or weights_only state_dict)
    max_steps: int | None = None  # optimizer steps; None: derived from the train-set size (stated in the report)
    batch_size: int | None = None  # None: the task's (64 images; 8 for segmentation, each image is H·W pixel samples)
    lr: float = 3e-3  # AdamW peak learning rate: linear warm-up, then cosine over the whole budget
    warmup_fraction: float = 0.05  # share of the budget spent warming up the learning rate
    weight_decay: float = 1e-4
    temperature: float | None = None  # T: softens both distributions; None: the task's (4; 1 per pixel for segmentation)
    alpha: float = 0.3  # weight of the hard-label CE term
    min_fraction: float = 0.6  # no early stop before this share of the budget has been trained
    patience: int = 4  # after min_fraction: evaluations without a lower val KL before stopping
    evaluations: int = 20  # val evaluations over the budget at most (selection by val KL to the teacher, AUC as a
    # guard); fewer when the budget trains on less than 2 val splits' worth of images between two (trainer.EVAL_GAP_VAL_SPLITS)
    # consistent augmentation (function matching): the teacher sees exactly the view the student sees
    augment: str = "medical"  # "medical" (small affine, brightness, contrast, gamma, noise) or "none"
    flips: bool = False  # horizontal flips: off by default (anatomy has a left and a right)
    mixup: float = 0.5  # probability that a batch is mixed (Beta(1,1) weights between image pairs); 0 disables
    teacher_mode: str = "auto"  # "online" (teacher on every batch), "cached" (views precomputed), "auto" (measured)
    cached_views: int | None = None  # augmented views per image in cached mode; None: derived from the budget
    feature_kd: float = 0.0  # weight of a FitNets-style hint loss on intermediate features (torch teachers); 0 disables
@dataclass
class PruneConfig:
    """Structural (channel) pruning with Torch-Pruning's dependency graph."""

    # fraction of the student's MACs to remove (0 disables channel pruning); None: the task's default
    # (edgekd.tasks: 0.8 for classifiers, 0 for segmentation: depth pruning alone, as measured)
    ratio: float | None = None
    steps: int = 3  # iterative steps toward the ratio
    finetune_steps: int | None = None  # distillation steps after each pruning step; None: 8 % of the distill budget
    recovery_steps: int | None = None  # after the last step; None: 30 % of the distill budget
    importance: str = "magnitude"  # "magnitude" (group L2 norm) or "taylor" (first-order, uses a batch)
    # whole shape-preserving blocks to remove before channel pruning (fewer layers: faster on CPUs);
    # None: half of the student's removable blocks, 0: none
    depth: int | None = None


@dataclass
class QuantConfig:
    """INT8 with NNCF: post-training quantization, then quantization-aware fine-tuning."""

    enabled: bool = True
    calibration_samples: int = 300  # drawn (seeded) from the train split
    qat_steps: int | None = None  # distillation steps on the quantized model (0: PTQ only); None: 10 % of the distill budget
    qat_lr: float = 1e-4


@dataclass
class BenchConfig:
    """Latency and memory measurement (method: benchmarks/README.md, "Latency method")."""

    warmup: int = 20  # untimed calls first
    iterations: int = 200  # timed calls, at least
    max_iterations: int = 5000  # adaptive: more calls until the median is stable (= iterations: fixed count)
    rel_ci: float = 0.01  # stable: the median's 95 % CI within ±1 % of it
    max_seconds: float = 3.0  # stop adding calls after this much timing per figure
    threads: int | None = None  # None: the target profile's thread count
    # binary operating point, chosen on val: "teacher-sensitivity" (each model's threshold reaches the
    # teacher's val sensitivity at the teacher's Youden threshold) or "youden" (each model's own Youden's J)
    operating_point: str = "teacher-sensitivity"
    bootstrap_resamples: int = 1000  # seeded percentile bootstrap of the test AUC (95 % CI); 0 disables
    batch: int | None = None  # second latency batch besides 1; None: the target profile's batch
    memory: bool = True  # peak memory of each ONNX Runtime / OpenVINO session, in a child process
    # robustness under acquisition shift (edgekd.robust): val and test images scored per shift (a seeded
    # subset when a split is larger); 0: not evaluated (then --max-robust-drop cannot be used); None: the
    # task's (512 for classification, 64 for segmentation: edgekd.tasks)
    robust_images: int | None = None
    # segmentation: a predicted region (8-connected) of a class smaller than this many pixels becomes
    # background, for each model whose val Dice this does not lower (edgekd.tasks.segmentation); None:
    # half the 1st-percentile region area in the train masks; 0: never
    min_region: int | None = None


@dataclass
class LowRankStageConfig:
    """Low-rank factorization after pruning (edgekd.lowrank): off unless an energy is set (the search may set it)."""

    energy: float | None = None  # truncated-SVD energy kept per layer, e.g. 0.9; None: no factorization
    finetune_steps: int | None = None  # distillation steps after factorizing; None: the prune recovery budget


@dataclass
class SearchConfig:
    """``compress --search``: students, depth, width, low rank and precision chosen by measurement (edgekd.search)."""

    budget: str | None = None  # wall-clock budget, e.g. "30m"; None: no search (the options as given)
    lowrank: bool = False  # add low-rank energies to the space (measured not to win: off by default)
    max_trials: int | None = None  # distinct configurations at most; None: until the budget is spent
    max_latency_ms: float | None = None  # batch-1 p50 budget; None: the target profile's latency_budget_ms
    max_size_mb: float | None = None  # the deployable file, MiB; None: no size budget
    latency_from: Path | None = None  # a merged report.json with device figures: fits the latency model (TensorRT targets)


@dataclass
class CompressConfig:
    """Everything one ``edgekd compress`` run needs."""

    target: str = "intel-cpu"
    out: Path = Path("build")
    teacher: str | None = None  # path, or "timm:<arch>"; None with data=None: the embedded demo
    teacher_weights: Path | None = None  # weights for a timm teacher (state_dict .pt or .safetensors)
    trust_checkpoint: bool = False  # allow loading a pickled nn.Module (runs arbitrary code)
    data: Path | None = None  # .npz (MedMNIST layout) or an image folder with train/ val/ test/
    unlabelled: Path | None = None  # extra images (folder or images-only .npz) that only the teacher labels
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    data_options: DataOptions = field(default_factory=DataOptions)  # manifests and DICOM: window, frame, splits
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    lowrank: LowRankStageConfig = field(default_factory=LowRankStageConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    # shipping budgets; None: the target profile's (targets/*.yaml). A model ships only when both hold.
    max_auc_drop: float | None = None  # test AUC >= teacher AUC - this
    max_sensitivity_drop: float | None = None  # test sensitivity >= teacher sensitivity - this
    max_dice_drop: float | None = None  # segmentation: test mean Dice >= teacher mean Dice - this
    task: str = "classification"  # "classification" (N×K logits) or "segmentation" (N×K×H×W, masks)
    # where training runs (edgekd._device): "auto" (CUDA when torch sees a GPU, else the CPU), "cpu", "cuda",
    # "cuda:N"; the teacher's logits, distillation, prune fine-tunes and QAT. Export, lowering and the benchmark
    # always run on the CPU and the target runtime.
    device: str = "auto"
    max_robust_drop: float | None = None  # mean drop under shift <= the teacher's + this (the profile's; off there by default)
    seed: int = 0
    overwrite: bool = False  # replace an existing --out directory
    max_samples: int | None = None  # cap each split (quick runs and tests); None uses everything
    cache_dir: Path | None = None  # finished stages, reused by later runs; None: .edgekd-cache beside out
    force: bool = False  # re-run every stage even when a finished one matches
    archive: bool = False  # also write <out>/bundle.tar.gz (the bundle folder as one verifiable file)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()

        def _plain(v: Any) -> Any:
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, dict):
                return {k: _plain(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [_plain(x) for x in v]
            return v

        return _plain(d)
