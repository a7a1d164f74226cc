"""Reading an SVG file safely: the XML checks that run before any SVG parsing.

Its one concern is refusing hostile or broken files with one clear error, and
preparing a well-formed document for :mod:`svgelements` (which
:mod:`shapegrad.io.svg_read` uses for styles, transforms and arcs):

- the XML is parsed by :mod:`defusedxml` first: any entity declaration is
  refused (billion laughs, external entities: nothing is ever expanded,
  fetched or read), a DOCTYPE without entities is accepted (many editors write
  one);
- at most :data:`MAX_ELEMENTS` elements (counting what ``<use>`` copies, so a
  "use bomb" is refused too) and :data:`MAX_DEPTH` levels of nesting;
- ``<use>`` cycles are refused; path data is checked command by command
  (:func:`check_path_data`), since :mod:`svgelements` stops silently at the
  first bad command.

Every refusal is an :class:`SVGError` (a ``ValueError``) whose message names
the file and the problem.

Example:
    >>> root = parse_svg_xml('<svg xmlns="http://www.w3.org/2000/svg"><rect width="2" height="1"/></svg>', "a.svg")
    >>> root.tag
    '{http://www.w3.org/2000/svg}svg'
    >>> parse_svg_xml("<svg", "b.svg")
    Traceback (most recent call last):
    ...
    shapegrad.io.svg_safe.SVGError: b.svg: not well-formed XML (unclosed token: line 1, column 0)
"""

import re
import xml.etree.ElementTree as ElementTree

import defusedxml
import defusedxml.ElementTree as SafeElementTree

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "SVGError",
    "SVGWarning",
    "XLINK",
    "SVG_NS",
    "check_path_data",
    "local_name",
    "parse_svg_xml",
]

MAX_ELEMENTS = 100_000  # elements of a document, those that <use> copies included
MAX_DEPTH = 100  # nesting levels
MAX_BYTES = 50_000_000  # the largest file read (50 MB)
SVG_NS = "http://www.w3.org/2000/svg"
XLINK = "{http://www.w3.org/1999/xlink}href"


class SVGError(ValueError):
    """An SVG file that cannot be drawn: not XML, hostile (entities, too many elements, too deep), or broken."""


class SVGWarning(UserWarning):
    """A feature of an SVG file that was skipped or approximated (one warning per feature per file)."""


def local_name(tag):
    """``"{ns}rect"`` -> ``"rect"`` (an element's name without its namespace)."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_svg_xml(text, name):
    """The root element of the SVG document ``text`` (str or bytes), checked; ``name`` names it in errors.

    Raises :class:`SVGError` for: more than :data:`MAX_BYTES`, XML that is not
    well-formed, any entity declaration (``<!ENTITY``: entity expansion and
    external references are off), a root that is not ``<svg>``, more than
    :data:`MAX_ELEMENTS` elements (``<use>`` copies counted), more than
    :data:`MAX_DEPTH` levels, a ``<use>`` cycle.
    """
    if len(text) > MAX_BYTES:
        raise SVGError(f"{name}: larger than the limit of {MAX_BYTES:,} bytes. Received: {len(text):,} bytes")
    try:
        root = SafeElementTree.fromstring(text, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except defusedxml.EntitiesForbidden:
        raise SVGError(f"{name}: declares XML entities, which are refused (no entity is ever expanded: "
                       "billion-laughs and external-entity files are rejected)") from None
    except defusedxml.ExternalReferenceForbidden:
        raise SVGError(f"{name}: refers to an external XML resource, which is never fetched") from None
    except defusedxml.DefusedXmlException as error:
        raise SVGError(f"{name}: refused XML construct ({error})") from None
    except ElementTree.ParseError as error:
        raise SVGError(f"{name}: not well-formed XML ({error})") from None
    if local_name(root.tag) != "svg":
        raise SVGError(f"{name}: not an SVG document (its root element is <{local_name(root.tag)}>, not <svg>)")
    _check_size(root, name)
    return root


def _check_size(root, name):
    """Depth and element count (each ``<use>`` counts what it copies), without recursion."""
    ids = {}
    depth_of = {root: 1}
    stack = [root]
    while stack:
        elem = stack.pop()
        depth = depth_of.pop(elem)
        if depth > MAX_DEPTH:
            raise SVGError(f"{name}: nested deeper than the limit of {MAX_DEPTH} levels")
        if "id" in elem.attrib:
            ids.setdefault(elem.attrib["id"], elem)
        for child in elem:
            depth_of[child] = depth + 1
            stack.append(child)
    sizes = {}  # element -> its element count with <use> copies; None while being counted

    def size(elem):
        # Iterative post-order, so a deep or long chain of <use> cannot exhaust Python's stack.
        todo = [(elem, False)]
        while todo:
            node, done = todo.pop()
            if node in sizes and sizes[node] is not None:
                continue
            target = _use_target(node, ids) if local_name(node.tag) == "use" else None
            deps = list(node) + ([target] if target is not None else [])
            if not done:
                if node in sizes:  # met again while counting itself
                    raise SVGError(f"{name}: <use> references form a cycle (through id {node.get('id')!r})")
                sizes[node] = None
                todo.append((node, True))
                for dep in deps:
                    if dep in sizes and sizes[dep] is None:
                        raise SVGError(f"{name}: <use> references form a cycle (through id {dep.get('id')!r})")
                    todo.append((dep, False))
            else:
                total = 1 + sum(sizes[d] for d in deps)
                if total > MAX_ELEMENTS:
                    raise SVGError(f"{name}: more than the limit of {MAX_ELEMENTS:,} elements "
                                   "(counting what <use> copies)")
                sizes[node] = total
        return sizes[elem]

    size(root)


def _use_target(elem, ids):
    href = elem.get(XLINK, elem.get("href", ""))
    return ids.get(href[1:]) if href.startswith("#") else None


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_FLAG = re.compile(r"[01]")
_SEPARATOR = re.compile(r"[\s,]*")
_ARGUMENTS = {"m": 2, "l": 2, "h": 1, "v": 1, "c": 6, "s": 4, "q": 4, "t": 2, "a": 7, "z": 0}


def check_path_data(d):
    """Raise ``ValueError`` (what and where) unless ``d`` is valid SVG path data.

    It must start with ``M``/``m``; every command gets whole groups of
    arguments (arc flags may be written without separators, ``a1 1 0 01 5 5``).

    Example:
        >>> check_path_data("M0 0 h3 a1 1 0 01 5 5 z")
        >>> check_path_data("M0 0 X 3")
        Traceback (most recent call last):
        ...
        ValueError: unknown path command 'X' at character 5 of 'M0 0 X 3'
    """
    pos, n, first = 0, len(d), True
    pos = _SEPARATOR.match(d, pos).end()
    while pos < n:
        command = d[pos]
        if command.lower() not in _ARGUMENTS:
            raise ValueError(f"unknown path command {command!r} at character {pos} of {_short(d)!r}")
        if first and command not in "Mm":
            raise ValueError(f"path data must start with M or m, not {command!r}: {_short(d)!r}")
        first = False
        pos = _SEPARATOR.match(d, pos + 1).end()
        count = _ARGUMENTS[command.lower()]
        groups = 0
        while count and pos < n and not d[pos].isalpha():  # a letter: the next command (or a bad one)
            for k in range(count):
                pattern = _FLAG if command in "Aa" and k in (3, 4) else _NUMBER
                match = pattern.match(d, pos)
                if not match:
                    what = "an arc flag (0 or 1)" if pattern is _FLAG else "a number"
                    raise ValueError(f"expected {what} for path command {command!r} at character {pos} "
                                     f"of {_short(d)!r}")
                pos = _SEPARATOR.match(d, match.end()).end()
            groups += 1
        if count and not groups:
            raise ValueError(f"path command {command!r} without its {count} number(s) at character {pos} "
                             f"of {_short(d)!r}")


def _short(d, limit=60):
    return d if len(d) <= limit else d[:limit] + "..."
