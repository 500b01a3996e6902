"""Click parameter types shared by ``compare``, ``recommend`` and ``tune``."""

from __future__ import annotations

import click


class TargetL0(click.ParamType):
    """A target L0 as a fraction of the dictionary: ``0.05`` or ``5%``."""

    name = "FRACTION"

    def convert(self, value, param, ctx):  # noqa: D401 - click API
        if isinstance(value, float):
            return value
        text = str(value).strip()
        try:
            f = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            self.fail(f"{value!r} is not a fraction like 0.05 or a percent like 5%", param, ctx)
        if not 0 < f < 1:
            self.fail(f"{value!r} must be a fraction of the dictionary between 0 and 1 (0.05 = 5%)", param, ctx)
        return f


TARGET_L0 = TargetL0()
