"""How the paper counted its detection FLOPs: an explanation, not a result.

The paper's COCO FLOPs (Tables 2(a) and 3) are 1.3% to 9.4% above what the
counter here measures at 800x1333, by different amounts for Mask R-CNN and
Cascade Mask R-CNN.  :func:`fit_paper_convention` shows that two constants
account for every row: a scale on everything that grows with the image (the
paper's image was a little smaller) and a fixed cost per RoI-head stage (the
paper counted its RoI heads differently).  The fit says nothing about the
models here, which are measured as they are; it explains the paper's
counting, and the NL row, held out of it, checks which NL block the paper
counted.  See docs/complexity.md.
"""
import os.path as osp
from typing import Any, Dict, Iterable, Optional

import numpy as np

__all__ = ['fit_paper_convention', 'format_fit']


def fit_paper_convention(rows: Iterable[Dict[str, Any]]
                         ) -> Optional[Dict[str, Any]]:
    """How the paper's detection FLOPs relate to the measured ones.

    Fits, by least squares over the measured rows of
    :func:`gcnet_mm.analysis.paper_tables.paper_table` for two-stage
    detectors without NL blocks::

        paper = scale * (FLOPs outside the RoI heads)
                + (RoI head FLOPs) + per_stage * (RoI head stages)

    ``scale`` stands for a difference in input size (everything outside the
    RoI heads grows with the pixels; 0.937 is an image of about 800x1260
    instead of 800x1344), ``per_stage`` for a different count of the RoI
    heads, whose cost does not depend on the image.  Needs rows with one and
    with several RoI stages (Table 3's cascades); returns None otherwise.
    NL rows are held out: their estimate is a prediction, which checks how
    the NL block is counted (the paper's figure fits an NL block that pools
    its input before phi and g, ``sub_sample='input'``).

    Returns:
        dict | None: ``scale``, ``per_stage_g``, ``rows_used`` and per row
        (all detection rows, NL ones included) ``estimate_g`` and
        ``residual_g`` (paper - estimate), keyed by config.
    """
    usable = []
    for r in rows:
        parts = r.get('flops_by_part_g') or {}
        if (r.get('flops_g') is None or r.get('paper_flops_g') is None
                or not r.get('roi_stages') or 'roi_head' not in parts):
            continue
        heads = parts['roi_head']
        usable.append((r, r['flops_g'] - heads, heads, r['roi_stages']))

    def fitted(row: Dict[str, Any]) -> bool:  # NL rows are held out
        return '-nl-' not in osp.basename(row['config'])

    # a config in two tables counts once per paper figure
    fit_on = list({(u[0]['config'], u[0]['paper_flops_g']): u
                   for u in usable if fitted(u[0])}.values())
    if len({u[3] for u in fit_on}) < 2:
        return None
    # least squares of paper - heads = scale * rest + per_stage * stages
    (scale, per_stage), *_ = np.linalg.lstsq(
        np.array([[rest, n] for _, rest, _, n in fit_on], dtype=float),
        np.array([r['paper_flops_g'] - heads for r, _, heads, _ in fit_on]),
        rcond=None)
    scale, per_stage = float(scale), float(per_stage)
    estimates = {}
    for r, rest, heads, n in usable:
        estimate = scale * rest + heads + per_stage * n
        estimates[r['config']] = dict(
            row=r['row'],
            estimate_g=estimate,
            residual_g=r['paper_flops_g'] - estimate,
            fitted=fitted(r))
    return dict(
        scale=scale,
        per_stage_g=per_stage,
        rows_used=len(fit_on),
        rows=estimates)


def format_fit(fit: Dict[str, Any]) -> str:
    """A markdown report of :func:`fit_paper_convention`, headed as the
    explanation it is."""
    lines = [
        "### How the paper counted its detection FLOPs (an explanation, not "
        "a measurement)", '',
        f'paper ~= {fit["scale"]:.3f} x (FLOPs outside the RoI heads) + RoI '
        f'heads + {fit["per_stage_g"]:.2f}G x RoI stages (least squares over '
        f'{fit["rows_used"]} rows without NL blocks)', '',
        '| row | config | estimate (G) | paper - estimate (G) |',
        '| :-- | :-- | --: | --: |'
    ]
    for config, r in fit['rows'].items():
        lines.append(f'| {r["row"]} | {osp.basename(config)[:-3]} | '
                     f'{r["estimate_g"]:.2f} | {r["residual_g"]:+.2f} |')
    fitted = [r for r in fit['rows'].values() if r['fitted']]
    worst = max(fitted, key=lambda r: abs(r['residual_g']))
    lines += [
        '', f'largest |paper - estimate| of the fitted rows: '
        f'{abs(worst["residual_g"]):.2f}G ({worst["row"]})'
    ]
    held_out = [r for r in fit['rows'].values() if not r['fitted']]
    if held_out:
        lines.append(
            'held out (predicted, not fitted): ' + ', '.join(
                f'{r["row"]} {r["residual_g"]:+.2f}G' for r in held_out))
    return '\n'.join(lines)
