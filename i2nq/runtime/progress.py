"""Progress bars: one tqdm bar per job (an image, a folder, a video), on stderr.

`progress`: True shows the bar, False hides it, None (the default) shows it when stderr is a terminal, so logs,
pipes and tests get no bar lines. Images and folders count input pixels (a large image moves row of tiles by row
of tiles, a folder by the pixels of all its images, with files done in the bar's description); videos count
decoded frames (the total is counted from the file's packets, so it is right for variable frame rates and for
AVIs whose index repeats frames).
"""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm


def shown(progress: bool | None) -> bool:
    """Whether a bar is drawn: as asked, or (None) when stderr is a terminal."""
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def bar(total: float | None, unit: str, desc: str, progress: bool | None, scale: bool = False) -> tqdm:
    """A bar on stderr; `scale`: show large counts with k/M/G prefixes (pixels)."""
    return tqdm(total=total, unit=unit, desc=desc, disable=not shown(progress), file=sys.stderr,
                dynamic_ncols=True, unit_scale=scale, unit_divisor=1000, mininterval=0.5, smoothing=0.1)


class Pixels:
    """Counts input pixels into a bar as fractions of rows arrive (strips of output rows at the model's scale)."""

    def __init__(self, bar: tqdm, width: int, scale: int) -> None:
        self.bar, self.width, self.scale = bar, width, scale
        self.exact, self.shown = 0.0, 0
        self.lock = threading.Lock()

    def output_rows(self, rows: int) -> None:
        """`rows` more output rows (at the model's scale) are done."""
        with self.lock:
            self.exact += rows * self.width / self.scale
            step = int(self.exact) - self.shown
            if step > 0:
                self.shown += step
                self.bar.update(step)
