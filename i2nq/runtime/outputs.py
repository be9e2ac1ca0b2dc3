"""Where outputs go and what they are called, as users of Real-ESRGAN and its kin expect.

- No output given: `NAME_x4.EXT` beside the input (the suffix says the output scale: `_x2` with an outscale of
  2); a folder goes to `FOLDER_x4/` beside it.
- An output folder (one that exists, or a path ending in a slash): a single file goes into it as `NAME_x4.EXT`,
  a folder's images keep their names (and subfolders, with `recursive`).
- An output file: exactly that name (its suffix sets the format).
- `suffix` replaces `_x4` in generated names (`""` keeps names), `fmt` the extension (`png`, `jpg`, `webp`,
  `tif` for images; `mp4`, `mkv`, `mov`, `webm`, `avi` for videos).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from i2nq.errors import I2NQError, option
from i2nq.runtime.image_io import IMAGE_SUFFIXES, is_image
from i2nq.runtime.video import VIDEO_SUFFIXES, is_video

FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp", "tif": ".tif", "tiff": ".tif",
           "mp4": ".mp4", "mkv": ".mkv", "mov": ".mov", "webm": ".webm", "avi": ".avi"}


def scale_text(scale: float) -> str:
    """4 -> '4', 2.5 -> '2.5' (for names like photo_x2.5.png)."""
    return f"{scale:g}"


def default_suffix(scale: float) -> str:
    return f"_x{scale_text(scale)}"


def format_suffix(fmt: str | None, kind: str) -> str | None:
    """The file suffix for a --format value (None: keep the input's); I2NQError for a format `kind` cannot take."""
    if fmt is None:
        return None
    suffix = FORMATS.get(fmt.lower().lstrip("."))
    allowed = IMAGE_SUFFIXES if kind != "video" else VIDEO_SUFFIXES
    if suffix is None or suffix not in allowed:
        names = sorted({k for k, v in FORMATS.items() if v in allowed})
        raise I2NQError(f"{option('--format', 'format=')} {fmt} is not a{'' if kind == 'video' else 'n'} "
                        f"{'video' if kind == 'video' else 'image'} format: use one of {', '.join(names)}")
    return suffix


def generated_name(src: Path, scale: float, suffix: str | None, fmt: str | None, kind: str) -> str:
    """NAME + suffix (default _x{scale}) + extension (the --format's, else the input's)."""
    ext = format_suffix(fmt, kind) or src.suffix
    return f"{src.stem}{default_suffix(scale) if suffix is None else suffix}{ext}"


def is_folder_target(dst: str | Path) -> bool:
    """Whether an output path names a folder: an existing one, or a path written with a trailing slash."""
    text = os.fspath(dst)
    return Path(text).is_dir() or text.endswith(("/", os.sep))


def single_output(src: Path, dst: str | Path | None, scale: float, suffix: str | None, fmt: str | None,
                  kind: str) -> Path:
    """The output path of one image or video."""
    if dst is None:
        return src.parent / generated_name(src, scale, suffix, fmt, kind)
    if is_folder_target(dst):
        folder = Path(dst)
        if not folder.is_dir():
            raise I2NQError(f"output folder {folder} does not exist")
        return folder / generated_name(src, scale, suffix, fmt, kind)
    dst = Path(dst)
    wanted = format_suffix(fmt, kind)
    if wanted is not None and dst.suffix.lower() not in (wanted, ".jpeg" if wanted == ".jpg" else wanted):
        raise I2NQError(f"{option('--format', 'format=')} {fmt} does not match the output file {dst.name}; "
                        f"drop one of them")
    return dst


def folder_output(src: Path, dst: str | Path | None, scale: float) -> Path:
    """The output folder of a folder job; I2NQError for a path that names a file."""
    if dst is None:
        return src.parent / f"{src.name.rstrip('/')}{default_suffix(scale)}"
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise I2NQError(f"output {dst} is a file; a folder of images needs an output folder")
    if not dst.exists() and (is_image(dst) or is_video(dst)):
        raise I2NQError(f"output {dst} looks like a file name ({dst.suffix}), but the input {src} is a folder; "
                        f"give an output folder (or {option('--suffix', 'suffix=')} and "
                        f"{option('--format', 'format=')} to name the files)")
    return dst


@dataclass
class FolderListing:
    """What a folder holds: images to upscale (with their paths relative to the folder), and what is left out."""

    images: list[Path] = field(default_factory=list)
    subfolders: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)

    def left_out(self, recursive: bool) -> str | None:
        """One line on what is not upscaled, or None."""
        parts = []
        if self.subfolders:
            parts.append(f"{_count(len(self.subfolders), 'subfolder')} ({option('--recursive', 'recursive=True')} "
                         "goes into them)")
        if self.videos:
            parts.append(f"{_count(len(self.videos), 'video')} (upscale a video on its own: "
                         f"{', '.join(p.name for p in self.videos[:3])}{', ...' if len(self.videos) > 3 else ''})")
        if self.others:
            parts.append(f"{_count(len(self.others), 'file')} that {'is' if len(self.others) == 1 else 'are'} "
                         f"not an image ({', '.join(p.name for p in self.others[:3])}"
                         f"{', ...' if len(self.others) > 3 else ''})")
        return "left out " + "; ".join(parts) if parts else None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def list_folder(src: Path, recursive: bool = False, exclude: Path | None = None) -> FolderListing:
    """The images in `src` (sorted; in subfolders too with `recursive`, never following links to folders) and what
    is left out. Hidden names (a leading dot: other runs' temp files among them) are skipped silently, and so is
    `exclude` (an output folder inside the input folder)."""
    listing = FolderListing()
    skip = exclude.resolve() if exclude is not None and exclude.exists() else None
    for root, dirs, names in os.walk(src, followlinks=False):
        base = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (skip is None or (base / d).resolve() != skip))
        if not recursive:
            listing.subfolders += [base / d for d in dirs]
            dirs[:] = []
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = base / name
            if path.is_dir():  # a link to a folder
                if not recursive:
                    listing.subfolders.append(path)
                continue
            if is_image(path):
                listing.images.append(path)
            elif is_video(path):
                listing.videos.append(path)
            else:
                listing.others.append(path)
    listing.images.sort()
    return listing
