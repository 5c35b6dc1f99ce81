"""Scores of one case's maps, and their summary over a cohort (the back end of ``evaluate``).

Beside the paper's protocol (Dice and ASSD per map at a threshold, mean and std over
patients) every summary reports what the protocol hides:

- tumour patients and tumour-free patients apart. Means of Dice, ASSD and HD95 are over the
  tumour patients only; a tumour-free patient is scored by its false-positive volume in cm3
  (its Dice is 1 for an empty mask and 0 for any other, which says nothing of how much);
- Dice by whole-tumour volume: under 30 cm3, 30 to 100 cm3, over 100 cm3 (small lesions are
  where CAMs fail first);
- HD95 beside ASSD (definitions in :mod:`equicam.core.metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from equicam.core.metrics import SurfaceReference

STRATA = ("< 30 cm3", "30-100 cm3", "> 100 cm3")


def score_maps(
    maps: Mapping[str, np.ndarray],
    truth: np.ndarray,
    spacing: Sequence[float],
    thresholds: Mapping[str, float],
    sweep: Sequence[float] = (),
) -> dict:
    """Every map of one case scored at its own threshold, and its Dice at each level of ``sweep``.

    Surface distances are measured at the map's own threshold only: the sweep serves to
    choose thresholds, by Dice, and its surface distances would cost most of an evaluation.

    Parameters
    ----------
    maps
        Map name -> ``(Z, Y, X)`` map in [0, 1].
    truth
        Whole-tumour mask of the same shape (empty for a tumour-free patient).
    spacing
        ``(dz, dy, dx)`` voxel size in mm.
    thresholds
        Map name -> its threshold, in (0, 1).
    sweep
        Further levels, each in (0, 1).

    Returns
    -------
    dict
        ``tumour_cm3``; ``scores`` (map -> dice, assd, hd95, fp_cm3 at its threshold);
        ``sweep`` (``f"{level:g}"`` -> map -> dice, fp_cm3). ``fp_cm3`` is the volume of the
        mask outside the whole tumour.
    """
    truth = np.asarray(truth, bool)
    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    reference = SurfaceReference(truth, spacing)  # the truth's surface, once for every map
    n_truth = int(np.count_nonzero(truth))
    scores: dict[str, dict] = {}
    swept: dict[str, dict] = {f"{t:g}": {} for t in sweep}
    for name, volume in maps.items():
        chosen = float(thresholds[name])
        levels = sorted({chosen, *map(float, sweep)})
        # Mask sizes at every level from the map's non-zero values only (levels are above 0).
        positive, in_truth = volume[volume > 0], volume[truth]
        by_level = {}
        for t in levels:
            n_pred = int(np.count_nonzero(positive >= t))
            n_hit = int(np.count_nonzero(in_truth >= t))
            total = n_pred + n_truth
            by_level[t] = {
                "dice": 1.0 if total == 0 else 2.0 * n_hit / total,
                "fp_cm3": (n_pred - n_hit) * voxel_cm3,
            }
        scores[name] = {
            "dice": by_level[chosen]["dice"],
            **reference.scores(volume >= chosen),
            "fp_cm3": by_level[chosen]["fp_cm3"],
        }
        for t in sweep:
            swept[f"{t:g}"][name] = by_level[float(t)]
    return {"tumour_cm3": n_truth * voxel_cm3, "scores": scores, "sweep": swept}


def stratum(volume_cm3: float) -> str:
    """The stratum of :data:`STRATA` of a whole-tumour volume (30 and 100 cm3 are middle)."""
    if volume_cm3 < 30.0:
        return STRATA[0]
    return STRATA[1] if volume_cm3 <= 100.0 else STRATA[2]


def summarise(rows: Mapping[str, Mapping[str, dict]], thresholds: Mapping[str, float]) -> dict:
    """Mean and std over cases of each score of each map; ``rows``: case -> map -> scores.

    Returns map -> ``<score>_mean``, ``<score>_std`` for every score the rows hold (dice,
    assd, ...), ``threshold`` and ``n_cases``; maps named in ``thresholds`` that no row has
    get ``n_cases`` 0 and no means.
    """
    names = list(dict.fromkeys([*(n for row in rows.values() for n in row), *thresholds]))
    summary = {}
    for name in names:
        scores = [row[name] for row in rows.values() if name in row]
        entry: dict = {}
        for key in dict.fromkeys(k for s in scores for k in s):
            values = [s[key] for s in scores if key in s]
            entry[f"{key}_mean"] = float(np.mean(values))
            entry[f"{key}_std"] = float(np.std(values))
        summary[name] = {**entry, "threshold": thresholds[name], "n_cases": len(scores)}
    return summary


def cohort(records: Mapping[str, dict], sweep: Sequence[float]) -> dict:
    """The scores of a cohort from its cases' records (see :func:`score_maps`).

    Parameters
    ----------
    records
        Case -> record of :func:`score_maps` with the ``thresholds`` it used.
    sweep
        The levels the records were swept at.

    Returns
    -------
    dict
        ``cases``, ``summary`` (over tumour patients), ``per_case`` (every case), ``sweep``
        (level -> summary over tumour patients), ``tumour_patients``, ``tumour_cm3`` (case ->
        whole-tumour volume), ``strata`` (name -> ``cases`` and Dice ``summary``),
        ``tumour_free`` (``cases``, ``per_case`` case -> map -> fp_cm3, ``summary`` map ->
        mean, std, median and max fp_cm3).
    """
    records = dict(sorted(records.items()))
    chosen = {k: v for r in records.values() for k, v in r["thresholds"].items()}
    with_tumour = [c for c, r in records.items() if r["tumour_cm3"] > 0]
    free = [c for c, r in records.items() if r["tumour_cm3"] == 0]
    per_case = {c: r["scores"] for c, r in records.items()}
    strata = {}
    for name in STRATA:
        members = [c for c in with_tumour if stratum(records[c]["tumour_cm3"]) == name]
        rows = {c: {m: {"dice": s["dice"]} for m, s in per_case[c].items()} for c in members}
        strata[name] = {"cases": members, "summary": summarise(rows, chosen)}
    fp = {c: {m: s["fp_cm3"] for m, s in per_case[c].items()} for c in free}
    free_summary = {}
    for name in chosen:
        values = [row[name] for row in fp.values() if name in row]
        free_summary[name] = {
            "fp_cm3_mean": float(np.mean(values)) if values else None,
            "fp_cm3_std": float(np.std(values)) if values else None,
            "fp_cm3_median": float(np.median(values)) if values else None,
            "fp_cm3_max": float(np.max(values)) if values else None,
            "threshold": chosen[name],
            "n_cases": len(values),
        }
    return {
        "cases": list(records),
        "summary": summarise({c: per_case[c] for c in with_tumour}, chosen),
        "per_case": per_case,
        "sweep": {
            f"{t:g}": summarise(
                {c: records[c]["sweep"][f"{t:g}"] for c in with_tumour}, dict.fromkeys(chosen, t)
            )
            for t in sweep
        },
        "tumour_patients": with_tumour,
        "tumour_cm3": {c: r["tumour_cm3"] for c, r in records.items()},
        "strata": strata,
        "tumour_free": {"cases": free, "per_case": fp, "summary": free_summary},
    }


def _cell(row: dict, key: str, digits: int) -> str:
    if row.get(f"{key}_mean") is None:
        return "-"
    return f"{row[f'{key}_mean']:.{digits}f} +- {row[f'{key}_std']:.{digits}f}"


def results_table(results: dict) -> str:
    """Markdown: tumour patients (Dice, ASSD, HD95), Dice by stratum, tumour-free patients'
    false-positive volume, failed cases, then mean Dice per threshold."""
    summary, sweep = results["summary"], results["sweep"]
    n_tumour, free = len(results["tumour_patients"]), results["tumour_free"]
    lines = [
        f"Checkpoint `{results['checkpoint']}`, method `{results['method']}`, "
        f"protocol `{results.get('protocol', 'paper')}`, "
        f"{len(results['cases'])} cases: {n_tumour} with tumour, {len(free['cases'])} "
        f"tumour-free, {len(results.get('failed', {}))} failed.",
        "",
        f"Tumour patients ({n_tumour}), mean +- std:",
        "",
        "| map | Dice | ASSD (mm) | HD95 (mm) | threshold |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in summary.items():
        lines.append(
            f"| {name} | {_cell(row, 'dice', 3)} | {_cell(row, 'assd', 1)} | "
            f"{_cell(row, 'hd95', 1)} | {row['threshold']:.2f} |"
        )
    strata = results["strata"]
    lines += [
        "",
        "Dice by whole-tumour volume, mean +- std (patients):",
        "",
        "| map | " + " | ".join(f"{s} ({len(strata[s]['cases'])})" for s in strata) + " |",
        "| --- |" + " --- |" * len(strata),
    ]
    for name in summary:
        cells = [_cell(strata[s]["summary"].get(name, {}), "dice", 3) for s in strata]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if free["cases"]:
        lines += [
            "",
            f"Tumour-free patients ({len(free['cases'])}): false-positive volume (cm3):",
            "",
            "| map | mean +- std | median | max |",
            "| --- | --- | --- | --- |",
        ]
        for name, row in free["summary"].items():
            lines.append(
                f"| {name} | {_cell(row, 'fp_cm3', 1)} | {row['fp_cm3_median']:.1f} | "
                f"{row['fp_cm3_max']:.1f} |"
            )
    if results.get("failed"):
        lines += ["", "Failed cases (not scored):", ""]
        lines += [f"- {case}: {reason}" for case, reason in results["failed"].items()]
    if sweep:
        lines += [
            "",
            "Mean Dice of tumour patients per threshold:",
            "",
            "| map | " + " | ".join(sweep) + " |",
            "| --- |" + " --- |" * len(sweep),
        ]
        for name in summary:
            cells = [_cell_mean(sweep[t].get(name, {})) for t in sweep]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell_mean(row: dict) -> str:
    return "-" if row.get("dice_mean") is None else f"{row['dice_mean']:.3f}"


def plot_sweep(results: dict, path: Path) -> None:
    """Mean Dice of tumour patients against the threshold, one line per map, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    thresholds = list(results["sweep"])
    for name in results["summary"]:
        rows = [results["sweep"][t].get(name, {}) for t in thresholds]
        ax.plot(
            [float(t) for t in thresholds],
            [row.get("dice_mean") or 0.0 for row in rows],
            marker="o",
            label=name,
        )
    ax.set_xlabel("threshold")
    ax.set_ylabel("mean Dice (tumour patients)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{Path(results['checkpoint']).stem} ({results['method']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
