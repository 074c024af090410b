"""What kind of media a file is, judged by its extension, and whether its
bytes are already compressed (so the object store keeps them raw)."""

from __future__ import annotations

IMAGE = frozenset("png jpg jpeg webp gif bmp tif tiff exr avif heic ppm tga".split())
VIDEO = frozenset("mp4 mov webm mkv avi m4v mpg mpeg ogv".split())
AUDIO = frozenset("wav mp3 flac ogg opus aac m4a aif aiff".split())
VECTOR = frozenset("svg lottie json dotlottie".split())
# Rig and pose data travel as JSON too; `json` counts as vector (Lottie) by default.
MEDIA = IMAGE | VIDEO | AUDIO | VECTOR

# Formats whose payload is already entropy-coded: zstd gains nothing on them.
COMPRESSED = frozenset(
    "png jpg jpeg webp gif avif heic mp4 mov webm mkv m4v ogv mp3 ogg opus aac m4a flac "
    "zip dotlottie gz bz2 xz zst 7z".split()
)


def extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot + 1 :].lower() if dot > name.rfind("/") else ""


def kind_of_extension(ext: str) -> str:
    ext = ext.lower().lstrip(".")
    if ext in IMAGE:
        return "image"
    if ext in VIDEO:
        return "video"
    if ext in AUDIO:
        return "audio"
    if ext in VECTOR:
        return "vector"
    return "other"


def is_media(name: str) -> bool:
    return extension(name) in MEDIA


def is_compressed(name: str) -> bool:
    return extension(name) in COMPRESSED
