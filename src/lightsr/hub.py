"""Which weights a name means, and the one rule every command uses to turn ``--weights`` /
``--model`` / ``--checkpoint`` / ``--scale`` into a model.

**Named weights** (:data:`WEIGHTS`, ``lightsr list --weights``): every file lightsr can run, its
own trained weights (bundled in the package) and the authors' releases (a URL at a pinned
commit), each with architecture, scale, source, licence, training data, size, sha256 and the
paper's figures. :func:`fetch_weights` resolves a name to a lightsr checkpoint on disk:

1. bundled files are used in place;
2. else the converted checkpoint in lightsr's cache, if its recorded sha256 still matches;
3. else the published file, found by sha256 in the user's folder of already-downloaded files
   (``--weights-dir`` / ``$LIGHTSR_WEIGHTS_DIR``, for air-gapped machines), or in the cache's
   downloads, or downloaded (progress bar), verified (size and sha256) and written atomically;
   then converted once to a lightsr checkpoint and cached. The authors' pickles are read with
   ``weights_only`` (no code runs). Offline, or on a checksum mismatch, a
   :class:`~lightsr.errors.CheckpointError` names the file, the URL and where to put it.

The cache is the platform's user cache folder (``~/.cache/lightsr`` on Linux), or
``$LIGHTSR_CACHE``.

**int8 entries** (``a2f_sd_x4_int8``, ...): the int8 quantization of another entry (its
``base``), made at run time by :mod:`lightsr.quantize` and cached. They have no file of their
own (they resolve to the base's file and sha256); naming one means running at int8, and a
command that cannot run int8 says so and names the base. Their measured cost is
:func:`measured_cost` (int8 - base PSNR-Y per set, ``benchmarks/zoo_table.py``).

The rule (:func:`resolve_model`), the same for ``upscale``, ``eval``, ``profile`` and ``export``:

0. ``--weights NAME``: the named weights (never together with ``--checkpoint``); an int8
   entry gives its base's model and ``precision="int8"``.
1. ``--checkpoint FILE``: a lightsr checkpoint, or an authors' released file; ``--model`` and
   ``--scale``, when given, must agree with what the file holds.
2. ``--model NAME`` of a model with nothing to learn (``bicubic``): built as is.
3. ``--model NAME``: its bundled weights at the scale (``weights/<name>_x<s>.safetensors``, or
   the bundled default when the default is that architecture).
4. ``--model NAME`` with no weights anywhere: an error, unless the command accepts random
   weights (``eval`` does, for a floor; it says so).
5. nothing: the bundled default model at the scale (x4 unless ``--scale``).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .atomic import atomic_write
from .checkpoint import load, load_any, load_official, read_metadata, save
from .errors import CheckpointError, ConfigError, LightSRError
from .models.base import SRModel
from .registry import create_model, get_spec

#: Checkpoints shipped inside the package.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The scale a command means when none is given.
DEFAULT_SCALE = 4


@dataclass
class ResolvedModel:
    """A model and where its weights came from, in words (printed by the commands).
    ``precision``: the precision the name means ("int8" for an int8 entry, whose ``model`` is
    its base's fp32 model), "" where the command chooses."""

    model: SRModel
    source: str
    precision: str = ""


def bundled_weights(name: str, scale: int) -> Path | None:
    """The path of a checkpoint shipped with the package (``weights/<name>_x<scale>.safetensors``),
    or None."""
    path = WEIGHTS_DIR / f"{name}_x{int(scale)}.safetensors"
    return path if path.is_file() else None


def default_model(scale: int = DEFAULT_SCALE) -> SRModel:
    """The bundled default model for ``scale`` (``weights/default_x<scale>.safetensors``)."""
    path = bundled_weights("default", scale)
    if path is None:
        raise CheckpointError(
            f"no bundled default weights for x{scale} in this installation ({WEIGHTS_DIR}). "
            "Pass --checkpoint PATH (a lightsr checkpoint, or the authors' file such as "
            "a2f_sd_x4.pt), or --model bicubic."
        )
    return load(path, expect_scale=scale)


def check_scale(scale: int | None) -> int | None:
    """``scale`` as given, validated: None, or a positive integer (``--scale 0`` is an error,
    never a silent default)."""
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"scale must be a positive integer (2, 3 or 4), not {scale!r}.")
    return scale


# ---------------------------------------------------------------------------------------------
# Named weights
# ---------------------------------------------------------------------------------------------

_A2F_REPO = "wxxxxxxh/A2F-SR"
_A2F_COMMIT = "91c88af6c71e3f183f6161cc7efab20aa4ad167d"
_FMEN_REPO = "NJU-Jet/FMEN"
_FMEN_COMMIT = "a1def169d0e2c99ecebdb1b08bf567f329c3a566"
_NTIRE_REPO = "ofsoundof/NTIRE2022_ESR"
_NTIRE_COMMIT = "e95ba4a4916bb13d6348f7ee172827e2452e8a31"
_IMDN_REPO = "Zheng222/IMDN"
_IMDN_COMMIT = "8f158e6a5ac9db6e5857d9159fd4a6c4214da574"
_A2F_PAPER = "A2F (Wang et al., ACCV 2020), Table 6"
_IMDN_PAPER = "IMDN (Hui et al., ACM MM 2019), Table 3"
_MAFFSRN_PAPER = "MAFFSRN (Muqeet et al., ECCVW 2020), Table 2"


def _raw(repo: str, commit: str, path: str) -> str:
    """The raw-file address of ``path`` in a public repository at a pinned commit."""
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


@dataclass(frozen=True)
class WeightsEntry:
    """One named weights file: what it holds, where it comes from, how to check it.

    ``bundled``: a file name in the package's ``weights/`` folder (used in place);
    else ``url`` (a pinned commit). ``sha256`` and ``size``: of the file as published (for a
    bundled file, as shipped: the lineage of a run started from it names this hash).
    ``format``: "lightsr" (a self-describing checkpoint) or "official" (an authors' file,
    converted once to a lightsr checkpoint and cached). ``paper``: the paper's PSNR-Y per set.
    """

    name: str
    arch: str
    scale: int
    source: str  # "trained here" | "authors' release"
    licence: str
    training_data: str
    paper_ref: str = ""
    paper: Mapping[str, float] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    bundled: str = ""
    url: str = ""
    sha256: str = ""
    size: int = 0
    format: str = "lightsr"
    default: bool = False
    notes: str = ""
    #: The degradation preset its training LR was made with (lightsr.data.degrade), "" for
    #: the clean MATLAB-bicubic LR of the papers. "photo": for JPEG, noisy, blurred photos.
    degradation: str = ""
    #: "" (as trained: fp32 weights, the command picks the precision) or "int8": this entry
    #: is the int8 quantization of the entry ``base`` (static QDQ, :mod:`lightsr.quantize`, made
    #: at run time and cached). It has no file of its own: file fields, sha256 and size are the
    #: base's, and selecting it means running at int8. Its measured cost (int8 - base PSNR-Y
    #: per set) is the difference of the two entries' rows in :data:`MEASURED_FILE`
    #: (:func:`measured_cost`).
    precision: str = ""
    #: The entry an int8 entry quantizes ("" for an entry with weights of its own).
    base: str = ""
    #: The entry whose weights this one was fine-tuned from, same architecture and scale (""
    #: for none): the photo models name the clean model they started from. The weights on the
    #: straight line between the two (:func:`blend_weights`, ``--denoise-strength``) trade
    #: restoration of degraded input for fidelity on clean input.
    fine_tuned_from: str = ""


def _sets(*values: float) -> dict[str, float]:
    return dict(zip(("Set5", "Set14", "B100", "Urban100", "Manga109"), values))


_291 = "T91 + BSD200 (the classic 291 images), bicubic LR"
# MAFFSRN's last x4 stage and its x2/x3 runs also saw every image downscaled (hr_downscales in
# configs/bundled/maffsrn_291_x*.toml): more distinct content per epoch from the same images.
_291_DOWNSCALED = (
    "T91 + BSD200 (the classic 291 images) and copies at 0.9/0.8/0.7/0.6 of their size, bicubic LR"
)
_DIV2K = "DIV2K (800 images), bicubic LR"
_OURS = "MIT (lightsr)"

#: Every weights file, in the order ``lightsr list --weights`` prints them (with the int8
#: entries of :data:`_INT8_OF` after their bases).
_FILES: tuple[WeightsEntry, ...] = (
    *(
        WeightsEntry(
            name=f"a2f_sd_x{s}",
            arch="a2f_sd",
            scale=s,
            source="trained here",
            licence=_OURS,
            training_data=_291,
            paper_ref=_A2F_PAPER + " (trained on DIV2K)",
            paper=paper,
            bundled=f"default_x{s}.safetensors",
            sha256=sha,
            size=size,
            default=True,
            notes="lightsr's default; lineage and compute in docs/BUNDLED.md",
        )
        for s, paper, sha, size in (
            (
                2,
                _sets(37.91, 33.45, 32.08, 31.79, 38.52),
                "4e3152b0b2d9eaad1dee85bfb898cca6e28438a5651407afba565200609f3e1a",
                1265792,
            ),
            (
                3,
                _sets(34.23, 30.22, 29.01, 27.91, 33.29),
                "400e77d21df141bcf90af87733f75506ab0be594f15087f542c891fba638acb2",
                1276324,
            ),
            (
                4,
                _sets(32.06, 28.47, 27.48, 25.80, 30.16),
                "a4bc6a6bfa81615abe02d2503147e720aeb756e96a556c3f12d9212af861d893",
                1291000,
            ),
        )
    ),
    *(
        WeightsEntry(
            name=f"maffsrn_x{s}",
            arch="maffsrn",
            scale=s,
            source="trained here",
            licence=_OURS,
            training_data=_291_DOWNSCALED,
            paper_ref=_MAFFSRN_PAPER + " (trained on DIV2K)",
            paper=paper,
            bundled=f"maffsrn_x{s}.safetensors",
            sha256=sha,
            size=size,
            notes=f"the first public MAFFSRN weights (the authors released none); {gaps}; "
            "lineage in docs/MAFFSRN.md",
        )
        for s, paper, sha, size, gaps in (
            (
                2,
                _sets(37.97, 33.49, 32.14),
                "8ee2201165a339c4abc849175acb6c2b2695d1d7fc52b1411661ca5d9146d089",
                1644104,
                "Set5, Set14 and B100 within 0.5 dB of the paper",
            ),
            (
                3,
                _sets(34.32, 30.35, 29.09),
                "fefccdfd07e23d5fe793b73fc426958aa8970a4f569aed4ec82e89a16cba39d0",
                1709624,
                "Set5, Set14 and B100 within 0.5 dB of the paper",
            ),
            (
                4,
                _sets(32.18, 28.58, 27.57),
                "60c400e67dd4ca75446f54739a7c14052bd6e2bfc795f1d7f72f9e5763196e6d",
                1801368,
                "Set5 is 0.60 dB short of the paper, Set14/B100 within 0.5",
            ),
        )
    ),
    WeightsEntry(
        name="a2f_sd_photo_x4",
        arch="a2f_sd",
        scale=4,
        source="trained here",
        licence=_OURS,
        training_data="T91 + BSD200 (the classic 291 images), LR by the 'photo' degradation "
        "mixture (lightsr.data.degrade: blur, MATLAB bicubic, noise, JPEG q30-95)",
        bundled="photo_x4.safetensors",
        fine_tuned_from="a2f_sd_x4",
        sha256="1e27e0c5e2ddc50a5320d158b058c6b541816bf52d4054a4a12df57aec89d0c5",
        size=1292336,
        degradation="photo",
        notes="for JPEG, noisy or slightly blurred photos (PSNR-oriented, L1, no GAN); "
        "fine-tuned from a2f_sd_x4; measured and lineage in docs/PHOTO.md",
    ),
    WeightsEntry(
        name="a2f_sd_photo_x2",
        arch="a2f_sd",
        scale=2,
        source="trained here",
        licence=_OURS,
        training_data="T91 + BSD200 (the classic 291 images), LR by the 'photo' degradation "
        "mixture (lightsr.data.degrade: blur, MATLAB bicubic, noise, JPEG q30-95) with the HR "
        "blur narrowed to sigma 0.1-1.5",
        bundled="photo_x2.safetensors",
        fine_tuned_from="a2f_sd_x2",
        sha256="87270c1641f1e290ac2492d738a162ae804e5bc4050baa8a4761470f91d4fd3e",
        size=1267208,
        degradation="photo",
        notes="for JPEG, noisy or slightly blurred photos (PSNR-oriented, L1, no GAN); "
        "fine-tuned from a2f_sd_x2; on clean bicubic LR it is 1.81 / 1.16 / 0.87 dB under "
        "a2f_sd_x2 (Set5 / Set14 / B100), 0.95 / 0.58 / 0.53 at --denoise-strength 0.5; "
        "measured and lineage in docs/PHOTO.md",
    ),
    *(
        WeightsEntry(
            name=f"{arch}_x{s}_official",
            arch=arch,
            scale=s,
            source="authors' release",
            licence="none stated",
            training_data=_DIV2K,
            paper_ref=_A2F_PAPER,
            paper=paper,
            url=_raw(_A2F_REPO, _A2F_COMMIT, f"checkpoint/{folder}_x{s}/model_best.pt"),
            sha256=sha,
            size=size,
            format="official",
        )
        for arch, folder, s, size, sha, paper in (
            (
                "a2f_s",
                "AAF_S",
                3,
                1310446,
                "bf209a2d721dbdf88ab96e89179855e18de766706111f12cb121803b1fa068a2",
                _sets(34.06, 30.08, 28.92, 27.57, 32.86),
            ),
            (
                "a2f_s",
                "AAF_S",
                4,
                1337238,
                "75076b947c16fef754736ae6a377415febdad84e1803463870888d6d6a041078",
                _sets(31.87, 28.36, 27.41, 25.58, 29.77),
            ),
            (
                "a2f_sd",
                "AAF_SD",
                2,
                1277645,
                "919e07923db16e739ada396707c7c9f460f4bab3d9e06707159f8e2b594c95cf",
                _sets(37.91, 33.45, 32.08, 31.79, 38.52),
            ),
            (
                "a2f_sd",
                "AAF_SD",
                3,
                1288089,
                "ec0c035936549a07c91e87ea1b95d159786972857bf6290b1922fd130fa9918d",
                _sets(34.23, 30.22, 29.01, 27.91, 33.29),
            ),
            (
                "a2f_sd",
                "AAF_SD",
                4,
                1302853,
                "775135f46a3fea00f7d901f833f80a0ab05dbe1ae6c36b9deb352cddac70c473",
                _sets(32.06, 28.47, 27.48, 25.80, 30.16),
            ),
            (
                "a2f_m",
                "AAF_M",
                3,
                4049190,
                "148efc52c1647d87ff8700adce9f531b46e9188e518e70975a6950b527eb00eb",
                _sets(34.50, 30.39, 29.11, 28.28, 33.66),
            ),
            (
                "a2f_m",
                "AAF_M",
                4,
                4075982,
                "3c5690c0f34b0b5be5a467a794b27c7355b94752baf47d207e3f6a28a8c56300",
                _sets(32.28, 28.62, 27.58, 26.17, 30.57),
            ),
        )
    ),
    WeightsEntry(
        name="fmen_s_x4_official",
        arch="fmen_s",
        scale=4,
        source="authors' release",
        licence="Apache-2.0",
        training_data=_DIV2K + " (+ Flickr2K, NTIRE 2022 efficient-SR entry)",
        paper_ref="FMEN (Du et al., CVPRW 2022): no Set5/Set14/B100 figures for FMEN-S",
        url=_raw(_FMEN_REPO, _FMEN_COMMIT, "test_weights.pt"),
        sha256="d5534eba1feacfdd4043d9175d3bf0730b1ab4c91ba5c3f40a2282cd496fb4a5",
        size=1390163,
        format="official",
        notes="the folded inference form",
    ),
    WeightsEntry(
        name="fmen_s_x4_ntire2022",
        arch="fmen_s",
        scale=4,
        source="authors' release",
        licence="MIT (challenge repository)",
        training_data=_DIV2K + " (+ Flickr2K, NTIRE 2022 efficient-SR entry)",
        paper_ref="FMEN (Du et al., CVPRW 2022): no Set5/Set14/B100 figures for FMEN-S",
        url=_raw(_NTIRE_REPO, _NTIRE_COMMIT, "model_zoo/team03_fmen.pth"),
        sha256="f20cde0828068c5f50d3b64aa82c8a363fe6abc8d536d1a9fd4d09899f019bea",
        format="official",
        notes="the challenge repository's copy; its size is not recorded",
    ),
    *(
        WeightsEntry(
            name=f"imdn_x{s}_official",
            arch="imdn",
            scale=s,
            source="authors' release",
            licence="none stated",
            training_data=_DIV2K,
            paper_ref=_IMDN_PAPER,
            paper=paper,
            url=_raw(_IMDN_REPO, _IMDN_COMMIT, f"checkpoints/IMDN_x{s}.pth"),
            sha256=sha,
            size=size,
            format="official",
        )
        for s, size, sha, paper in (
            (
                2,
                2796052,
                "740b39653592bd3f49955a21cd9e16f2d37f2c413368cc09327601b8fbe42ce1",
                _sets(38.00, 33.63, 32.19, 32.17, 38.88),
            ),
            (
                3,
                2830672,
                "11b1716a19bc16e5e353e1db798d476169338e631eb170c82d765559888cb028",
                _sets(34.36, 30.32, 29.09, 28.17, 33.61),
            ),
            (
                4,
                2879112,
                "e660c38221147217a136debeb99eb304d62d9c0f73ac421ed66281b619719714",
                _sets(32.21, 28.58, 27.56, 26.04, 30.45),
            ),
        )
    ),
)

#: The entries that also have an int8 entry, ``<name>_int8``: the bundled defaults, MAFFSRN, and
#: the authors' files whose int8 loss lightsr measured (docs/ZOO.md).
_INT8_OF = (
    "a2f_sd_x2",
    "a2f_sd_x3",
    "a2f_sd_x4",
    "maffsrn_x2",
    "maffsrn_x3",
    "maffsrn_x4",
    "a2f_sd_x4_official",
    "fmen_s_x4_official",
)


def int8_entry(base: WeightsEntry) -> WeightsEntry:
    """The int8 entry of ``base``: the same file, run at int8 (never the default)."""
    return replace(
        base,
        name=f"{base.name}_int8",
        precision="int8",
        base=base.name,
        default=False,
        notes=f"{base.name} quantized to int8 at run time (lightsr.quantize; cached): no file "
        "of its own",
    )


#: Every named entry: each file, followed by its int8 entry when it has one.
_ENTRIES = tuple(
    entry for e in _FILES for entry in ((e, int8_entry(e)) if e.name in _INT8_OF else (e,))
)

#: Named weights by name.
WEIGHTS: dict[str, WeightsEntry] = {e.name: e for e in _ENTRIES}
#: Set5/Set14/B100 PSNR-Y measured here per entry (written by benchmarks/zoo_table.py).
MEASURED_FILE = WEIGHTS_DIR / "zoo_measured.json"


def list_weights() -> list[WeightsEntry]:
    """Every named weights entry, in registry order."""
    return list(WEIGHTS.values())


def get_weights(name: str) -> WeightsEntry:
    """The entry called ``name``; an unknown name raises with the closest names."""
    key = name.strip().lower().replace("-", "_")
    if key not in WEIGHTS:
        close = difflib.get_close_matches(key, list(WEIGHTS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"no weights called {name!r}.{hint} `lightsr list --weights` lists all {len(WEIGHTS)}."
        )
    return WEIGHTS[key]


def file_entry(entry: WeightsEntry) -> WeightsEntry:
    """The entry whose file ``entry`` runs: its base for an int8 entry, else itself."""
    return get_weights(entry.base) if entry.base else entry


def check_precision(entry: WeightsEntry, precision: str | None) -> None:
    """Refuse a ``precision`` that contradicts the entry's: an int8 entry runs at int8 only
    (``None``, "auto" and "int8" agree with it). Cheap: commands call it before any loading."""
    if entry.precision == "int8" and precision not in (None, "auto", "int8"):
        raise ConfigError(
            f"--weights {entry.name} is {entry.base} run at int8, but --precision {precision} "
            f"was asked: drop --precision (or pass --precision int8), or name --weights "
            f"{entry.base} to run it at {precision}."
        )


def default_weights(scale: int) -> WeightsEntry:
    """The one obvious default for ``scale`` (bundled)."""
    for entry in WEIGHTS.values():
        if entry.default and entry.scale == scale:
            return entry
    raise CheckpointError(f"no default weights for x{scale}: lightsr ships x2, x3 and x4.")


def photo_weights(scale: int) -> WeightsEntry | None:
    """The weights for real photos (trained on the "photo" degradations) at ``scale``, if
    lightsr has them."""
    for entry in WEIGHTS.values():
        if entry.degradation == "photo" and entry.scale == scale:
            return entry
    return None


def trained_on_degradations(
    *, weights: str | None = None, checkpoint: str | os.PathLike | None = None
) -> bool:
    """Whether the named weights or the lightsr checkpoint were trained on degraded LR (a
    photo model) rather than the papers' clean bicubic LR. The bundled defaults are clean;
    an authors' file (not a lightsr checkpoint) is clean: all four papers train on bicubic."""
    if weights is not None:
        return bool(get_weights(weights).degradation)
    if checkpoint is not None:
        try:
            extra = read_metadata(checkpoint).get("extra") or {}
        except CheckpointError:
            return False
        return bool(extra.get("degradation"))
    return False


#: The section of zoo_measured.json with the int8 entries measured where their kept convs ran
#: in bf16 (OpenVINO on a CPU with native bf16, :func:`lightsr.upscale.int8_floats`).
BF16_FLOATS_SECTION = "psnr_y_int8_bf16_floats"


def measured_figures(*, int8_floats: str = "fp32") -> dict[str, dict[str, float]]:
    """PSNR-Y per set measured here for each entry, as ``benchmarks/zoo_table.py`` last wrote
    them ({} where nothing was measured). ``int8_floats="bf16"``: the int8 entries' figures
    where their kept convs ran in bf16, for the entries measured so (the others as fp32)."""
    try:
        data = json.loads(MEASURED_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    figures = {k: dict(v) for k, v in data.get("psnr_y", {}).items()}
    if int8_floats == "bf16":
        figures.update({k: dict(v) for k, v in data.get(BF16_FLOATS_SECTION, {}).items()})
    return figures


def measured_cost(
    name: str, measured: Mapping[str, Mapping[str, float]] | None = None
) -> dict[str, float]:
    """For an int8 entry, the PSNR-Y it costs per set: its measured figure minus its base's
    (both from ``measured``, default :func:`measured_figures`; sets measured for both only).
    {} for an entry that quantizes nothing, or where either was not measured. With
    ``measured_figures(int8_floats="bf16")``: the cost where its kept convs run in bf16."""
    entry = get_weights(name)
    if not entry.base:
        return {}
    figures = measured_figures() if measured is None else measured
    mine, base = figures.get(entry.name, {}), figures.get(entry.base, {})
    return {s: round(mine[s] - base[s], 4) for s in mine if s in base}


def cache_dir() -> Path:
    """lightsr's cache: ``$LIGHTSR_CACHE``, else the platform's user cache folder."""
    override = os.environ.get("LIGHTSR_CACHE")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "lightsr" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "lightsr"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lightsr"


def sha256_of(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_name(entry: WeightsEntry) -> str:
    return entry.url.rsplit("/", 1)[-1] if entry.url else entry.bundled


def _candidates(folder: Path) -> Iterator[Path]:
    """Regular files in ``folder`` and one level of subfolders (how people keep downloads)."""
    if not folder.is_dir():
        return
    for child in sorted(folder.iterdir()):
        if child.is_file():
            yield child
        elif child.is_dir():
            yield from (g for g in sorted(child.iterdir()) if g.is_file())


def _find_by_hash(folder: Path, entry: WeightsEntry) -> Path | None:
    for candidate in _candidates(folder):
        if entry.size and candidate.stat().st_size != entry.size:
            continue  # cheap: only files of the published size are hashed
        if sha256_of(candidate) == entry.sha256:
            return candidate
    return None


def _download(entry: WeightsEntry, dest: Path, *, progress: bool) -> None:
    """Fetch ``entry.url`` into ``dest`` (atomically), verifying size and sha256 on the way;
    an interrupted or wrong download leaves nothing under ``dest``."""
    where = (
        f"put the file ({_source_name(entry)}, sha256 {entry.sha256}) in a folder named by "
        "--weights-dir or $LIGHTSR_WEIGHTS_DIR"
    )

    def write(tmp: str) -> None:
        digest = hashlib.sha256()
        try:
            response = urllib.request.urlopen(entry.url, timeout=60)  # noqa: S310 - pinned URL
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CheckpointError(
                f"cannot download {entry.name} from {entry.url} ({reason}). Offline? {where}."
            ) from None
        total = int(response.headers.get("Content-Length") or entry.size or 0) or None
        try:
            with (
                response,
                open(tmp, "wb") as out,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=entry.name,
                    disable=None if progress else True,  # None: only on a terminal
                ) as bar,
            ):
                for block in iter(lambda: response.read(1 << 16), b""):
                    digest.update(block)
                    out.write(block)
                    bar.update(len(block))
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise CheckpointError(
                f"the download of {entry.name} from {entry.url} was interrupted ({exc}): run "
                f"again (nothing partial is kept), or {where}."
            ) from None
        got = digest.hexdigest()
        if got != entry.sha256:
            raise CheckpointError(
                f"the file downloaded for {entry.name} from {entry.url} has sha256 {got}, not "
                f"the published {entry.sha256}: refused, nothing cached. If the source changed, "
                f"{where}."
            )

    atomic_write(dest, write, overwrite=True)  # the cache's own file: a bad copy is replaced


def fetch_weights(
    name: str,
    *,
    weights_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> Path:
    """The path of a lightsr checkpoint holding the named weights (see the module docstring
    for where it looks). ``weights_dir`` (default ``$LIGHTSR_WEIGHTS_DIR``): a folder of
    already-downloaded files, matched by sha256."""
    entry = file_entry(get_weights(name))  # an int8 entry runs its base's file
    if entry.bundled:
        path = WEIGHTS_DIR / entry.bundled
        if not path.is_file():
            raise CheckpointError(
                f"{entry.name}: the bundled file {path} is missing from this installation; "
                "reinstall lightsr."
            )
        return path
    cache = cache_dir()
    converted = cache / "converted" / f"{entry.name}-{entry.sha256[:12]}.safetensors"
    stamp = converted.with_name(converted.name + ".sha256")
    if (
        converted.is_file()
        and stamp.is_file()
        and sha256_of(converted) == stamp.read_text().strip()
    ):
        return converted
    # Not cached, or the cached file was damaged: rebuild it from a verified source.
    user = weights_dir or os.environ.get("LIGHTSR_WEIGHTS_DIR")
    source = _find_by_hash(Path(user).expanduser(), entry) if user else None
    downloads = cache / "downloads" / entry.sha256[:12]
    if source is None:
        source = _find_by_hash(downloads, entry)
    if source is None:
        if not entry.url:
            raise CheckpointError(f"{entry.name} has no download address.")
        source = downloads / _source_name(entry)
        _download(entry, source, progress=progress)
    model = load_official(source) if entry.format == "official" else load(source)
    if model.arch_name != entry.arch or model.scale != entry.scale:
        raise CheckpointError(
            f"{source} holds {model.arch_name} x{model.scale}, not {entry.arch} "
            f"x{entry.scale} as {entry.name} says."
        )
    for stale in (converted, stamp):
        stale.unlink(missing_ok=True)
    save(
        model,
        converted,
        extra={"weights": entry.name, "source_sha256": entry.sha256},
        overwrite=True,  # the cache's own file
    )
    atomic_write(
        stamp, lambda tmp: Path(tmp).write_text(sha256_of(converted) + "\n"), overwrite=True
    )
    return converted


def is_cached(name: str) -> bool:
    """True when the named weights can be used without a download (bundled, or converted in
    the cache)."""
    entry = file_entry(get_weights(name))
    if entry.bundled:
        return (WEIGHTS_DIR / entry.bundled).is_file()
    converted = cache_dir() / "converted" / f"{entry.name}-{entry.sha256[:12]}.safetensors"
    return converted.is_file()


def check_denoise_strength(strength: object) -> float:
    """``strength`` as a float in [0, 1], or a ConfigError saying what it must be."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise ConfigError(f"denoise strength {strength!r} must be a number from 0 to 1.")
    value = float(strength)
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise ConfigError(
            f"denoise strength {strength!r} must be from 0 (the clean model) to 1 (the photo "
            "model as trained)."
        )
    return value


def blend_weights(start: SRModel, end: SRModel, *, strength: float) -> SRModel:
    """A new model whose every floating-point tensor is ``start + strength * (end - start)``:
    the weights on the straight line from ``start`` (0) to ``end`` (1), exactly each of them at
    the ends (``torch.lerp``). Meaningful where ``end`` was fine-tuned from ``start`` (network
    interpolation: Wang et al., "Deep Network Interpolation for Continuous Imagery Effect
    Transition", CVPR 2019; Real-ESRGAN's ``--denoise_strength``). The two must be the same
    architecture, scale, options and form (folded or not); other tensors must be equal."""
    strength = check_denoise_strength(strength)
    for what, a, b in (
        ("architecture", start.arch_name, end.arch_name),
        ("scale", start.scale, end.scale),
        ("options", start.arch_options, end.arch_options),
        ("folded", bool(start.folded), bool(end.folded)),
    ):
        if a != b:
            raise ConfigError(f"cannot blend weights of different {what}: {a!r} and {b!r}.")
    a_state, b_state = start.state_dict(), end.state_dict()
    if a_state.keys() != b_state.keys() or any(
        a_state[k].shape != b_state[k].shape for k in a_state
    ):
        raise ConfigError("cannot blend weights: the two models' tensors differ in name or shape.")
    blended = {}
    for key, b in b_state.items():
        a = a_state[key]
        if b.is_floating_point():
            blended[key] = torch.lerp(a, b, strength)
        elif torch.equal(a, b):
            blended[key] = b.clone()
        else:
            raise ConfigError(f"cannot blend weights: the integer tensor {key} differs.")
    model = copy.deepcopy(end)
    model.load_state_dict(blended)
    return model.eval()


def _blendable() -> str:
    """The names of the entries ``--denoise-strength`` can blend, for error messages."""
    return ", ".join(e.name for e in WEIGHTS.values() if e.fine_tuned_from)


def _blend_partner(entry: WeightsEntry) -> WeightsEntry:
    """The entry ``entry`` was fine-tuned from, or a ConfigError naming the entries that have
    one (what ``--denoise-strength`` needs)."""
    if not entry.fine_tuned_from:
        raise ConfigError(
            f"--denoise-strength blends a photo model with the clean model it was fine-tuned "
            f"from; {entry.name} was not fine-tuned from another entry. Name one that was "
            f"({_blendable()}), or drop --denoise-strength."
        )
    return get_weights(entry.fine_tuned_from)


def check_blend_request(weights: str | None, denoise_strength: float | None) -> None:
    """Refuse a ``denoise_strength`` (when not None) that cannot be applied, before anything
    is loaded: out of [0, 1], without named ``weights``, or with weights that were not
    fine-tuned from another entry. Each error names the fix."""
    if denoise_strength is None:
        return
    check_denoise_strength(denoise_strength)
    if weights is None:
        raise ConfigError(
            "--denoise-strength blends a photo model with the clean model it was fine-tuned "
            f"from: name the photo model with --weights ({_blendable()})."
        )
    _blend_partner(file_entry(get_weights(weights)))


def load_weights(
    name: str,
    *,
    weights_dir: str | os.PathLike | None = None,
    progress: bool = False,
    denoise_strength: float | None = None,
) -> SRModel:
    """The model of the named weights (eval mode), fetched and converted as needed. For an
    int8 entry: its base's fp32 model (int8 is made from it when it runs).

    ``denoise_strength`` (0..1, for an entry fine-tuned from another: the photo models):
    the weights that far along the line from the entry it was fine-tuned from (0, the clean
    model) to its own (1), :func:`blend_weights`. Lower keeps more fine detail of clean input
    and removes less noise, JPEG and blur (the trade-off is measured in docs/PHOTO.md)."""
    entry = file_entry(get_weights(name))
    if denoise_strength is not None:
        strength = check_denoise_strength(denoise_strength)
        partner = _blend_partner(entry)
        end = load_weights(entry.name, weights_dir=weights_dir, progress=progress)
        start = load_weights(partner.name, weights_dir=weights_dir, progress=progress)
        model = blend_weights(start, end, strength=strength)
        model.checkpoint_extra = {
            **getattr(end, "checkpoint_extra", {}),
            "weights": entry.name,
            "denoise_strength": strength,
            "blended_with": partner.name,
        }
        return model
    model = load(fetch_weights(entry.name, weights_dir=weights_dir, progress=progress))
    model.checkpoint_extra = {**getattr(model, "checkpoint_extra", {}), "weights": entry.name}
    return model


def load_by_name_or_path(
    name_or_path: str | os.PathLike,
    *,
    weights_dir: str | os.PathLike | None = None,
    denoise_strength: float | None = None,
    **kwargs: Any,
) -> SRModel:
    """``lightsr.load``: a lightsr checkpoint file (``kwargs`` go to
    :func:`lightsr.checkpoint.load`), or the name of registered weights
    (``lightsr.load("imdn_x2_official")``; see ``lightsr list --weights``).

    An int8 entry's name (``"a2f_sd_x4_int8"``) gives its base's fp32 model, with a warning:
    a torch model cannot hold the int8 graph; run it at int8 with
    ``Upscaler(model, precision="int8")`` (what ``lightsr upscale --weights NAME`` does).

    ``denoise_strength`` (a photo model's name only): see :func:`load_weights`;
    ``lightsr.load("a2f_sd_photo_x4", denoise_strength=0.5)``."""
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.exists() or os.sep in text or "/" in text or path.suffix:
        if denoise_strength is not None:
            raise ConfigError(
                "denoise_strength needs the name of a photo model (it blends the named weights "
                f"with the entry they were fine-tuned from), not the file {text}: load a name "
                "such as 'a2f_sd_photo_x4', or blend two models with lightsr.hub.blend_weights."
            )
        return load(path, **kwargs)
    entry = get_weights(text)
    check_blend_request(entry.name, denoise_strength)  # refused before the int8 warning below
    if entry.precision == "int8":
        warnings.warn(
            f"{entry.name} is {entry.base} run at int8: this is {entry.base}'s fp32 model. "
            'Run it at int8 with lightsr.upscale.Upscaler(model, precision="int8") (as '
            f"`lightsr upscale --weights {entry.name}` does), or load {entry.base!r} to say "
            "fp32.",
            stacklevel=2,
        )
    return load_weights(entry.name, weights_dir=weights_dir, denoise_strength=denoise_strength)


def resolve_model(
    *,
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    scale: int | None = None,
    allow_random: bool = False,
    exact: bool = False,
    weights: str | None = None,
    weights_dir: str | os.PathLike | None = None,
    precision: str | None = None,
    denoise_strength: float | None = None,
) -> ResolvedModel:
    """The model a command means (the rule is in the module docstring).

    ``allow_random``: a learned model without weights is built with random weights (with a
    note on stderr) instead of refused. ``exact``: models with an exact reference path
    (bicubic's float64 MATLAB arithmetic) use it; evaluation asks for it. ``precision``: the
    one the user asked for (None: none), checked against an int8 entry's
    (:func:`check_precision`) before anything is loaded. ``denoise_strength``: with
    ``weights`` naming a photo model only (:func:`load_weights`).
    """
    scale = check_scale(scale)
    check_blend_request(weights, denoise_strength)
    if weights is not None:
        if checkpoint is not None:
            raise ConfigError(
                "--weights and --checkpoint both name weights: pass one of them (a registered "
                "name with --weights, or a file with --checkpoint)."
            )
        entry = get_weights(weights)
        check_precision(entry, precision)
        if model is not None and get_spec(model).name != entry.arch:
            raise ConfigError(
                f"--weights {entry.name} is a {entry.arch} model, not {model}: drop --model."
            )
        if scale is not None and scale != entry.scale:
            raise ConfigError(
                f"--weights {entry.name} is x{entry.scale}, not x{scale}: drop --scale or name "
                f"x{scale} weights (`lightsr list --weights`)."
            )
        loaded = load_weights(
            entry.name,
            weights_dir=weights_dir,
            progress=sys.stderr.isatty(),
            denoise_strength=denoise_strength,
        )
        if denoise_strength is not None:
            source = (
                f"{entry.name} ({entry.source}) at denoise strength {denoise_strength:g}, "
                f"blended with {entry.fine_tuned_from}"
            )
            return ResolvedModel(loaded, source)
        if entry.precision:
            source = f"{entry.name} ({entry.source}, {entry.base} at {entry.precision})"
            return ResolvedModel(loaded, source, precision=entry.precision)
        return ResolvedModel(loaded, f"{entry.name} ({entry.source})")
    if checkpoint is not None:
        if model is not None and not get_spec(model).learned:
            raise LightSRError(f"--model {model} has no weights: it takes no --checkpoint.")
        loaded = load_any(checkpoint, expect_arch=model or None, expect_scale=scale)
        return ResolvedModel(loaded, f"{loaded.arch_name} ({Path(checkpoint).name})")
    s = scale or DEFAULT_SCALE
    if model is None:
        default = default_model(s)
        return ResolvedModel(default, f"{default.arch_name} (bundled default x{s})")
    spec = get_spec(model)  # unknown names fail here, with suggestions
    if not spec.learned:
        options = {"exact": True} if exact else {}
        return ResolvedModel(create_model(spec.name, scale=s, **options), spec.name)
    path = bundled_weights(spec.name, s)
    default_path = bundled_weights("default", s)
    # `--model a2f_sd` means the bundled weights when the default model is an A2F-SD
    if (
        path is None
        and default_path is not None
        and read_metadata(default_path)["arch"] == spec.name
    ):
        path = default_path
    if path is not None:
        return ResolvedModel(load(path, expect_scale=s), f"{spec.name} (bundled, x{s})")
    if allow_random:
        if scale is None:
            raise LightSRError(f"--model {model} without a checkpoint needs --scale.")
        print(
            f"note: {spec.name} has random weights (no --checkpoint); its scores are a floor.",
            file=sys.stderr,
        )
        return ResolvedModel(create_model(spec.name, scale=s), f"{spec.name} (random weights)")
    raise CheckpointError(
        f"--model {model} without --checkpoint would upscale with random weights. Pass "
        f"--checkpoint PATH with trained {spec.name} weights, or --model bicubic."
    )


__all__ = [
    "DEFAULT_SCALE",
    "WEIGHTS_DIR",
    "ResolvedModel",
    "bundled_weights",
    "check_scale",
    "default_model",
    "resolve_model",
]
