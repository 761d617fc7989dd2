"""Which archive MOUS a campaign takes: the selection rules of ``[selection]`` in ari.toml.

Light on purpose: loading a config validates its ``[selection]`` table with
:func:`rules_from_mapping`, and every ``ari status --json`` loads the config, so
this module imports no network code (:mod:`ari_console.archive.client` applies
the rules to what the archive answers).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import UserError


@dataclass(frozen=True)
class SelectionRules:
    """Which MOUS a campaign takes; by default public, QA2 passed or semi-passed, no TP/full-Stokes/VLBI/solar.

    ``cycles`` (e.g. ``(2, 3, 4)``), ``project_years`` (e.g. ``(2013, 2015, 2016)``: every
    project code of those years, DDT and supplemental calls included) and the size
    limits are off when None. ``exclude_pipeline_imaged`` leaves out MOUS whose QA2
    images the imaging pipeline already made. ``PRESETS["ari-l"]`` is ARI-L's choice.
    """

    public_only: bool = True
    qa2_states: tuple[str, ...] = ("Pass", "SemiPass")
    exclude_full_stokes: bool = True
    exclude_vlbi: bool = True
    exclude_total_power: bool = True
    exclude_solar: bool = True
    exclude_pipeline_imaged: bool = False
    cycles: tuple[int, ...] | None = None
    project_years: tuple[int, ...] | None = None
    min_size_gb: float | None = None
    max_size_gb: float | None = None


# Named rule sets ([selection] preset = "ari-l"); explicit keys beside the preset override it.
PRESETS = {
    # ARI-L (the ALMA Re-Imaging of Legacy data): Cycles 2-4 (project codes 2013, 2015, 2016,
    # DDT and supplemental calls included), public, QA2 passed or semi-passed, no full Stokes,
    # VLBI, total power or Sun (comets, planets and asteroids stay), and not already imaged
    # by the imaging pipeline.
    "ari-l": SelectionRules(project_years=(2013, 2015, 2016), exclude_pipeline_imaged=True),
}


def rules_from_mapping(values: dict, source: str = "ari.toml [selection]") -> SelectionRules:
    """SelectionRules from a config table, or UserError naming the bad key and the fix.

    ``preset = "ari-l"`` starts from that named rule set; every other key overrides it.

    >>> rules_from_mapping({"preset": "ari-l", "max_size_gb": 500}).project_years
    (2013, 2015, 2016)
    """
    known = {f for f in SelectionRules.__dataclass_fields__}
    preset = values.get("preset")
    if preset is not None and preset not in PRESETS:
        raise UserError(f"{source}: preset {preset!r} is not a rule set — use one of {', '.join(sorted(PRESETS))}")
    rules = PRESETS[preset] if preset else SelectionRules()
    for key, value in values.items():
        if key == "preset":
            continue
        if key not in known:
            raise UserError(f"{source}: unknown key {key!r} — use preset or one of {', '.join(sorted(known))}")
        default = getattr(SelectionRules(), key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise UserError(f"{source}: {key} must be true or false, got {value!r} — write {key} = true")
        if key in ("min_size_gb", "max_size_gb") and not (isinstance(value, (int, float)) and value >= 0):
            raise UserError(f"{source}: {key} must be a number of GB, got {value!r} — write {key} = 500")
        if key in ("qa2_states", "cycles", "project_years"):
            if not isinstance(value, (list, tuple)):
                raise UserError(f"{source}: {key} must be a list, got {value!r} — write {key} = [...]")
            value = tuple(value)
        rules = replace(rules, **{key: value})
    return rules
