"""What :func:`shapegrad.doctor.check` returns: :class:`Finding` and :class:`Report`, as text or JSON."""

import dataclasses
import json
import math

from shapegrad.doctor.hints import HINTS

__all__ = ["Finding", "Report"]



@dataclasses.dataclass
class Finding:
    """One problem found by :func:`check`.

    Attributes:
        kind: ``"nonfinite_input"``, ``"nonfinite_forward"``,
            ``"nonfinite_gradient"``, ``"dead_gradient"`` or ``"gradient_mismatch"``.
        summary: one line saying what is wrong and where.
        layer, layer_class: the layer held responsible (``"loss"`` for the loss).
        op: the operation, as a ``keras.ops`` name where one was on the stack
            (``"arccos"``), else as the backend named it.
        backend_op: what the backend itself reported (``"AcosBackward0"``).
        location: ``"file.py:12"``, the user's line that created the op.
        source: that line's code.
        hint: key into :data:`HINTS`.
        details: further lines (what entered and left the layer).
        op_hint: for a ``where`` leak, the catalogue key of the operation in the branch.
        followed: for the first non-finite finding, what followed from it (later
            layers, the loss, the gradients and weights it reached).
    """

    kind: str
    summary: str
    layer: str | None = None
    layer_class: str | None = None
    op: str | None = None
    backend_op: str | None = None
    location: str | None = None
    source: str | None = None
    hint: str | None = None
    details: list = dataclasses.field(default_factory=list)
    op_hint: str | None = None
    followed: str | None = None

    @property
    def fix(self):
        """The cure: the hint's fix, plus the fix for the operation when the hint is about a ``where``."""
        if self.hint not in HINTS:
            return None
        fix = HINTS[self.hint].fix
        if self.op_hint in HINTS and self.op_hint != self.hint:
            fix += f" For the {HINTS[self.op_hint].title} itself: {HINTS[self.op_hint].fix}"
        return fix

    def to_dict(self):
        d = dataclasses.asdict(self)
        if self.hint in HINTS:
            h = HINTS[self.hint]
            d["hint_title"], d["cause"], d["fix"] = h.title, h.cause, self.fix
        return d


@dataclasses.dataclass
class Report:
    """What :func:`check` found. ``str(report)`` is for people, ``to_json()`` for programs.

    Attributes:
        backend: the Keras backend that ran the check.
        target: the target's name.
        loss: how the loss was formed, and ``loss_value`` its value.
        findings: list of :class:`Finding`; empty when healthy.
        checked: what was checked (for the text report).
        notes: checks that were skipped, and why.
    """

    backend: str
    target: str
    loss: str
    loss_value: float
    findings: list = dataclasses.field(default_factory=list)
    checked: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)

    @property
    def ok(self):
        """``True`` when nothing was found."""
        return not self.findings

    def to_dict(self):
        return {
            "ok": self.ok,
            "backend": self.backend,
            "target": self.target,
            "loss": self.loss,
            "loss_value": _json_float(self.loss_value),
            "findings": [f.to_dict() for f in self.findings],
            "checked": list(self.checked),
            "notes": list(self.notes),
        }

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self):
        head = "healthy" if self.ok else f"{len(self.findings)} finding" + (
            "s" if len(self.findings) != 1 else ""
        )
        lines = [
            f"shapegrad doctor: {self.target}: {head}",
            f"  backend {self.backend}; loss: {self.loss} = {self.loss_value:.6g}",
        ]
        for k, f in enumerate(self.findings, 1):
            lines.append("")
            lines.append(f"[{k}] {f.summary}")
            for d in f.details:
                lines.append(f"    {d}")
            if f.op:
                extra = f"  ({self.backend} reported: {f.backend_op})" if f.backend_op and f.backend_op != f.op else ""
                lines.append(f"    operation: {f.op}{extra}")
            if f.location:
                lines.append(f"    source:    {f.location}")
                if f.source:
                    lines.append(f"               {f.source}")
            if f.followed:
                lines.append(f"    then:      {f.followed}")
            if f.hint in HINTS:
                h = HINTS[f.hint]
                lines.append(f"    cause:     {h.title}: {h.cause}")
                lines.append(f"    fix:       {f.fix}")
        lines.append("")
        lines.append("checked: " + "; ".join(self.checked))
        for n in self.notes:
            lines.append(f"note: {n}")
        return "\n".join(lines)


def _json_float(x):
    x = float(x)
    return x if math.isfinite(x) else str(x)

