"""Lottie documents: wrapping a still image as a Lottie animation, packing a
dotLottie archive, and the structural check every exported Lottie passes.

Lottie is JSON (https://lottiefiles.github.io/lottie-docs/): top-level
`v` (format version), `fr` (frame rate), `ip`/`op` (in and out frame),
`w`/`h`, `layers`, and `assets` that image layers (`ty` 2) name by `refId`.
A dotLottie is a zip holding `manifest.json` and `animations/<id>.json`.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from typing import Any

LOTTIE_VERSION = "5.7.4"
REQUIRED = ("v", "fr", "ip", "op", "w", "h", "layers")
ANIMATION_ID = "animation"
# A fixed zip timestamp keeps a dotLottie byte-identical when re-made.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def image_animation(png: bytes, width: int, height: int, fps: float, frames: int, meta: str = "") -> dict[str, Any]:
    """A Lottie animation showing `png` (embedded as a data URI) for `frames` frames."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    static = lambda k: {"a": 0, "k": k}  # noqa: E731  (a non-animated property)
    doc: dict[str, Any] = {
        "v": LOTTIE_VERSION, "fr": fps, "ip": 0, "op": frames, "w": width, "h": height,
        "nm": "lattice export", "ddd": 0,
        "assets": [{"id": "image_0", "w": width, "h": height, "u": "", "p": uri, "e": 1}],
        "layers": [{
            "ddd": 0, "ind": 1, "ty": 2, "nm": "image", "refId": "image_0", "sr": 1, "ao": 0,
            "ks": {"o": static(100), "r": static(0), "p": static([width / 2, height / 2, 0]),
                   "a": static([width / 2, height / 2, 0]), "s": static([100, 100, 100])},
            "ip": 0, "op": frames, "st": 0, "bm": 0,
        }],
    }
    if meta:
        doc["meta"] = {"g": "lattice", "d": meta}
    return doc


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def dotlottie(animation: bytes, meta: str = "") -> bytes:
    """A dotLottie archive holding one animation."""
    manifest = {
        "version": "1", "generator": "lattice",
        "animations": [{"id": ANIMATION_ID, "direction": 1, "speed": 1, "playMode": "normal", "loop": True, "autoplay": True}],
    }
    if meta:
        manifest["description"] = meta
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in (("manifest.json", dumps(manifest)), (f"animations/{ANIMATION_ID}.json", animation)):
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()


def animation_json(data: bytes) -> bytes:
    """The animation JSON of a Lottie file or of a dotLottie archive (its first animation)."""
    if data[:4] != b"PK\x03\x04":
        return data
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = sorted(n for n in z.namelist() if n.startswith("animations/") and n.endswith(".json"))
        if not names:
            raise ValueError("the dotLottie archive holds no animations/*.json")
        return z.read(names[0])


def check(doc: Any) -> list[str]:
    """Structural problems of a Lottie document; [] when it is sound."""
    if not isinstance(doc, dict):
        return ["the document is not a JSON object"]
    problems = [f"missing top-level key {k!r}" for k in REQUIRED if k not in doc]
    for k in ("fr", "ip", "op", "w", "h"):
        if k in doc and (not isinstance(doc[k], (int, float)) or isinstance(doc[k], bool)):
            problems.append(f"{k!r} is not a number")
    if not problems and (doc["fr"] <= 0 or doc["op"] <= doc["ip"] or doc["w"] <= 0 or doc["h"] <= 0):
        problems.append("fr, w and h must be positive and op must come after ip")
    assets = doc.get("assets", [])
    if not isinstance(assets, list):
        return problems + ["'assets' is not a list"]
    ids = {a.get("id") for a in assets if isinstance(a, dict)}
    layers = doc.get("layers")
    if not isinstance(layers, list):
        return problems + (["'layers' is not a list"] if "layers" in doc else [])
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            problems.append(f"layer {i} is not an object")
        elif "refId" in layer and layer["refId"] not in ids:
            problems.append(f"layer {i} refers to asset {layer['refId']!r}, which assets[] does not hold")
    return problems


def check_file(data: bytes) -> list[str]:
    """`check` for the bytes of a .json Lottie or a dotLottie archive (whose
    manifest must name the animations it holds)."""
    try:
        if data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                manifest = json.loads(z.read("manifest.json"))
                for a in manifest.get("animations", []):
                    if f"animations/{a.get('id')}.json" not in z.namelist():
                        return [f"manifest.json names animation {a.get('id')!r}, which the archive does not hold"]
        doc = json.loads(animation_json(data))
    except (ValueError, KeyError, zipfile.BadZipFile) as e:
        return [f"not a readable Lottie file: {e}"]
    return check(doc)
