"""Turning the doctor's recorded calls and gradients into :class:`~shapegrad.doctor.Finding` objects.

Forward: the first layer whose output is non-finite from finite inputs.
Backward: the first layer, walking back, that turns a finite gradient into a
non-finite one, with the operation and source line found by
:mod:`shapegrad.doctor.backends`. Dead: inputs or weights whose gradient is
exactly zero over the whole batch; an input feature along which the outputs
do not move at all, either way and at every probed step, is an invariance
(the zero is exact), said in a note, not a finding.
"""

import os

import keras
import numpy as np
from keras import ops, tree

from shapegrad.doctor import backends
from shapegrad.doctor.hints import CANONICAL_OP, hazard_of
from shapegrad.doctor.report import Finding
from shapegrad.doctor.trace import call_fn, is_float_tensor, to_numpy, run_layers

def describe_nonfinite(a):
    a = np.asarray(a)
    parts = []
    for label, mask in (("NaN", np.isnan(a)), ("+inf", np.isposinf(a)), ("-inf", np.isneginf(a))):
        if mask.any():
            parts.append(f"{int(mask.sum())} {label}")
    return f"{', '.join(parts)} of {a.size} entries"


def all_finite(arrays):
    return all(np.isfinite(a).all() for a in arrays)



def unique_variables(variables):
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def split_like(flat, like):
    out, k = [], 0
    for group in like:
        out.append(list(flat[k : k + len(group)]))
        k += len(group)
    return out


def _where(call):
    return f"layer '{call.name}' ({call.class_name})"


def _apply_site(finding, site, fallback_key=None, leak=False):
    """Fill op, location and hint of ``finding`` from a backend :class:`Site`."""
    key = None
    if site is not None:
        finding.backend_op = site.backend_op
        key = hazard_of(site.keras_op) or hazard_of(site.backend_op.split(" in ")[-1]) or hazard_of(
            site.backend_op
        )
        finding.op = site.keras_op or CANONICAL_OP.get(key) or site.backend_op
        frame = site.user_frame
        if frame is not None:
            finding.location = f"{_short_path(frame[0])}:{frame[1]} (in {frame[2]})"
            finding.source = frame[3]
    if leak:
        finding.op_hint = key
        key = "where"
    finding.hint = key or fallback_key or "unknown"


def _short_path(path):
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else path
    except ValueError:
        return path


def forward_finding(call):
    bad = [y for y in call.outputs if not np.isfinite(y).all()]
    finding = Finding(
        "nonfinite_forward",
        f"Non-finite values first produced by {_where(call)} in the forward pass.",
        layer=call.name,
        layer_class=call.class_name,
        details=["inputs of the layer: finite", f"output of the layer: {describe_nonfinite(bad[0])}"],
    )
    site = _locate(call, None)
    float16 = any(y.dtype == np.float16 for y in bad) and not np.isnan(bad[0]).any()
    _apply_site(finding, site, fallback_key="float16" if float16 else None)
    if float16 and finding.hint not in ("log", "div"):
        finding.hint = "float16"
    return finding


def _locate(call, cotangents):
    """Run the backend locator on one recorded call; ``None`` if it finds nothing or fails."""
    weights = call.weights
    args = list(call.inputs) + [to_numpy(w.value) for w in weights]
    fn = call_fn(call, len(weights))
    # Keras trims its own frames from tracebacks; the locators need them.
    filtering = keras.config.is_traceback_filtering_enabled()
    keras.config.disable_traceback_filtering()
    try:
        if cotangents is None:
            return backends.locate_forward(fn, args)
        return backends.locate_backward(fn, args, cotangents)
    except Exception as error:  # noqa: BLE001 - the report stands without the op
        return backends.Site(phase="unknown", backend_op=f"(locator failed: {type(error).__name__})")
    finally:
        if filtering:
            keras.config.enable_traceback_filtering()


def gradient_finding(calls, g_in, g_out, grad_of_weight):
    for call in reversed(calls):
        outs, ins = g_out[call.index], g_in[call.index]
        w_grads = [(w, grad_of_weight.get(id(w))) for w in call.weights]
        w_bad = [(w, g) for w, g in w_grads if g is not None and not np.isfinite(g).all()]
        if not all_finite(outs) or (all_finite(ins) and not w_bad):
            continue
        details = ["gradient arriving at its output: finite"]
        details += [f"gradient w.r.t. its input {k}: {describe_nonfinite(g)}" for k, g in enumerate(ins) if not np.isfinite(g).all()]
        details += [f"gradient w.r.t. weight '{w.path}': {describe_nonfinite(g)}" for w, g in w_bad]
        finding = Finding(
            "nonfinite_gradient",
            f"Non-finite gradient created in {_where(call)}.",
            layer=call.name,
            layer_class=call.class_name,
            details=details,
        )
        inner = _locate(call, None)  # a non-finite value inside a finite layer output: a masked branch
        site = _locate(call, outs)
        leak = inner is not None and inner.phase == "forward"
        if site is not None and site.zero_cotangent:
            leak = True
        if site is None or site.phase == "unknown":
            site = inner or site
        _apply_site(finding, site, leak=leak)
        if leak and inner is not None:
            finding.details.append(
                f"inside it, {inner.keras_op or inner.backend_op} computes non-finite values "
                "that a where/select discards in the forward pass"
            )
        finding._call_index = call.index
        return finding
    return None


def _names(calls, limit=4):
    shown = [f"'{c.name}'" for c in calls[:limit]]
    return ", ".join(shown) + (f" and {len(calls) - limit} more" if len(calls) > limit else "")


def add_aftermath(findings, calls, forward_bad, g_in, weights, g_w, g_x, loss_value):
    """Root cause first: fill the first non-finite finding's ``followed`` with what followed from it.

    Forward: the later layers whose outputs are non-finite, the loss, the gradients.
    Backward: the earlier layers the non-finite gradient flows back through, and the weights it reaches.
    """
    lead = next((f for f in findings if f.kind in ("nonfinite_forward", "nonfinite_gradient")), None)
    if lead is None:
        return
    bad_w = [w.path for w, g in zip(weights, g_w) if not np.isfinite(g).all()]
    bad_x = sum(not np.isfinite(g).all() for g in g_x)
    grads = f"non-finite gradients for {len(bad_w)} of {len(weights)} weight(s)" + (
        f" ({', '.join(bad_w[:4])}{', ...' if len(bad_w) > 4 else ''})" if bad_w else ""
    ) + (f" and {bad_x} input(s)" if bad_x else "")
    if lead.kind == "nonfinite_forward" and forward_bad is not None:
        later = [c for c in calls[forward_bad.index + 1 :] if not all_finite(c.outputs)]
        parts = [f"non-finite outputs of layer(s) {_names(later)}"] if later else []
        parts.append(f"the loss = {loss_value:.6g}")
        lead.followed = "; ".join(parts + [grads]) + " (all from this first one)"
        return
    index = getattr(lead, "_call_index", None)
    if lead.kind == "nonfinite_gradient" and index is not None:
        earlier = [c for c in calls[:index] if not all_finite(g_in[c.index])][::-1]
        via = f"it flows back through layer(s) {_names(earlier)}: " if earlier else ""
        lead.followed = f"{via}{grads} (all from this first one)"


def _dead_mask(g):
    """Entries (all axes but the batch) whose gradient is exactly 0 for every sample."""
    g = np.asarray(g)
    if g.ndim == 0:
        return np.asarray(g == 0)
    return np.all(g == 0, axis=0)


# Steps of the invariance probe, both ways: absolute, and fractions of the
# input's own size (they never cross 0, where a direction or a sign flips).
_PROBE_STEPS = (1e-3, 1e-2, 0.1, 0.5)
_PROBE_FRACTIONS = (0.5, 0.9, 0.99)
_PROBE_MAX_FEATURES = 16


def _outputs(target, leaves, like, training):
    y = run_layers(target, tree.pack_sequence_as(like, [ops.convert_to_tensor(x) for x in leaves]), lambda fn, op=None: fn, training)
    return [np.asarray(to_numpy(o), np.float64) for o in tree.flatten(y) if is_float_tensor(o)]


def _invariant(target, inputs, k, index, training, base):
    """Whether no output moves when input ``k``'s feature ``index`` moves, for the whole batch.

    A clip or a saturation is flat on one side only, or only beyond a bound
    that one of the steps reaches (a ReLU below 0: +0.5; a clip at 1 from 1.5:
    -50 %; a sigmoid at 200: -99 %); an invariance (a direction's length, an
    unused feature) is flat at every step both ways.
    """
    leaves = [np.asarray(x) for x in tree.flatten(inputs)]
    x = leaves[k]
    where = (slice(None),) + tuple(index)
    column = x[where].astype(np.float64)
    steps = [h for a in _PROBE_STEPS for h in (a, -a)]
    steps += [f * np.abs(column) for a in _PROBE_FRACTIONS for f in (a, -a)]
    eps = np.finfo(x.dtype).eps if np.issubdtype(x.dtype, np.floating) else 1e-7
    for step in steps:
        moved = x.copy()
        moved[where] = (column + step).astype(x.dtype)
        leaves_k = leaves[:k] + [moved] + leaves[k + 1 :]
        for y, y0 in zip(_outputs(target, leaves_k, inputs, training), base):
            if not np.all(np.abs(y - y0) <= 4 * eps * (1.0 + np.abs(y0))):  # NaN too: moved
                return False
    return True


def dead_findings(calls, float_inputs, g_x, weights, g_w, g_in, g_out, target, inputs=None, training=False, notes=None):
    """Dead-gradient findings; with ``inputs``, invariant input features go to ``notes`` instead."""
    findings = []
    culprit = None
    for call in reversed(calls):
        if any(_dead_mask(g).any() for g in g_in[call.index]) and not any(
            _dead_mask(g).any() for g in g_out[call.index]
        ):
            culprit = call
            break
    base = None
    for k, g in zip(float_inputs, g_x):
        mask = _dead_mask(g)
        if mask.any() and inputs is not None and mask.ndim and mask.sum() <= _PROBE_MAX_FEATURES:
            if base is None:
                base = _outputs(target, [np.asarray(x) for x in tree.flatten(inputs)], inputs, training)
            flat = [i for i in zip(*np.nonzero(mask)) if _invariant(target, inputs, k, i, training, base)]
            for i in flat:
                mask[i] = False
            if flat and notes is not None:
                idx = ", ".join(str(list(map(int, i)) if len(i) > 1 else int(i[0])) for i in flat)
                notes.append(
                    f"input {k}, feature(s) {idx}: gradient exactly 0, and no output moves when the feature moves "
                    "either way (steps 0.001 to 0.5, and 50 to 99 % of its value): an invariance, not a dead gradient"
                )
        if mask.any():
            idx = [list(map(int, i)) if len(i) > 1 else int(i[0]) for i in zip(*np.nonzero(mask))] if mask.ndim else []
            shown = ", ".join(str(i) for i in idx[:8]) + (", ..." if len(idx) > 8 else "")
            layer = culprit or (calls[0] if len(calls) == 1 else None)
            findings.append(
                Finding(
                    "dead_gradient",
                    f"Input {k}: gradient exactly 0 over the whole batch for {int(mask.sum())} of "
                    f"{mask.size} feature(s)" + (f", cut in {_where(layer)}." if layer else "."),
                    layer=layer.name if layer else None,
                    layer_class=layer.class_name if layer else None,
                    details=[f"dead features (index after the batch axis): {shown}"],
                    hint="dead",
                )
            )
    owner = {}
    for call in calls:
        for w in call.weights:
            owner.setdefault(id(w), call)
    for w, g in zip(weights, g_w):
        if np.all(g == 0):
            call = owner.get(id(w))
            findings.append(
                Finding(
                    "dead_gradient",
                    f"Weight '{w.path}': gradient exactly 0 everywhere.",
                    layer=call.name if call else None,
                    layer_class=call.class_name if call else None,
                    hint="dead",
                )
            )
    return findings

